"""validation.validate: each check rejects a bad spec with a message naming the field and what is allowed."""

from __future__ import annotations

import dataclasses

import pytest
from neuron_operator.api import Reason, parse_spec
from neuron_operator.api.spec import (
    OPERATOR_OWNED_ARGS,
    OPERATOR_OWNED_OVERRIDE_KEYS,
    OPERATOR_OWNED_RESOURCES,
)
from neuron_operator.catalog import Catalog, load_catalog
from neuron_operator.config import OperatorConfig
from neuron_operator.validation import Problem, validate

CATALOG = load_catalog()
DEFAULT_STORE = OperatorConfig(default_artifact_store="pvc://neuron-artifacts")


def spec(**extra):
    raw = {
        "model": {"uri": "hf://meta-llama/Llama-3.1-8B-Instruct"},
        "instanceType": "trn1.32xlarge",
        "tensorParallelSize": 32,
    }
    raw.update(extra)
    return parse_spec(raw)


def problems_of(s, catalog: Catalog = CATALOG, defaults=DEFAULT_STORE) -> list[Problem]:
    return validate(s, catalog, defaults)


def only_problem(s, **kwargs) -> Problem:
    problems = problems_of(s, **kwargs)
    assert len(problems) == 1, problems
    return problems[0]


@pytest.mark.parametrize(
    "s",
    [
        spec(),
        spec(instanceType="inf2.xlarge", tensorParallelSize=2),
        spec(instanceType="inf2.48xlarge", tensorParallelSize=24),
        spec(instanceType="trn2.48xlarge", tensorParallelSize=64),
        spec(instanceType="trn1n.32xlarge", tensorParallelSize=64, nodesPerReplica=2),
        spec(
            engine={
                "maxModelLen": 8192,
                "overrideNeuronConfig": {"context_encoding_buckets": [1024, 4096, 8192], "skip_warmup": True},
            }
        ),
        spec(loraAdapters=[{"name": "sql", "uri": "pvc://adapters/sql"}], engine={"maxLoraRank": 32}),
        spec(speculativeDecoding={"draftModel": {"uri": "hf://meta-llama/Llama-3.2-1B"}, "maxModelLen": 4096},
             engine={"maxNumSeqs": 1}),
        spec(model={"uri": "pvc://models/llama/3.1"}, artifacts={"s3": {"uri": "s3://bucket/neuron"}}),
        spec(engine={"extraArgs": ["--max-log-len", "100", "--disable-log-requests"]}),
        spec(runtime={"resources": {"requests": {"cpu": "16", "memory": "128Gi"}}}),
    ],
)
def test_valid_specs_have_no_problems(s):
    assert problems_of(s) == []


def test_validate_is_pure():
    s = spec(engine={"overrideNeuronConfig": {"tp_degree": 4}})
    before = s.model_dump()
    first = problems_of(s)
    assert problems_of(s) == first
    assert s.model_dump() == before


# --- tensor parallelism --------------------------------------------------------------------------------


def test_tp_not_multiple_of_nodes():
    p = only_problem(spec(tensorParallelSize=33, nodesPerReplica=2))
    assert (p.field, p.reason) == ("spec.tensorParallelSize", Reason.INVALID_TENSOR_PARALLEL_SIZE)
    assert p.message.startswith("spec.tensorParallelSize: 33 is not a multiple of spec.nodesPerReplica (2)")


def test_tp_not_a_family_degree():
    p = only_problem(spec(tensorParallelSize=4))
    assert (p.field, p.reason) == ("spec.tensorParallelSize", Reason.INVALID_TENSOR_PARALLEL_SIZE)
    assert "per-node tensor-parallel degree 4" in p.message
    assert "trn1.32xlarge (32 NeuronCores at LNC=1" in p.message
    assert "allowed per-node values: 1, 2, 8, 16, 32" in p.message


def test_tp_exceeds_the_nodes_logical_cores():
    p = only_problem(spec(instanceType="inf2.xlarge", tensorParallelSize=8))
    assert p.field == "spec.tensorParallelSize"
    assert "inf2.xlarge (2 NeuronCores at LNC=1" in p.message
    assert "allowed per-node values: 1, 2" in p.message


def test_tp_on_trn2_counts_logical_cores_at_lnc2():
    p = only_problem(spec(instanceType="trn2.48xlarge", tensorParallelSize=128))
    assert "trn2.48xlarge (64 NeuronCores at LNC=2" in p.message
    assert "allowed per-node values: 1, 2, 4, 8, 16, 32, 64" in p.message


def test_tp_128_on_trn2_points_at_lnc1_and_fits_there():
    p = only_problem(spec(instanceType="trn2.48xlarge", tensorParallelSize=128))
    assert "at spec.logicalNeuronCoreConfig: 1 it fits" in p.message
    assert problems_of(spec(instanceType="trn2.48xlarge", tensorParallelSize=128, logicalNeuronCoreConfig=1)) == []


def test_lnc1_on_trn2_counts_128_cores():
    p = only_problem(spec(instanceType="trn2.48xlarge", tensorParallelSize=256, logicalNeuronCoreConfig=1))
    assert "trn2.48xlarge (128 NeuronCores at LNC=1" in p.message


def test_lnc2_only_where_configurable():
    p = only_problem(spec(logicalNeuronCoreConfig=2))  # trn1.32xlarge
    assert p.field == "spec.logicalNeuronCoreConfig" and "trn1.32xlarge supports LNC 1" in p.message
    assert problems_of(spec(logicalNeuronCoreConfig=1)) == []  # trn1's only LNC, said explicitly


def test_multi_node_message_gives_per_node_and_total_values():
    p = only_problem(spec(tensorParallelSize=8, nodesPerReplica=2))
    assert "per-node tensor-parallel degree 4 (tensorParallelSize 8 / nodesPerReplica 2)" in p.message
    assert "(tensorParallelSize 2, 4, 16, 32, 64 with nodesPerReplica 2)" in p.message


def test_device_count_must_be_allowed():
    # A node whose pods may only take 1 or 4 of 16 devices cannot hold 16 ranks (8 devices).
    odd = dataclasses.replace(CATALOG.get("trn1.32xlarge"), allowed_device_counts=(1, 4))
    catalog = dataclasses.replace(CATALOG, instance_types={**CATALOG.instance_types, "trn1.32xlarge": odd})
    p = only_problem(spec(tensorParallelSize=16), catalog=catalog)
    assert (p.field, p.reason) == ("spec.tensorParallelSize", Reason.INVALID_DEVICE_COUNT)
    assert "may request only 1, 4 of its 16 Neuron devices" in p.message


def test_multi_node_needs_efa():
    p = only_problem(spec(instanceType="inf2.48xlarge", tensorParallelSize=48, nodesPerReplica=2))
    assert (p.field, p.reason) == ("spec.nodesPerReplica", Reason.INVALID_NODES_PER_REPLICA)
    assert p.message.startswith("spec.nodesPerReplica: 2 needs EFA between nodes, but inf2.48xlarge has none")
    assert "trn1.32xlarge, trn1n.32xlarge, trn2.48xlarge" in p.message


# --- engine and overrides ------------------------------------------------------------------------------


def test_max_model_len_at_least_128():
    p = only_problem(spec(engine={"maxModelLen": 64}))
    assert (p.field, p.reason) == ("spec.engine.maxModelLen", Reason.INVALID_MAX_MODEL_LEN)
    assert "use at least 128" in p.message
    assert problems_of(spec(engine={"maxModelLen": 128})) == []


@pytest.mark.parametrize("key", sorted(OPERATOR_OWNED_OVERRIDE_KEYS))
def test_override_keys_the_operator_derives(key):
    p = only_problem(spec(engine={"overrideNeuronConfig": {key: 1, "fused_qkv": True}}))
    assert (p.field, p.reason) == (f"spec.engine.overrideNeuronConfig.{key}", Reason.INVALID_OVERRIDE)
    assert p.message == (
        f"spec.engine.overrideNeuronConfig.{key}: derived by the operator; set {OPERATOR_OWNED_OVERRIDE_KEYS[key]} instead"
    )


def test_documented_owned_override_keys_are_covered():
    required = {
        "tp_degree",
        "batch_size",
        "seq_len",
        "max_context_length",
        "torch_dtype",
        "logical_nc_config",
        "world_size",
    }
    assert required <= OPERATOR_OWNED_OVERRIDE_KEYS.keys()
    assert OPERATOR_OWNED_OVERRIDE_KEYS["tp_degree"] == "spec.tensorParallelSize"
    assert OPERATOR_OWNED_OVERRIDE_KEYS["batch_size"] == "spec.engine.maxNumSeqs"
    assert OPERATOR_OWNED_OVERRIDE_KEYS["torch_dtype"] == "spec.engine.dtype"


@pytest.mark.parametrize("key", ["context_encoding_buckets", "token_generation_buckets"])
def test_buckets_must_fit_max_model_len(key):
    p = only_problem(spec(engine={"maxModelLen": 2048, "overrideNeuronConfig": {key: [512, 2048, 4096]}}))
    assert (p.field, p.reason) == (f"spec.engine.overrideNeuronConfig.{key}", Reason.INVALID_OVERRIDE)
    assert "buckets 4096 exceed spec.engine.maxModelLen (2048)" in p.message


@pytest.mark.parametrize("key", ["context_encoding_buckets", "token_generation_buckets"])
def test_buckets_must_be_sorted(key):
    p = only_problem(spec(engine={"overrideNeuronConfig": {key: [1024, 512, 512]}}))
    assert p.field == f"spec.engine.overrideNeuronConfig.{key}"
    assert "strictly increasing, e.g. [512, 1024]" in p.message


@pytest.mark.parametrize("value", ["512,1024", [], [512, "1024"], [0, 512], [True], {"a": 1}])
def test_buckets_must_be_positive_integer_lists(value):
    p = only_problem(spec(engine={"overrideNeuronConfig": {"token_generation_buckets": value}}))
    assert p.field == "spec.engine.overrideNeuronConfig.token_generation_buckets"
    assert "non-empty list of positive integers" in p.message


# --- speculative decoding ------------------------------------------------------------------------------


def test_speculative_max_model_len_within_engine():
    p = only_problem(
        spec(engine={"maxModelLen": 2048, "maxNumSeqs": 1}, speculativeDecoding={"draftModel": {"uri": "hf://a/d"}, "maxModelLen": 4096})
    )
    assert (p.field, p.reason) == ("spec.speculativeDecoding.maxModelLen", Reason.INVALID_SPECULATIVE_DECODING)
    assert "4096 exceeds spec.engine.maxModelLen (2048); use at most 2048" in p.message


def test_speculative_with_lora_is_rejected():
    p = only_problem(
        spec(loraAdapters=[{"name": "a", "uri": "hf://a/l"}], speculativeDecoding={"draftModel": {"uri": "hf://a/d"}},
             engine={"maxNumSeqs": 1})
    )
    assert (p.field, p.reason) == ("spec.speculativeDecoding", Reason.INVALID_SPECULATIVE_DECODING)
    assert "spec.loraAdapters" in p.message


# --- URIs, args, resources, artifacts ------------------------------------------------------------------


@pytest.mark.parametrize("uri", ["pvc://claim", "pvc://claim/", "pvc:///models/llama", "pvc://claim/../x"])
def test_model_pvc_uri_needs_claim_and_path(uri):
    p = only_problem(spec(model={"uri": uri}))
    assert (p.field, p.reason) == ("spec.model.uri", Reason.INVALID_MODEL_URI)
    assert uri in p.message


@pytest.mark.parametrize("uri", ["hf://org/name/extra", "hf:///name", "hf://org/", "hf://org/../name"])
def test_model_hf_uri_is_a_repository_id(uri):
    p = only_problem(spec(model={"uri": uri}))
    assert (p.field, p.reason) == ("spec.model.uri", Reason.INVALID_MODEL_URI)
    assert uri in p.message


def test_revision_belongs_in_the_revision_field():
    p = only_problem(spec(model={"uri": "hf://org/name@v1"}))
    assert (p.field, p.reason) == ("spec.model.uri", Reason.INVALID_MODEL_URI)
    assert "set spec.model.revision: v1 instead" in p.message
    p = only_problem(spec(speculativeDecoding={"draftModel": {"uri": "hf://org/draft@v2"}}, engine={"maxNumSeqs": 1}))
    assert "set spec.speculativeDecoding.draftModel.revision: v2 instead" in p.message
    # Adapters have no revision field, so @revision is how they pin one.
    assert problems_of(spec(loraAdapters=[{"name": "a", "uri": "hf://org/adapter@abc123"}])) == []


def test_pvc_uri_checked_for_drafts_and_adapters():
    fields = [
        p.field
        for p in problems_of(spec(loraAdapters=[{"name": "a", "uri": "hf://x/y"}, {"name": "b", "uri": "pvc://c"}]))
    ]
    assert fields == ["spec.loraAdapters[1].uri"]
    fields = [p.field for p in problems_of(spec(speculativeDecoding={"draftModel": {"uri": "pvc://c"}}, engine={"maxNumSeqs": 1}))]
    assert fields == ["spec.speculativeDecoding.draftModel.uri"]
    assert "pvc://<claim>/<path>" in problems_of(spec(model={"uri": "pvc://c"}))[0].message


@pytest.mark.parametrize("flag", sorted(OPERATOR_OWNED_ARGS))
def test_extra_args_owned_by_the_operator(flag):
    p = only_problem(spec(engine={"extraArgs": ["--disable-log-requests", f"{flag}=x"]}))
    assert (p.field, p.reason) == ("spec.engine.extraArgs[1]", Reason.INVALID_EXTRA_ARGS)
    assert (
        p.message == f"spec.engine.extraArgs[1]: {flag} is set by the operator; use {OPERATOR_OWNED_ARGS[flag]} instead"
    )


def test_documented_owned_flags_are_covered():
    required = {
        "--tensor-parallel-size",
        "--max-num-seqs",
        "--max-model-len",
        "--dtype",
        "--port",
        "--model",
        "--override-neuron-config",
    }
    assert required <= OPERATOR_OWNED_ARGS.keys()


@pytest.mark.parametrize("resource", OPERATOR_OWNED_RESOURCES)
def test_resources_the_operator_derives(resource):
    p = only_problem(spec(runtime={"resources": {"limits": {resource: 1, "memory": "1Gi"}}}))
    assert (p.field, p.reason) == ("spec.runtime.resources.limits", Reason.INVALID_RESOURCES)
    assert p.message.startswith(f"spec.runtime.resources.limits: {resource} is derived by the operator")


def test_no_artifact_store_anywhere():
    p = only_problem(spec(), defaults=OperatorConfig())
    assert (p.field, p.reason) == ("spec.artifacts", Reason.NO_ARTIFACT_STORE)
    assert "spec.artifacts.pvc or spec.artifacts.s3" in p.message
    # Either place is enough.
    assert problems_of(spec(), defaults=DEFAULT_STORE) == []
    assert problems_of(spec(artifacts={"s3": {"uri": "s3://b/p"}}), defaults=OperatorConfig()) == []


def test_artifact_sub_path_without_dot_dot():
    p = only_problem(spec(artifacts={"pvc": {"claimName": "a", "subPath": "store/../../etc"}}))
    assert (p.field, p.reason) == ("spec.artifacts.pvc.subPath", Reason.INVALID_ARTIFACT_STORE)


def test_all_problems_are_reported_at_once():
    s = spec(
        tensorParallelSize=4,
        engine={"maxModelLen": 64, "overrideNeuronConfig": {"batch_size": 2}, "extraArgs": ["--port", "9000"]},
        model={"uri": "pvc://claim"},
    )
    fields = {p.field for p in problems_of(s, defaults=OperatorConfig())}
    assert fields == {
        "spec.tensorParallelSize",
        "spec.engine.maxModelLen",
        "spec.engine.overrideNeuronConfig.batch_size",
        "spec.engine.extraArgs[0]",
        "spec.model.uri",
        "spec.artifacts",
    }


def test_lora_across_nodes_is_rejected_saying_why():
    p = only_problem(spec(tensorParallelSize=64, nodesPerReplica=2, loraAdapters=[{"name": "a", "uri": "hf://a/l"}]))
    assert (p.field, p.reason) == ("spec.loraAdapters", Reason.UNSUPPORTED_BY_STACK)
    assert "the 2.23 fork does not send the adapter to worker nodes; use nodesPerReplica: 1" in p.message


def test_speculation_needs_one_sequence_on_the_2_23_stack():
    p = only_problem(spec(speculativeDecoding={"draftModel": {"uri": "hf://a/d"}}, engine={"maxNumSeqs": 4}))
    assert (p.field, p.reason) == ("spec.engine.maxNumSeqs", Reason.UNSUPPORTED_BY_STACK)
    assert "set engine.maxNumSeqs: 1" in p.message
    assert problems_of(spec(speculativeDecoding={"draftModel": {"uri": "hf://a/d"}}, engine={"maxNumSeqs": 1})) == []
