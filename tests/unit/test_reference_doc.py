"""docs/reference.md is generated from the models; it must not drift from them."""

import pathlib

from neuron_operator.api.reference import REGENERATE_COMMAND, reference_markdown

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_reference_doc_matches_the_models():
    committed = (ROOT / "docs" / "reference.md").read_text()
    assert committed == reference_markdown(), f"docs/reference.md drifted: run `{REGENERATE_COMMAND}` (or make crds)"


def test_reference_lists_every_spec_field_and_rule():
    text = reference_markdown()
    for field in ("spec.engine.maxNumSeqs", "spec.nodesPerReplica", "spec.placement.topologyKey",
                  "spec.runtime.startupTimeoutSeconds", "status.conditions[].reason"):
        assert f"`{field}`" in text
    assert "set exactly one of artifacts.pvc or artifacts.s3" in text
