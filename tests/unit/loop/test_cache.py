"""The watch cache: copies in and out, label indexes, newer-wins against late events, LIST replacement."""

from __future__ import annotations

import pytest

from neuron_operator import constants as C
from neuron_operator.cache import DEPLOYMENT, POD, ObjectCache


def obj(name: str, rv: str = "5", **labels) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "ml", "resourceVersion": rv,
                                                            "labels": labels, "managedFields": [{"manager": "x"}]}}


def test_reads_are_copies_and_managed_fields_are_dropped():
    cache = ObjectCache()
    original = obj("a")
    cache.upsert(POD, original)
    original["metadata"]["name"] = "changed"
    got = cache.get(POD, "ml", "a")
    got["metadata"]["labels"]["x"] = "y"
    again = cache.get(POD, "ml", "a")
    assert "managedFields" not in again["metadata"] and again["metadata"]["labels"] == {}


def test_a_late_older_event_does_not_replace_our_newer_write():
    cache = ObjectCache()
    cache.upsert(POD, obj("a", rv="10", v="new"))
    cache.upsert(POD, obj("a", rv="9", v="old"))
    assert cache.get(POD, "ml", "a")["metadata"]["labels"]["v"] == "new"


def test_label_index_follows_relabelling_and_removal():
    cache = ObjectCache()
    cache.upsert(POD, obj("a", **{C.LABEL_SERVICE: "s1"}))
    cache.upsert(POD, obj("a", rv="6", **{C.LABEL_SERVICE: "s2"}))
    assert cache.with_label(POD, "ml", C.LABEL_SERVICE, "s1") == []
    assert [p["metadata"]["name"] for p in cache.with_label(POD, "ml", C.LABEL_SERVICE, "s2")] == ["a"]
    cache.remove(POD, "ml", "a")
    assert cache.with_label(POD, "ml", C.LABEL_SERVICE, "s2") == []
    with pytest.raises(ValueError):
        cache.with_label(POD, "ml", "unindexed", "x")


def test_replace_all_drops_what_the_list_no_longer_has_in_its_namespaces():
    cache = ObjectCache()
    cache.upsert(DEPLOYMENT, obj("gone"))
    cache.upsert(DEPLOYMENT, {**obj("elsewhere"), "metadata": {**obj("elsewhere")["metadata"], "namespace": "other"}})
    cache.replace_all(DEPLOYMENT, [obj("kept")], namespaces={"ml"})
    assert cache.keys(DEPLOYMENT) == [("ml", "kept"), ("other", "elsewhere")]


def test_mark_deleting_hides_an_object_we_deleted_until_its_event_arrives():
    cache = ObjectCache()
    cache.upsert(POD, obj("a"))
    cache.mark_deleting(POD, "ml", "a", "2026-12-01T00:00:00Z")
    assert cache.get(POD, "ml", "a")["metadata"]["deletionTimestamp"]
