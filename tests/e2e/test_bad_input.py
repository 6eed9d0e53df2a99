"""Bad input on the real API server: rejected at `kubectl apply` with a message naming the field (schema and CEL),
or reported as Stalled with what to change. Never a crash, never a child object."""

from __future__ import annotations

import pytest

from . import nis
from .kube import kubectl_json, wait_until

pytestmark = pytest.mark.usefixtures("operator")

# (case id, spec overrides, text the API server's rejection must contain)
REJECTED_AT_ADMISSION = [
    ("tp-not-supported-by-family", {"tensorParallelSize": 4}, "spec.tensorParallelSize"),
    ("tp-exceeds-instance", {"instanceType": "inf2.xlarge", "tensorParallelSize": 8}, "spec.tensorParallelSize"),
    ("nodes-per-replica-zero", {"nodesPerReplica": 0}, "spec.nodesPerReplica"),
    ("multi-node-without-efa", {"instanceType": "inf2.48xlarge", "tensorParallelSize": 48, "nodesPerReplica": 2},
     "spec.nodesPerReplica"),
    ("negative-replicas", {"replicas": -1}, "spec.replicas"),
    ("zero-max-model-len", {"engine": {"maxModelLen": 0}}, "spec.engine.maxModelLen"),
    ("dtype-auto", {"engine": {"dtype": "auto"}}, "spec.engine.dtype"),
    ("unknown-instance-type", {"instanceType": "p4d.24xlarge"}, "spec.instanceType"),
    ("bad-model-scheme", {"model": {"uri": "http://example.com/llama"}}, "spec.model.uri"),
    ("two-artifact-stores", {"artifacts": {"pvc": {"claimName": "artifacts"}, "s3": {"uri": "s3://b/p"}}},
     "spec.artifacts"),
    ("neuron-devices-by-hand", {"runtime": {"resources": {"limits": {"aws.amazon.com/neuron": "4"}}}},
     "spec.runtime.resources.limits"),
    ("owned-vllm-flag", {"engine": {"extraArgs": ["--tensor-parallel-size=8"]}}, "spec.engine.extraArgs"),
    ("lora-with-speculation", {"loraAdapters": [{"name": "sql", "uri": "hf://org/sql-lora"}],
                               "speculativeDecoding": {"draftModel": {"uri": "hf://meta-llama/Llama-3.2-1B"}},
                               "engine": {"maxNumSeqs": 1}},
     "spec.speculativeDecoding"),
    ("lora-across-nodes", {"tensorParallelSize": 64, "nodesPerReplica": 2,
                           "loraAdapters": [{"name": "sql", "uri": "hf://org/sql-lora"}]},
     "spec.loraAdapters: LoRA adapters with nodesPerReplica > 1"),
    ("speculation-with-batching", {"speculativeDecoding": {"draftModel": {"uri": "hf://meta-llama/Llama-3.2-1B"}}},
     "spec.engine.maxNumSeqs: speculative decoding with engine.maxNumSeqs > 1"),
    ("lnc2-on-trn1", {"logicalNeuronCoreConfig": 2}, "spec.logicalNeuronCoreConfig"),
    ("unknown-field", {"enginee": {"maxNumSeqs": 4}}, "enginee"),
]

# (case id, spec overrides, Stalled reason, text the message must contain)
STALLED_BY_OPERATOR = [
    ("override-of-derived-key", {"engine": {"overrideNeuronConfig": {"tp_degree": 8}}}, "InvalidOverride",
     "spec.tensorParallelSize"),
    ("bucket-beyond-max-model-len", {"engine": {"maxModelLen": 2048, "overrideNeuronConfig": {
        "context_encoding_buckets": [512, 4096]}}}, "InvalidOverride", "context_encoding_buckets"),
    ("no-artifact-store", {"artifacts": None}, "NoArtifactStore", "spec.artifacts"),
]


@pytest.mark.parametrize("case,overrides,expected", REJECTED_AT_ADMISSION, ids=[c[0] for c in REJECTED_AT_ADMISSION])
def test_rejected_at_apply_with_the_field_named(namespace, case, overrides, expected):
    proc = nis.apply(namespace, nis.service("bad", **overrides), check=False)
    assert proc.returncode != 0, f"{case}: apply unexpectedly succeeded"
    assert expected in proc.stderr, proc.stderr
    assert kubectl_json("get", "nis", "-n", namespace)["items"] == []


@pytest.mark.parametrize("case,overrides,reason,expected", STALLED_BY_OPERATOR, ids=[c[0] for c in STALLED_BY_OPERATOR])
def test_stalled_with_what_to_change_and_no_children(operator, namespace, artifact_store, case, overrides, reason,
                                                     expected):
    obj = nis.service("bad", **overrides)
    obj["spec"] = {k: v for k, v in obj["spec"].items() if v is not None}
    nis.apply(namespace, obj)
    stalled = nis.wait_condition(namespace, "bad", "Stalled", "True", reason=reason, timeout=60)
    assert expected in nis.cond(stalled, "Stalled")["message"]
    assert stalled["status"]["phase"] == "Failed"
    assert nis.cond(stalled, "Ready")["status"] == "False"
    children = kubectl_json("get", "jobs,deployments,services,pdb", "-n", namespace)["items"]
    assert children == []
    assert operator["process"].poll() is None  # still running


def test_fixing_a_stalled_spec_recovers(namespace, artifact_store):
    nis.apply(namespace, nis.service("fixme", engine={"overrideNeuronConfig": {"batch_size": 4}}))
    nis.wait_condition(namespace, "fixme", "Stalled", "True", reason="InvalidOverride", timeout=60)
    nis.apply(namespace, nis.service("fixme", engine={"maxNumSeqs": 4}))
    obj = nis.wait_ready(namespace, "fixme")
    assert nis.cond(obj, "Stalled")["status"] == "False"


def test_invalid_update_leaves_the_running_revision_alone(namespace, artifact_store):
    nis.apply(namespace, nis.service("steady"))
    key = nis.wait_ready(namespace, "steady")["status"]["artifact"]["key"]
    dep_before = nis.deployment(namespace, "steady")
    nis.apply(namespace, nis.service("steady", engine={"overrideNeuronConfig": {"seq_len": 1}}))
    stalled = nis.wait_condition(namespace, "steady", "Stalled", "True", timeout=60)
    assert stalled["status"]["phase"] == "Degraded" or nis.cond(stalled, "Ready")["status"] == "True"
    dep_after = nis.deployment(namespace, "steady")
    assert dep_after["metadata"]["generation"] == dep_before["metadata"]["generation"]
    assert dep_after["metadata"]["labels"]["inference.neuron-operator.io/artifact-key"] == key
    wait_until(lambda: len(nis.compile_jobs(namespace)) == 1, timeout=5, message="no new compile Job")
