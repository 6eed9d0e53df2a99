"""The pydantic API models: defaults, aliases, constraints, and parse-at-the-edge error messages."""

from __future__ import annotations

import typing

import pytest
from neuron_operator.api import (
    GROUP_VERSION,
    Condition,
    ConditionType,
    InvalidSpecError,
    NeuronInferenceService,
    NeuronInferenceServiceSpec,
    NeuronInferenceServiceStatus,
    Phase,
    Reason,
    parse_resource,
    parse_spec,
)
from neuron_operator.api import spec as spec_module
from neuron_operator.api import status as status_module
from neuron_operator.catalog import load_catalog
from pydantic import BaseModel, ValidationError


def minimal(**extra) -> dict:
    raw = {
        "model": {"uri": "hf://meta-llama/Llama-3.1-8B-Instruct"},
        "instanceType": "trn1.32xlarge",
        "tensorParallelSize": 32,
    }
    raw.update(extra)
    return raw


def errors_of(raw: dict) -> list[str]:
    with pytest.raises(InvalidSpecError) as info:
        parse_spec(raw)
    return info.value.messages


def test_minimal_spec_gets_documented_defaults():
    spec = parse_spec(minimal())
    assert spec.model.revision == "main"
    assert spec.model.token_secret_ref is None
    assert spec.nodes_per_replica == 1
    assert spec.replicas == 1
    assert (spec.engine.max_num_seqs, spec.engine.max_model_len, spec.engine.dtype) == (8, 4096, "bfloat16")
    assert spec.engine.override_neuron_config == {} and spec.engine.extra_args == []
    assert spec.engine.max_lora_rank is None
    assert spec.artifacts is None and spec.lora_adapters == [] and spec.speculative_decoding is None
    assert spec.runtime.startup_timeout_seconds == 1800
    assert spec.runtime.allow_surge is False
    assert spec.runtime.resources.requests == {}
    assert spec.placement.topology_key is None
    assert spec.per_node_tp == 32


def test_full_spec_round_trips_in_camel_case():
    raw = minimal(
        model={"uri": "hf://org/m", "revision": "abc123", "tokenSecretRef": {"name": "hf-token"}},
        nodesPerReplica=2,
        tensorParallelSize=64,
        replicas=3,
        engine={
            "maxNumSeqs": 4,
            "maxModelLen": 8192,
            "dtype": "float16",
            "overrideNeuronConfig": {"context_encoding_buckets": [1024, 8192], "skip_warmup": True},
            "extraArgs": ["--max-log-len", "100"],
            "maxLoraRank": 16,
        },
        artifacts={"pvc": {"claimName": "neuron-artifacts", "subPath": "store"}},
        loraAdapters=[{"name": "sql", "uri": "s3://bucket/adapters/sql"}],
        runtime={
            "image": "example.com/neuron-runtime:1",
            "imagePullPolicy": "Always",
            "imagePullSecrets": [{"name": "regcred"}],
            "resources": {"requests": {"cpu": "8", "memory": "64Gi"}, "limits": {"memory": 68719476736}},
            "nodeSelector": {"pool": "a"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "llm", "effect": "NoSchedule"}],
            "schedulerName": "neuron-scheduler",
            "env": [{"name": "FOO", "value": "bar"}],
            "podLabels": {"team": "x"},
            "podAnnotations": {"a": "b"},
            "serviceAccountName": "llm",
            "startupTimeoutSeconds": 3600,
            "allowSurge": True,
        },
        placement={"topologyKey": "eks.amazonaws.com/nodegroup"},
    )
    spec = parse_spec(raw)
    assert spec.model.token_secret_ref.key == "token"
    assert spec.engine.override_neuron_config["skip_warmup"] is True
    assert spec.runtime.resources.limits["memory"] == 68719476736
    dumped = spec.model_dump(by_alias=True, exclude_unset=True)
    assert dumped == raw
    assert parse_spec(dumped) == spec


def test_python_names_are_accepted_too():
    spec = parse_spec(
        {
            "model": {"uri": "hf://a/b"},
            "instance_type": "inf2.xlarge",
            "tensor_parallel_size": 2,
            "engine": {"max_num_seqs": 2},
        }
    )
    assert spec.engine.max_num_seqs == 2


def test_error_paths_are_camel_case_and_name_the_field():
    messages = errors_of(minimal(engine={"max_num_seqs": 0}))
    assert messages == ["spec.engine.maxNumSeqs: Input should be greater than or equal to 1"]
    messages = errors_of(minimal(engine={"maxNumSeqs": 0}))
    assert messages == ["spec.engine.maxNumSeqs: Input should be greater than or equal to 1"]


def test_unknown_fields_are_errors_at_every_level():
    assert errors_of(minimal(bogus=1)) == ["spec.bogus: Extra inputs are not permitted"]
    assert errors_of(minimal(engine={"maxNumSeq": 8})) == ["spec.engine.maxNumSeq: Extra inputs are not permitted"]
    assert errors_of(minimal(runtime={"resources": {"request": {}}})) == [
        "spec.runtime.resources.request: Extra inputs are not permitted"
    ]


def test_list_and_map_paths():
    messages = errors_of(
        minimal(loraAdapters=[{"name": "ok", "uri": "hf://a/b"}, {"name": "Bad_Name", "uri": "hf://a/c"}])
    )
    assert len(messages) == 1 and messages[0].startswith("spec.loraAdapters[1].name: String should match pattern")
    messages = errors_of(minimal(runtime={"resources": {"requests": {"cpu": "lots"}}}))
    assert messages == [
        "spec.runtime.resources.requests.cpu: 'lots' is not a Kubernetes quantity (e.g. '4', '500m', '16Gi')"
    ]
    messages = errors_of(minimal(runtime={"resources": {"limits": {"aws.amazon.com/neuron": True}}}))
    assert messages[0].startswith(
        "spec.runtime.resources.limits['aws.amazon.com/neuron']: must be a Kubernetes quantity"
    )


def test_required_fields_are_reported_together():
    assert errors_of({}) == [
        "spec.model: Field required",
        "spec.instanceType: Field required",
        "spec.tensorParallelSize: Field required",
    ]


@pytest.mark.parametrize("uri", ["hf://meta-llama/Llama-3.1-8B", "s3://bucket/prefix", "pvc://claim/models/llama"])
def test_model_uri_schemes_accepted(uri):
    assert parse_spec(minimal(model={"uri": uri})).model.uri == uri


@pytest.mark.parametrize("uri", ["meta-llama/Llama-3.1-8B", "gs://bucket/x", "https://huggingface.co/x", "hf://"])
def test_model_uri_other_schemes_rejected(uri):
    (message,) = errors_of(minimal(model={"uri": uri}))
    assert message.startswith("spec.model.uri: String should match pattern '^(hf|s3|pvc)://.+'")


def test_instance_type_enum_is_the_catalog():
    annotation = NeuronInferenceServiceSpec.model_fields["instance_type"].annotation
    assert typing.get_args(annotation) == tuple(load_catalog().instance_types)
    (message,) = errors_of(minimal(instanceType="p4d.24xlarge"))
    assert message.startswith("spec.instanceType: Input should be 'inf2.xlarge'")
    assert "'trn2.48xlarge'" in message


def test_dtype_auto_is_rejected():
    (message,) = errors_of(minimal(engine={"dtype": "auto"}))
    assert message == "spec.engine.dtype: Input should be 'bfloat16', 'float16' or 'float32'"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (minimal(tensorParallelSize=0), "spec.tensorParallelSize: Input should be greater than or equal to 1"),
        (minimal(nodesPerReplica=0), "spec.nodesPerReplica: Input should be greater than or equal to 1"),
        (minimal(replicas=-1), "spec.replicas: Input should be greater than or equal to 0"),
        (minimal(engine={"maxModelLen": 0}), "spec.engine.maxModelLen: Input should be greater than or equal to 1"),
        (
            minimal(engine={"maxLoraRank": 12}),
            "spec.engine.maxLoraRank: Input should be 8, 16, 32, 64, 128 or 256",
        ),
        (
            minimal(speculativeDecoding={"draftModel": {"uri": "hf://a/b"}, "numSpeculativeTokens": 17}),
            "spec.speculativeDecoding.numSpeculativeTokens: Input should be less than or equal to 16",
        ),
        (
            minimal(speculativeDecoding={"numSpeculativeTokens": 4}),
            "spec.speculativeDecoding.draftModel: Field required",
        ),
        (
            minimal(speculativeDecoding={"method": "medusa", "draftModel": {"uri": "hf://a/b"}}),
            "spec.speculativeDecoding.method: Input should be 'draft', 'eagle' or 'eagle3'",
        ),
        (
            minimal(runtime={"startupTimeoutSeconds": 10}),
            "spec.runtime.startupTimeoutSeconds: Input should be greater than or equal to 60",
        ),
        (
            minimal(runtime={"imagePullPolicy": "Sometimes"}),
            "spec.runtime.imagePullPolicy: Input should be 'Always', 'IfNotPresent' or 'Never'",
        ),
        (minimal(engine={"extraArgs": [""]}), "spec.engine.extraArgs[0]: String should have at least 1 character"),
    ],
)
def test_field_constraints(raw, expected):
    assert errors_of(raw) == [expected]


def test_artifacts_exactly_one_store():
    expected = ["spec.artifacts: set exactly one of artifacts.pvc or artifacts.s3"]
    assert errors_of(minimal(artifacts={})) == expected
    assert errors_of(minimal(artifacts={"pvc": {"claimName": "a"}, "s3": {"uri": "s3://b/p"}})) == expected
    assert parse_spec(minimal(artifacts={"s3": {"uri": "s3://bucket/prefix"}})).artifacts.s3.uri == "s3://bucket/prefix"
    (message,) = errors_of(minimal(artifacts={"s3": {"uri": "hf://bucket"}}))
    assert message.startswith("spec.artifacts.s3.uri: String should match pattern")


def test_lora_adapter_names_unique():
    adapters = [{"name": "sql", "uri": "hf://a/b"}, {"name": "sql", "uri": "hf://a/c"}]
    assert errors_of(minimal(loraAdapters=adapters)) == ["spec.loraAdapters: duplicate adapter name 'sql'"]


@pytest.mark.parametrize("value", [4, "4", "500m", "16Gi", "1.5", "2e3"])
def test_quantities_accepted(value):
    spec = parse_spec(minimal(runtime={"resources": {"requests": {"cpu": value}}}))
    assert spec.runtime.resources.requests["cpu"] == value


def test_spec_models_are_immutable():
    spec = parse_spec(minimal())
    with pytest.raises(ValidationError):
        spec.replicas = 5  # type: ignore[misc]


def _spec_models() -> list[type[BaseModel]]:
    return [
        obj
        for obj in vars(spec_module).values()
        if isinstance(obj, type) and issubclass(obj, spec_module.SpecModel) and obj is not spec_module.SpecModel
    ]


def _status_models() -> list[type[BaseModel]]:
    return [
        obj
        for obj in vars(status_module).values()
        if isinstance(obj, type) and issubclass(obj, status_module.StatusModel) and obj is not status_module.StatusModel
    ]


@pytest.mark.parametrize("model", _spec_models() + _status_models(), ids=lambda m: m.__name__)
def test_every_field_has_a_description(model):
    missing = [name for name, info in model.model_fields.items() if not info.description]
    assert not missing, f"{model.__name__} fields without description: {missing}"


@pytest.mark.parametrize("model", _spec_models(), ids=lambda m: m.__name__)
def test_spec_models_forbid_unknown_fields(model):
    assert model.model_config["extra"] == "forbid"
    assert model.model_config["populate_by_name"] is True


def test_status_is_lenient_and_camel_case():
    status = NeuronInferenceServiceStatus.model_validate(
        {
            "observedGeneration": 3,
            "phase": "Ready",
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "ReplicasReady",
                    "lastTransitionTime": "2025-01-01T00:00:00Z",
                }
            ],
            "artifact": {"key": "abc", "location": "pvc://c/p/abc", "stack": "neuron-2.23-vllm-0.7.2"},
            "servingArtifact": {"key": "abc"},
            "readyReplicas": 2,
            "kopf": {"progress": {}},
        }
    )
    assert status.condition(ConditionType.READY).reason == "ReplicasReady"
    assert status.condition(ConditionType.STALLED) is None
    assert status.serving_artifact.key == "abc"
    assert status.model_dump(by_alias=True, exclude_none=True)["readyReplicas"] == 2
    with pytest.raises(ValidationError):
        Condition.model_validate({"type": "Ready", "status": "Yes"})


def test_status_constants_match_the_schema():
    assert ConditionType.ALL == ("Ready", "Compiled", "Available", "Reconciling", "Stalled")
    phase_annotation = NeuronInferenceServiceStatus.model_fields["phase"].annotation
    assert set(Phase.ALL) == set(typing.get_args(typing.get_args(phase_annotation)[0]))
    reasons = [v for k, v in vars(Reason).items() if k.isupper()]
    assert len(reasons) == len(set(reasons)), "reason values must be unique"
    assert all(r[0].isupper() and r.isalnum() for r in reasons), "reasons are CamelCase"


def test_parse_resource_whole_object():
    svc = parse_resource(
        {
            "apiVersion": GROUP_VERSION,
            "kind": "NeuronInferenceService",
            "metadata": {"name": "llama", "namespace": "ml", "uid": "u-1", "generation": 2, "resourceVersion": "9"},
            "spec": minimal(),
        }
    )
    assert isinstance(svc, NeuronInferenceService)
    assert (svc.metadata.name, svc.metadata.namespace, svc.metadata.uid) == ("llama", "ml", "u-1")
    assert svc.spec.tensor_parallel_size == 32
    assert svc.status.conditions == []


def test_parse_resource_error_names_spec_fields():
    with pytest.raises(InvalidSpecError) as info:
        parse_resource({"metadata": {"name": "x"}, "spec": minimal(tensorParallelSize="many")})
    assert info.value.messages == [
        "spec.tensorParallelSize: Input should be a valid integer, unable to parse string as an integer"
    ]
