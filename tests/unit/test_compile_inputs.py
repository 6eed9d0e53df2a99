"""compile_spec_for: exactly the compile inputs go into the compile key, nothing else."""

from __future__ import annotations

import copy

import pytest
from neuron_operator.api import parse_spec
from neuron_operator.catalog import load_catalog
from neuron_operator.compile_inputs import compile_spec_for
from neuron_runtime.compile_spec import (
    CompileSpec,
    LoraAdapter,
    compile_key,
)

CATALOG = load_catalog()
STACK = "neuron-2.23-vllm-0.7.2"

BASE = {
    "model": {"uri": "hf://meta-llama/Llama-3.1-8B-Instruct", "revision": "main"},
    "instanceType": "trn1.32xlarge",
    "tensorParallelSize": 32,
    "replicas": 2,
    "engine": {
        "maxNumSeqs": 8,
        "maxModelLen": 4096,
        "dtype": "bfloat16",
        "overrideNeuronConfig": {"context_encoding_buckets": [1024, 4096], "fused_qkv": True},
        "maxLoraRank": 16,
    },
    "artifacts": {"pvc": {"claimName": "neuron-artifacts"}},
    "loraAdapters": [{"name": "sql", "uri": "hf://org/sql-lora"}, {"name": "chat", "uri": "hf://org/chat-lora"}],
}

SPECULATIVE = {"method": "draft", "draftModel": {"uri": "hf://meta-llama/Llama-3.2-1B"}, "numSpeculativeTokens": 5}


def with_changes(raw: dict, changes: dict) -> dict:
    """Deep-merge ``changes`` into a copy of ``raw``; a value of None deletes the key."""
    out = copy.deepcopy(raw)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = with_changes(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def key_of(raw: dict, stack: str = STACK) -> str:
    return compile_key(compile_spec_for(parse_spec(raw), CATALOG, stack))


def test_maps_every_compile_input():
    cs = compile_spec_for(parse_spec(BASE), CATALOG, STACK)
    assert cs == CompileSpec(
        model_uri="hf://meta-llama/Llama-3.1-8B-Instruct",
        model_revision="main",
        instance_family="trn1",
        lnc=1,
        tp_degree=32,
        world_size=1,
        max_num_seqs=8,
        max_model_len=4096,
        dtype="bfloat16",
        stack=STACK,
        override_neuron_config={"context_encoding_buckets": [1024, 4096], "fused_qkv": True},
        lora_adapters=(LoraAdapter("chat", "hf://org/chat-lora"), LoraAdapter("sql", "hf://org/sql-lora")),
        max_lora_rank=16,
        speculative=None,
    )


def test_maps_speculation_multi_node_and_lnc():
    raw = with_changes(
        BASE,
        {
            "instanceType": "trn2.48xlarge",
            "tensorParallelSize": 128,
            "nodesPerReplica": 2,
            "loraAdapters": None,
            "speculativeDecoding": {**SPECULATIVE, "method": "eagle", "maxModelLen": 2048},
        },
    )
    cs = compile_spec_for(parse_spec(raw), CATALOG, STACK)
    assert (cs.instance_family, cs.lnc, cs.tp_degree, cs.world_size, cs.local_tp) == ("trn2", 2, 128, 2, 64)
    assert cs.lora_adapters == () and cs.max_lora_rank is None
    assert (cs.speculative.model_uri, cs.speculative.method) == ("hf://meta-llama/Llama-3.2-1B@main", "eagle")
    assert (cs.speculative.num_speculative_tokens, cs.speculative.max_model_len) == (5, 2048)


def test_compile_spec_survives_the_json_trip_to_the_runtime():
    raw = with_changes(BASE, {"loraAdapters": None, "speculativeDecoding": SPECULATIVE})
    for r in (BASE, raw):
        cs = compile_spec_for(parse_spec(r), CATALOG, STACK)
        again = CompileSpec.from_json(cs.to_json())
        assert again == cs
        assert compile_key(again) == compile_key(cs)


@pytest.mark.parametrize(
    "changes",
    [
        {"replicas": 7},
        {"replicas": 0},
        {"runtime": {"resources": {"requests": {"cpu": "32", "memory": "256Gi"}}}},
        {"runtime": {"podLabels": {"team": "search"}, "podAnnotations": {"a": "b"}}},
        {
            "runtime": {
                "image": "example.com/other:2",
                "imagePullPolicy": "Always",
                "env": [{"name": "X", "value": "1"}],
            }
        },
        {"runtime": {"nodeSelector": {"pool": "b"}, "tolerations": [{"operator": "Exists"}], "schedulerName": "s"}},
        {"runtime": {"startupTimeoutSeconds": 7200, "allowSurge": True, "serviceAccountName": "llm"}},
        {"engine": {"extraArgs": ["--max-log-len", "100", "--disable-log-requests"]}},
        {
            "engine": {
                "overrideNeuronConfig": {
                    "context_encoding_buckets": [1024, 4096],
                    "fused_qkv": True,
                    "skip_warmup": True,
                }
            }
        },
        {"artifacts": {"s3": {"uri": "s3://bucket/prefix"}, "pvc": None}},
        {"model": {"tokenSecretRef": {"name": "hf-token"}}},
        {"placement": {"topologyKey": "eks.amazonaws.com/nodegroup"}},
        {"instanceType": "trn1n.32xlarge"},  # same family and LNC: the same compiled model
        {"loraAdapters": [{"name": "chat", "uri": "hf://org/chat-lora"}, {"name": "sql", "uri": "hf://org/sql-lora"}]},
    ],
    ids=lambda c: ",".join(c),
)
def test_non_compile_inputs_keep_the_key(changes):
    assert key_of(with_changes(BASE, changes)) == key_of(BASE)


@pytest.mark.parametrize(
    "changes",
    [
        {"tensorParallelSize": 16},
        {"tensorParallelSize": 64, "nodesPerReplica": 2},
        {"engine": {"maxNumSeqs": 16}},
        {"engine": {"maxModelLen": 8192}},
        {"engine": {"dtype": "float16"}},
        {"engine": {"maxLoraRank": 32}},
        {"engine": {"overrideNeuronConfig": {"context_encoding_buckets": [2048, 4096], "fused_qkv": True}}},
        {"engine": {"overrideNeuronConfig": {"context_encoding_buckets": [1024, 4096], "fused_qkv": False}}},
        {
            "engine": {
                "overrideNeuronConfig": {
                    "context_encoding_buckets": [1024, 4096],
                    "fused_qkv": True,
                    "qkv_kernel_enabled": True,
                }
            }
        },
        {"model": {"revision": "0e9e39f249a16976918f6564b8830bc894c89659"}},
        {"model": {"uri": "hf://meta-llama/Llama-3.1-70B-Instruct"}},
        {"loraAdapters": [{"name": "sql", "uri": "hf://org/sql-lora"}]},
        {
            "loraAdapters": [
                {"name": "sql", "uri": "hf://org/sql-lora-v2"},
                {"name": "chat", "uri": "hf://org/chat-lora"},
            ]
        },
        {"loraAdapters": [{"name": "sql2", "uri": "hf://org/sql-lora"}, {"name": "chat", "uri": "hf://org/chat-lora"}]},
        {"loraAdapters": None, "speculativeDecoding": SPECULATIVE},
        {"instanceType": "trn2.48xlarge"},  # another family (and LNC)
        {"instanceType": "inf2.48xlarge", "tensorParallelSize": 8},
    ],
    ids=lambda c: ",".join(c),
)
def test_compile_inputs_change_the_key(changes):
    assert key_of(with_changes(BASE, changes)) != key_of(BASE)


def test_instance_family_alone_changes_the_key():
    inf2 = with_changes(BASE, {"instanceType": "inf2.48xlarge", "tensorParallelSize": 8})
    trn1 = with_changes(BASE, {"instanceType": "trn1.32xlarge", "tensorParallelSize": 8})
    trn2 = with_changes(BASE, {"instanceType": "trn2.48xlarge", "tensorParallelSize": 8})
    assert len({key_of(inf2), key_of(trn1), key_of(trn2)}) == 3
    # Different sizes of one family share compiled artifacts.
    assert key_of(inf2) == key_of(with_changes(inf2, {"instanceType": "inf2.24xlarge"}))


def test_stack_changes_the_key():
    assert key_of(BASE, "neuron-2.24-vllm-0.7.2") != key_of(BASE)


@pytest.mark.parametrize(
    "changes",
    [
        {"numSpeculativeTokens": 7},
        {"method": "eagle"},
        {"draftModel": {"uri": "hf://meta-llama/Llama-3.2-3B"}},
        {"maxModelLen": 2048},
    ],
    ids=lambda c: ",".join(c),
)
def test_speculative_inputs_change_the_key(changes):
    raw = with_changes(BASE, {"loraAdapters": None, "speculativeDecoding": SPECULATIVE})
    changed = with_changes(raw, {"speculativeDecoding": changes})
    assert key_of(changed) != key_of(raw)


def test_speculative_draft_revision_changes_the_key_and_reaches_the_runtime():
    raw = with_changes(BASE, {"loraAdapters": None, "speculativeDecoding": SPECULATIVE})
    changed = with_changes(raw, {"speculativeDecoding": {"draftModel": {"revision": "v2"}}})
    assert key_of(changed) != key_of(raw)
    # The runtime's model_source reads hf://org/name@revision; s3:// and pvc:// have no revisions.
    assert (
        compile_spec_for(parse_spec(changed), CATALOG, STACK).speculative.model_uri == "hf://meta-llama/Llama-3.2-1B@v2"
    )
    on_pvc = with_changes(raw, {"speculativeDecoding": {"draftModel": {"uri": "pvc://models/draft"}}})
    assert compile_spec_for(parse_spec(on_pvc), CATALOG, STACK).speculative.model_uri == "pvc://models/draft"


def test_skip_warmup_does_not_change_the_key():
    without = with_changes(BASE, {"engine": {"overrideNeuronConfig": {"fused_qkv": True}}})
    for value in (True, False):
        with_skip = with_changes(
            without, {"engine": {"overrideNeuronConfig": {"fused_qkv": True, "skip_warmup": value}}}
        )
        assert key_of(with_skip) == key_of(without)


def test_lora_adapter_order_does_not_change_the_key_or_the_spec():
    reordered = with_changes(BASE, {"loraAdapters": list(reversed(BASE["loraAdapters"]))})
    assert key_of(reordered) == key_of(BASE)
    assert compile_spec_for(parse_spec(reordered), CATALOG, STACK) == compile_spec_for(parse_spec(BASE), CATALOG, STACK)


def test_max_lora_rank_without_adapters_is_not_an_input():
    no_lora = with_changes(BASE, {"loraAdapters": None})
    assert key_of(with_changes(no_lora, {"engine": {"maxLoraRank": 64}})) == key_of(no_lora)
    assert compile_spec_for(parse_spec(no_lora), CATALOG, STACK).max_lora_rank is None


def test_identical_inputs_across_services_share_a_key():
    other = with_changes(BASE, {"replicas": 1, "runtime": {"podLabels": {"app": "other"}}})
    assert key_of(other) == key_of(BASE)
