"""The failure suite's checks can fail: each invariant (tests/chaos/invariants.py) on a hand-made snapshot that
breaks it, next to one that keeps all of them. No cluster needed."""

from __future__ import annotations

import copy

import pytest

from .invariants import Snapshot, check
from .scenario import CompileBeforeRoll

GV = "inference.neuron-operator.io/v1alpha1"


def _svc(name: str, uid: str, generation: int = 1, observed: int = 1, stalled: bool = False) -> dict:
    conditions = [{"type": "Stalled", "status": "True" if stalled else "False", "message": "x" if stalled else ""}]
    return {"apiVersion": GV, "kind": "NeuronInferenceService",
            "metadata": {"name": name, "uid": uid, "generation": generation},
            "status": {"observedGeneration": observed, "phase": "Failed" if stalled else "Ready",
                       "conditions": conditions}}


def _ref(name: str, uid: str, controller: bool = True) -> dict:
    return {"apiVersion": GV, "kind": "NeuronInferenceService", "name": name, "uid": uid, "controller": controller}


def _child(kind: str, name: str, *refs: dict) -> dict:
    return {"kind": kind, "metadata": {"name": name, "ownerReferences": list(refs)}}


def _job(name: str, key: str, *refs: dict) -> dict:
    return {"kind": "Job", "metadata": {"name": name, "labels": {"inference.neuron-operator.io/artifact-key": key},
                                        "annotations": {"inference.neuron-operator.io/artifact-location": "pvc://a/" + key},
                                        "ownerReferences": list(refs)}}


def healthy() -> Snapshot:
    a, b = _svc("a", "u-a"), _svc("b", "u-b")
    children = [_child(k, "a", _ref("a", "u-a")) for k in ("Deployment", "Service", "PodDisruptionBudget")]
    children += [_child(k, "b", _ref("b", "u-b")) for k in ("Deployment", "Service", "PodDisruptionBudget")]
    shared = _job("nis-compile-1", "k1", _ref("a", "u-a", False), _ref("b", "u-b", False))
    expected = {u: {("Deployment", n), ("Service", n), ("PodDisruptionBudget", n)} for n, u in (("a", "u-a"), ("b", "u-b"))}
    return Snapshot(services=[a, b], jobs=[shared], children=children, expected=expected)


def test_a_healthy_snapshot_passes():
    assert check(healthy()) == []


def _break(how: str) -> Snapshot:
    s = copy.deepcopy(healthy())
    if how == "duplicate compile Job":
        s.jobs.append(_job("nis-compile-2", "k1", _ref("a", "u-a", False)))
    elif how == "Job owned by a deleted service":
        s.jobs[0]["metadata"]["ownerReferences"].append(_ref("gone", "u-gone", False))
    elif how == "orphan Deployment":
        s.children.append(_child("Deployment", "stray"))
    elif how == "child of a deleted service":
        s.children.append(_child("StatefulSet", "old-g0", _ref("old", "u-old")))
    elif how == "two Deployments for one service":
        s.children.append(_child("Deployment", "a-v2", _ref("a", "u-a")))
    elif how == "missing PDB":
        s.children = [c for c in s.children if not (c["kind"] == "PodDisruptionBudget" and c["metadata"]["name"] == "b")]
    elif how == "stale observedGeneration":
        s.services[0]["metadata"]["generation"] = 2
    elif how == "Stalled service with children":
        s.services[1]["status"]["conditions"][0]["status"] = "True"
        s.expected["u-b"] = None
    elif how == "traceback in the log":
        s.tracebacks = ["Traceback (most recent call last):\n  ...\nKeyError: 'spec'"]
    return s


@pytest.mark.parametrize("how", ["duplicate compile Job", "Job owned by a deleted service", "orphan Deployment",
                                 "child of a deleted service", "two Deployments for one service", "missing PDB",
                                 "stale observedGeneration", "Stalled service with children", "traceback in the log"])
def test_each_broken_invariant_is_reported(how):
    problems = check(_break(how))
    assert len(problems) == 1, problems


class _FakeApi:
    def __init__(self, jobs: list[dict]):
        self.jobs = jobs

    def list(self, api_version, plural, namespace, labelSelector=""):
        key = labelSelector.split("=", 1)[1]
        return [j for j in self.jobs if j["metadata"]["labels"]["inference.neuron-operator.io/artifact-key"] == key], ""


def _deployment(key: str) -> dict:
    return {"metadata": {"name": "a"},
            "spec": {"template": {"metadata": {"labels": {"inference.neuron-operator.io/artifact-key": key}}}}}


def test_a_roll_before_the_compile_succeeded_is_a_violation():
    done = _job("j1", "k1")
    done["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
    running = _job("j2", "k2")
    watch = CompileBeforeRoll(_FakeApi([done, running]), "ns")
    watch("ADDED", _deployment("k1"), 0.0)
    assert watch.violations == []
    watch("MODIFIED", _deployment("k2"), 1.0)
    assert len(watch.violations) == 1 and "k1 -> artifact k2" in watch.violations[0]
