"""The generated CRD: drift against the committed file, structural-schema rules, and the CEL rules' behaviour.

CEL rules are evaluated with cel-python (``celpy``) on sample objects after applying the schema's defaults the
way the API server does. The real API server (e2e) remains the authority on cost estimates and k8s-only CEL
functions; the rules here use only standard CEL so celpy can evaluate them.
"""

from __future__ import annotations

import copy
import functools
import pathlib
from collections.abc import Iterator
from typing import Any

import celpy  # cel-python, in the [test] extra
import pytest
import yaml
from neuron_operator.api import (
    CRD_NAME,
    GROUP,
    KIND,
    PLURAL,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
    parse_spec,
)
from neuron_operator.api.crd import (
    REGENERATE_COMMAND,
    build_crd,
    crd_yaml,
    openapi_schema,
    yaml_dump_crd,
)
from neuron_operator.api.spec import OPERATOR_OWNED_ARGS, OPERATOR_OWNED_RESOURCES
from neuron_operator.catalog import load_catalog
from neuron_operator.config import OperatorConfig
from neuron_operator.validation import validate

CRD_FILE = pathlib.Path(__file__).resolve().parents[2] / "crds" / "neuroninferenceservices.yaml"


@functools.cache
def _built() -> dict:
    return build_crd()


def crd_version() -> dict:
    """The built CRD's only version, built once per session (treat as read-only)."""
    (version,) = _built()["spec"]["versions"]
    return version


def root_schema() -> dict:
    return crd_version()["schema"]["openAPIV3Schema"]


def spec_schema() -> dict:
    return root_schema()["properties"]["spec"]


# --- the file and the shape ----------------------------------------------------------------------------


def test_committed_crd_matches_the_models():
    committed = CRD_FILE.read_text() if CRD_FILE.exists() else ""
    assert committed == crd_yaml(), (
        f"{CRD_FILE.relative_to(CRD_FILE.parents[1])} is out of date with the pydantic models; regenerate it with:\n"
        f"    {REGENERATE_COMMAND}"
    )


def test_rendering_is_stable_and_parses_back():
    assert crd_yaml() == crd_yaml()
    assert yaml.safe_load(yaml_dump_crd(build_crd())) == build_crd()
    assert crd_yaml().startswith("# GENERATED FILE")


def test_names_scope_and_subresources():
    crd = build_crd()
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == CRD_NAME == "neuroninferenceservices.inference.neuron-operator.io"
    assert crd["spec"]["group"] == GROUP == "inference.neuron-operator.io"
    assert crd["spec"]["scope"] == "Namespaced"
    assert crd["spec"]["names"] == {
        "kind": KIND,
        "listKind": "NeuronInferenceServiceList",
        "plural": PLURAL,
        "singular": SINGULAR,
        "shortNames": list(SHORT_NAMES),
    }
    assert (KIND, PLURAL, SINGULAR, SHORT_NAMES) == (
        "NeuronInferenceService",
        "neuroninferenceservices",
        "neuroninferenceservice",
        ("nis",),
    )
    version = crd_version()
    assert (version["name"], version["served"], version["storage"]) == (VERSION, True, True) == ("v1alpha1", True, True)
    assert version["subresources"] == {
        "status": {},
        "scale": {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        },
    }


def test_printer_columns():
    columns = {c["name"]: (c["type"], c["jsonPath"]) for c in crd_version()["additionalPrinterColumns"]}
    assert columns == {
        "Phase": ("string", ".status.phase"),
        "Stack": ("string", ".status.artifact.stack"),
        "Ready": ("string", '.status.conditions[?(@.type=="Ready")].status'),
        "Instance": ("string", ".spec.instanceType"),
        "TP": ("integer", ".spec.tensorParallelSize"),
        "Replicas": ("integer", ".spec.replicas"),
        "Artifact": ("string", ".status.artifact.key"),
        "Age": ("date", ".metadata.creationTimestamp"),
    }
    for column in crd_version()["additionalPrinterColumns"]:
        assert _schema_at(root_schema(), column["jsonPath"].split("[")[0]) is not None or column["name"] == "Age"


def test_scale_paths_exist_in_the_schema():
    root = root_schema()
    assert _schema_at(root, ".spec.replicas")["type"] == "integer"
    assert _schema_at(root, ".status.replicas")["type"] == "integer"
    assert _schema_at(root, ".status.selector")["type"] == "string"


# --- structural schema ---------------------------------------------------------------------------------


def walk(schema: dict, path: str = "") -> Iterator[tuple[str, dict]]:
    yield path, schema
    for name, prop in schema.get("properties", {}).items():
        yield from walk(prop, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}{{}}")


FORBIDDEN = {"$ref", "$defs", "definitions", "allOf", "oneOf", "not", "const", "nullable", "title", "discriminator"}


def test_schema_is_structural():
    for path, node in walk(root_schema()):
        assert not FORBIDDEN & node.keys(), f"{path}: {FORBIDDEN & node.keys()}"
        if node.get("x-kubernetes-int-or-string"):
            assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], path
            continue
        assert "anyOf" not in node, f"{path}: anyOf only for int-or-string"
        assert node.get("type") in {"object", "array", "string", "integer", "number", "boolean"}, f"{path}: no type"
        assert "additionalProperties" not in node or "properties" not in node, path
        if node["type"] == "array":
            assert "items" in node, path
        if "default" in node:
            assert node["default"] is not None, path


def test_every_property_has_a_description():
    for path, node in walk(root_schema()):
        for name, prop in node.get("properties", {}).items():
            if (path, name) == ("", "metadata"):
                continue  # the API server rejects anything under metadata but name/generateName
            assert prop.get("description"), f"{path}.{name} has no description"


def test_metadata_schema_is_only_a_type():
    assert root_schema()["properties"]["metadata"] == {"type": "object"}


def test_optional_fields_are_not_required_and_not_nullable():
    spec = spec_schema()
    assert spec["required"] == ["model", "instanceType", "tensorParallelSize"]
    assert spec["properties"]["artifacts"]["type"] == "object"
    assert spec["properties"]["speculativeDecoding"]["type"] == "object"
    assert "required" not in root_schema()["properties"]["status"]


def test_defaults_in_schema_are_constants_the_models_agree_with():
    spec = spec_schema()["properties"]
    assert spec["replicas"]["default"] == 1
    assert spec["nodesPerReplica"]["default"] == 1
    assert spec["engine"]["default"] == {}  # so the API server fills in the engine defaults below
    engine = spec["engine"]["properties"]
    assert (engine["maxNumSeqs"]["default"], engine["maxModelLen"]["default"], engine["dtype"]["default"]) == (
        8,
        4096,
        "bfloat16",
    )
    assert spec["runtime"]["properties"]["startupTimeoutSeconds"]["default"] == 1800
    assert spec["runtime"]["properties"]["allowSurge"]["default"] is False
    # Defaulting a minimal object the way the API server does gives what the model gives.
    raw = {"model": {"uri": "hf://a/b"}, "instanceType": "trn1.32xlarge", "tensorParallelSize": 32}
    defaulted = apply_defaults(spec_schema(), copy.deepcopy(raw))
    assert parse_spec(defaulted) == parse_spec(raw)


def test_free_form_and_enum_fields():
    engine = spec_schema()["properties"]["engine"]["properties"]
    assert engine["overrideNeuronConfig"] == {
        "description": engine["overrideNeuronConfig"]["description"],
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
    }
    assert engine["dtype"]["enum"] == ["bfloat16", "float16", "float32"]
    assert "auto" in engine["dtype"]["description"] and "float32" in engine["dtype"]["description"]
    assert spec_schema()["properties"]["instanceType"]["enum"] == list(load_catalog().instance_types)
    lora = spec_schema()["properties"]["loraAdapters"]
    assert lora["x-kubernetes-list-type"] == "map" and lora["x-kubernetes-list-map-keys"] == ["name"]
    assert lora["items"]["required"] == ["name", "uri"]  # list-map keys must be required
    requests = _schema_at(root_schema(), ".spec.runtime.resources.requests")
    assert requests["additionalProperties"]["x-kubernetes-int-or-string"] is True


def test_collections_under_cel_rules_are_bounded():
    """The API server estimates CEL cost from maxItems/maxProperties/maxLength; unbounded ones can exceed it."""
    for path, node in walk(spec_schema(), "spec"):
        if not node.get("x-kubernetes-validations"):
            continue
        if node["type"] == "array":
            assert "maxItems" in node, path
            assert "maxLength" in node["items"], path
        if "additionalProperties" in node:
            assert "maxProperties" in node, path


def test_openapi_schema_rejects_non_structural_models():

    from pydantic import BaseModel

    class Bad(BaseModel):
        value: int | list[int] | None = None

    with pytest.raises(ValueError, match="anyOf is not structural"):
        openapi_schema(Bad)


# --- CEL -----------------------------------------------------------------------------------------------


def _schema_at(schema: dict, json_path: str) -> dict | None:
    node = schema
    for part in json_path.strip(".").split("."):
        node = node.get("properties", {}).get(part)
        if node is None:
            return None
    return node


def rules_with_paths() -> list[tuple[str, dict, dict]]:
    return [
        (path, node, rule)
        for path, node in walk(spec_schema(), "spec")
        for rule in node.get("x-kubernetes-validations", [])
    ]


def apply_defaults(schema: dict, value: Any) -> Any:
    """Structural defaulting as the API server does it: fill missing properties, then recurse (so {} defaults nest)."""
    if isinstance(value, dict) and "properties" in schema:
        for name, prop in schema["properties"].items():
            if name not in value and "default" in prop:
                value[name] = copy.deepcopy(prop["default"])
            if name in value:
                value[name] = apply_defaults(prop, value[name])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(schema["items"], v) for v in value]
    return value


_ENV = celpy.Environment()  # the interpreted runner: celpy's CompiledRunner mishandles has() in ||


@functools.cache
def cel_program(rule: str):
    return _ENV.program(_ENV.compile(rule))


def cel_failures(raw_spec: dict) -> list[str]:
    """Messages of every CEL rule in the spec schema that rejects ``raw_spec`` (after defaulting)."""
    spec = apply_defaults(spec_schema(), copy.deepcopy(raw_spec))
    failures: list[str] = []

    def visit(schema: dict, value: Any) -> None:
        for rule in schema.get("x-kubernetes-validations", []):
            result = cel_program(rule["rule"]).evaluate({"self": celpy.json_to_cel(value)})
            assert isinstance(result, celpy.celtypes.BoolType), f"{rule['rule']} gave {result!r}"
            if not result:
                failures.append(rule["message"])
        if isinstance(value, dict) and "properties" in schema:
            for name, prop in schema["properties"].items():
                if name in value:
                    visit(prop, value[name])
        elif isinstance(value, list) and isinstance(schema.get("items"), dict):
            for item in value:
                visit(schema["items"], item)
        elif isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
            for item in value.values():
                visit(schema["additionalProperties"], item)

    visit(spec_schema(), spec)
    return failures


def base(**extra) -> dict:
    raw = {
        "model": {"uri": "hf://meta-llama/Llama-3.1-8B-Instruct"},
        "instanceType": "trn1.32xlarge",
        "tensorParallelSize": 32,
        "artifacts": {"pvc": {"claimName": "neuron-artifacts"}},
    }
    raw.update(extra)
    return raw


def test_there_are_cel_rules_for_each_documented_constraint():
    messages = [rule["message"] for _, _, rule in rules_with_paths()]
    for field in (
        "spec.tensorParallelSize:",
        "spec.nodesPerReplica:",
        "spec.speculativeDecoding:",
        "spec.speculativeDecoding.maxModelLen:",
        "spec.artifacts:",
        "spec.runtime.resources.requests:",
        "spec.runtime.resources.limits:",
        "spec.engine.extraArgs:",
    ):
        assert any(m.startswith(field) for m in messages), field


@pytest.mark.parametrize("path,node,rule", rules_with_paths(), ids=lambda x: x if isinstance(x, str) else "")
def test_each_rule_compiles_names_its_field_and_resolves_field_path(path, node, rule):
    _ENV.compile(rule["rule"])  # raises on syntax errors
    assert rule["message"].split(":")[0].startswith(path), (path, rule["message"])
    if "fieldPath" in rule:
        assert _schema_at(node, rule["fieldPath"]) is not None, rule["fieldPath"]
        assert rule["message"].startswith(path + rule["fieldPath"] + ":")
    assert len(rule["rule"]) < 1000


def test_valid_specs_pass_every_rule():
    catalog = load_catalog()
    samples = [base()]
    for name, instance in catalog.instance_types.items():
        for degree in instance.tp_degrees:
            if degree <= instance.logical_cores:
                samples.append(base(instanceType=name, tensorParallelSize=degree))
    samples += [
        base(instanceType="trn1.32xlarge", tensorParallelSize=64, nodesPerReplica=2),
        base(instanceType="trn2.48xlarge", tensorParallelSize=256, nodesPerReplica=4),
        base(artifacts={"s3": {"uri": "s3://bucket/prefix"}}),
        base(loraAdapters=[{"name": "a", "uri": "hf://x/y"}]),
        base(speculativeDecoding={"draftModel": {"uri": "hf://x/d"}, "maxModelLen": 4096}, engine={"maxNumSeqs": 1}),
        base(engine={"extraArgs": ["--max-log-len", "100", "--max-model-length-ish", "--portable"]}),
        base(runtime={"resources": {"requests": {"cpu": "8", "memory": "64Gi"}, "limits": {"memory": "64Gi"}}}),
    ]
    for sample in samples:
        assert cel_failures(sample) == [], sample


def test_rules_do_not_fail_to_evaluate_on_schema_invalid_values():
    """The API server runs CEL even when a bound is violated; a rule that errors (x % 0) adds a confusing message."""
    for nodes in (0, -1):
        assert cel_failures(base(nodesPerReplica=nodes)) == []  # cel_failures asserts every rule yields a bool


NO_DEFAULTS = OperatorConfig()


def _expect_rejected(raw: dict, field: str, *fragments: str) -> None:
    failures = cel_failures(raw)
    assert len(failures) == 1, failures
    assert failures[0].startswith(field + ":"), failures
    for fragment in fragments:
        assert fragment in failures[0], (fragment, failures[0])


@pytest.mark.parametrize(
    ("raw", "field", "fragments"),
    [
        (base(tensorParallelSize=4), "spec.tensorParallelSize", ["trn1.32xlarge, trn1n.32xlarge", "1, 2, 8, 16, 32"]),
        (base(instanceType="inf2.xlarge", tensorParallelSize=8), "spec.tensorParallelSize", ["inf2.xlarge", "1, 2"]),
        (base(instanceType="inf2.48xlarge", tensorParallelSize=16), "spec.tensorParallelSize", ["1, 2, 4, 8, 24"]),
        (
            base(instanceType="trn2.48xlarge", tensorParallelSize=128),
            "spec.tensorParallelSize",
            ["1, 2, 4, 8, 16, 32, 64"],
        ),
        (
            base(instanceType="trn1.32xlarge", tensorParallelSize=8, nodesPerReplica=2),
            "spec.tensorParallelSize",
            ["per-node"],
        ),
        (
            base(tensorParallelSize=33, nodesPerReplica=2),
            "spec.tensorParallelSize",
            ["multiple of spec.nodesPerReplica"],
        ),
        (
            base(instanceType="inf2.48xlarge", tensorParallelSize=48, nodesPerReplica=2),
            "spec.nodesPerReplica",
            ["inf2.48xlarge", "trn1.32xlarge, trn1n.32xlarge, trn2.48xlarge"],
        ),
        (
            base(
                loraAdapters=[{"name": "a", "uri": "hf://x/y"}],
                speculativeDecoding={"draftModel": {"uri": "hf://x/d"}},
                engine={"maxNumSeqs": 1},
            ),
            "spec.speculativeDecoding",
            ["spec.loraAdapters"],
        ),
        (
            base(
                engine={"maxModelLen": 2048, "maxNumSeqs": 1},
                speculativeDecoding={"draftModel": {"uri": "hf://x/d"}, "maxModelLen": 4096},
            ),
            "spec.speculativeDecoding.maxModelLen",
            ["spec.engine.maxModelLen"],
        ),
        (
            base(speculativeDecoding={"draftModel": {"uri": "hf://x/d"}, "maxModelLen": 8192},  # engine default 4096
                 engine={"maxNumSeqs": 1}),
            "spec.speculativeDecoding.maxModelLen",
            [],
        ),
        (base(artifacts={}), "spec.artifacts", ["exactly one"]),
        (base(artifacts={"pvc": {"claimName": "a"}, "s3": {"uri": "s3://b"}}), "spec.artifacts", ["exactly one"]),
        # stacks: the family a stack runs on, and the features it has (stack profiles in neuron_runtime.stacks)
        (
            base(runtime={"stack": "neuron-2.32-vllm-neuron-0.24"}),
            "spec.runtime.stack",
            ["neuron-2.32-vllm-neuron-0.24 runs on trn2, trn3 instance types only", "trn1: neuron-2.23-vllm-0.7.2"],
        ),
        (
            base(instanceType="trn3.48xlarge", runtime={"stack": "neuron-2.23-vllm-0.7.2"}),
            "spec.runtime.stack",
            ["runs on inf2, trn1, trn2 instance types only", "trn3: neuron-2.32-vllm-neuron-0.24"],
        ),
        (
            base(instanceType="trn2.48xlarge", loraAdapters=[{"name": "a", "uri": "hf://x/y"}],
                 runtime={"stack": "neuron-2.32-vllm-neuron-0.24"}),
            "spec.loraAdapters",
            ["LoRA adapters needs stack neuron-2.23-vllm-0.7.2"],
        ),
        (
            base(instanceType="trn3.48xlarge", tensorParallelSize=128, nodesPerReplica=2),
            "spec.nodesPerReplica",
            ["multi-node tensor parallelism", "needs stack neuron-2.23-vllm-0.7.2"],
        ),
        (base(dataParallelSize=2), "spec.dataParallelSize", ["needs stack neuron-2.32-vllm-neuron-0.24"]),
        (
            base(engine={"maxNumBatchedTokens": 2048}),
            "spec.engine.maxNumBatchedTokens",
            ["needs stack neuron-2.32-vllm-neuron-0.24 (trn2, trn3 instance types)"],
        ),
        (
            base(instanceType="trn3.48xlarge", tensorParallelSize=64,
                 speculativeDecoding={"draftModel": {"uri": "hf://x/d"}}),
            "spec.speculativeDecoding.method",
            ["speculative decoding method draft needs stack neuron-2.23-vllm-0.7.2"],
        ),
        (
            base(speculativeDecoding={"method": "eagle3", "draftModel": {"uri": "hf://x/d"}}, engine={"maxNumSeqs": 1}),
            "spec.speculativeDecoding.method",
            ["method eagle3 needs stack neuron-2.32-vllm-neuron-0.24"],
        ),
        (
            base(instanceType="trn3.48xlarge", tensorParallelSize=64,
                 speculativeDecoding={"method": "eagle3", "draftModel": {"uri": "hf://x/d"}, "maxModelLen": 1024}),
            "spec.speculativeDecoding.maxModelLen",
            ["not used by eagle3"],
        ),
        (
            base(instanceType="trn1.32xlarge", tensorParallelSize=64, nodesPerReplica=2,
                 runtime={"lendReplicaToCompile": True}),
            "spec.runtime.lendReplicaToCompile",
            ["multi-node groups (nodesPerReplica > 1) are never lent"],
        ),
        (
            base(runtime={"lendReplicaToCompile": True}, autoscaling={"maxReplicas": 4}),
            "spec.runtime.lendReplicaToCompile",
            ["cannot be combined with spec.autoscaling"],
        ),
        # 2.23 stack limits read from the fork and the SDK 2.23 docs (stack features in neuron_runtime.stacks)
        (
            base(instanceType="trn1.32xlarge", tensorParallelSize=64, nodesPerReplica=2,
                 loraAdapters=[{"name": "a", "uri": "hf://x/y"}]),
            "spec.loraAdapters",
            ["LoRA adapters with nodesPerReplica > 1 is supported by no stack", "does not send the adapter"],
        ),
        (
            base(speculativeDecoding={"draftModel": {"uri": "hf://x/d"}}),  # maxNumSeqs defaults to 8
            "spec.engine.maxNumSeqs",
            ["speculative decoding with engine.maxNumSeqs > 1", "set engine.maxNumSeqs: 1"],
        ),
    ],
)
def test_cross_field_rules_reject_and_validation_agrees(raw, field, fragments):
    _expect_rejected(raw, field, *fragments)
    # validate() (run on a spec parsed without the CEL layer) reports the same field. Skip shapes pydantic rejects.
    try:
        spec = parse_spec(raw)
    except ValueError:
        assert field == "spec.artifacts"
        return
    problems = validate(spec, load_catalog(), NO_DEFAULTS)
    assert any(p.field == field for p in problems), problems


@pytest.mark.parametrize("flag", sorted(OPERATOR_OWNED_ARGS))
@pytest.mark.parametrize("form", ["separate", "equals"])
def test_extra_args_rule_rejects_owned_flags(flag, form):
    args = [flag, "1"] if form == "separate" else [f"{flag}=1"]
    raw = base(engine={"extraArgs": ["--max-log-len", "7", *args]})
    _expect_rejected(raw, "spec.engine.extraArgs", flag, OPERATOR_OWNED_ARGS[flag])
    problems = validate(parse_spec(raw), load_catalog(), NO_DEFAULTS)
    assert [p.field for p in problems] == ["spec.engine.extraArgs[2]"]


@pytest.mark.parametrize("resource", OPERATOR_OWNED_RESOURCES)
@pytest.mark.parametrize("which", ["requests", "limits"])
def test_resources_rule_rejects_device_resources(resource, which):
    raw = base(runtime={"resources": {which: {"cpu": "4", resource: 16}}})
    _expect_rejected(raw, f"spec.runtime.resources.{which}", resource, "derives")
    problems = validate(parse_spec(raw), load_catalog(), NO_DEFAULTS)
    assert [p.field for p in problems] == [f"spec.runtime.resources.{which}"]


def test_tp_rules_agree_with_validation_for_every_combination():
    """Every instance type x per-node degree x node count: CEL accepts exactly what validate() accepts."""
    catalog = load_catalog()
    family_degrees = {d for degrees in catalog.tp_degrees.values() for d in degrees}
    per_node_degrees = sorted(family_degrees | {3, 5, 6, 12, 48, 65, 128})
    per_node_degrees.append(256)
    for name, instance in catalog.instance_types.items():
        # every LNC where there is a choice; elsewhere the explicit values once (the only one passes, 2 is rejected)
        if not instance.lnc_configurable:
            for lnc in (1, 2):
                raw = {**base(instanceType=name, tensorParallelSize=1), "logicalNeuronCoreConfig": lnc}
                assert (not cel_failures(raw)) == (not validate(parse_spec(raw), catalog, NO_DEFAULTS)) == (lnc == 1)
        for lnc in (None, 1, 2) if instance.lnc_configurable else (None,):
            for nodes in (1, 2):
                totals = [d * nodes for d in per_node_degrees] + ([nodes * 8 + 1] if nodes > 1 else [])
                for tp in totals:
                    raw = base(instanceType=name, tensorParallelSize=tp, nodesPerReplica=nodes)
                    if lnc is not None:
                        raw["logicalNeuronCoreConfig"] = lnc
                    cel_ok = not cel_failures(raw)
                    problems = validate(parse_spec(raw), catalog, NO_DEFAULTS)
                    assert cel_ok == (not problems), (name, lnc, tp, nodes, cel_failures(raw), problems)
