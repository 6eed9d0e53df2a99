"""Generate the NeuronInferenceService CRD from the pydantic models.

The models' JSON Schema is rewritten into a Kubernetes *structural* schema: ``$ref`` inlined, ``Optional[X]``
turned into plain ``X`` (optional = not required; no ``nullable``), free-form objects marked
``x-kubernetes-preserve-unknown-fields``, titles dropped. Descriptions, defaults, enums, patterns, bounds and
CEL rules (``x-kubernetes-validations``) come from the models unchanged. ``crds/neuroninferenceservices.yaml``
is this module's output, committed; a unit test fails when it drifts. Regenerate with
``neuron-operator crds > crds/neuroninferenceservices.yaml``.
"""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel

from neuron_operator.api import (
    GROUP_VERSION,
    CRD_NAME,
    GROUP,
    KIND,
    PLURAL,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
)
from neuron_operator.api.spec import NeuronInferenceServiceSpec
from neuron_operator.api.status import NeuronInferenceServiceStatus

REGENERATE_COMMAND = "neuron-operator crds > crds/neuroninferenceservices.yaml"

HEADER = (
    "# GENERATED FILE - do not edit. Source: the pydantic models in operator/neuron_operator/api/.\n"
    f"# Regenerate: {REGENERATE_COMMAND}\n"
)

# Keywords a structural schema may not contain where pydantic would emit them.
_FORBIDDEN_KEYWORDS = ("$ref", "$defs", "allOf", "oneOf", "not", "const", "nullable", "discriminator")

# Key order in the rendered YAML, so the file reads top-down: what a field is, then its constraints, then children.
_KEY_ORDER = (
    "description",
    "type",
    "format",
    "enum",
    "default",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "maxProperties",
    "anyOf",
    "x-kubernetes-int-or-string",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "items",
    "additionalProperties",
    "properties",
    "required",
    "x-kubernetes-validations",
)


def openapi_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of ``model`` (camelCase, everything inlined)."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    return _structural(raw, defs)


def _structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    node = dict(node)
    if "$ref" in node:
        target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
        # Field-level keywords (description, default) override the referenced model's own.
        node = {**target, **node}
    if "anyOf" in node:
        variants = [v for v in node["anyOf"] if v != {"type": "null"}]
        if len(variants) < len(node["anyOf"]):  # Optional[X]: optional means "may be absent", not nullable
            node.pop("anyOf")
            if node.get("default", ...) is None:
                node.pop("default")
            if len(variants) == 1:
                node = {**_structural(variants[0], defs), **node}
            else:
                node["anyOf"] = variants
        if "anyOf" in node and not node.get("x-kubernetes-int-or-string"):
            raise ValueError(f"anyOf is not structural outside int-or-string: {node}")
    node.pop("title", None)
    if node.get("default", ...) is None:
        node.pop("default")
    additional = node.get("additionalProperties")
    if additional is False:
        node.pop("additionalProperties")  # extra="forbid": the API server prunes/rejects unknown fields itself
    elif additional is True:
        node.pop("additionalProperties")
        node["x-kubernetes-preserve-unknown-fields"] = True
    elif isinstance(additional, dict):
        node["additionalProperties"] = _structural(additional, defs)
    if "properties" in node:
        node["properties"] = {name: _structural(prop, defs) for name, prop in node["properties"].items()}
    if "items" in node:
        node["items"] = _structural(node["items"], defs)
    if "enum" in node and "type" not in node:
        node["type"] = "integer" if all(isinstance(v, int) for v in node["enum"]) else "string"
    if "properties" in node or "x-kubernetes-preserve-unknown-fields" in node:
        node.setdefault("type", "object")
    if "x-kubernetes-validations" in node:
        node["x-kubernetes-validations"] = [_ordered_rule(rule) for rule in node["x-kubernetes-validations"]]
    for keyword in _FORBIDDEN_KEYWORDS:
        if keyword in node:
            raise ValueError(f"{keyword} is not allowed in a structural schema: {node}")
    return _ordered(node)


def _ordered(node: dict[str, Any]) -> dict[str, Any]:
    rank = {key: i for i, key in enumerate(_KEY_ORDER)}
    return dict(sorted(node.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))


def _ordered_rule(rule: dict[str, Any]) -> dict[str, Any]:
    # pydantic sorts json_schema_extra keys; put the rule first so the YAML reads "rule, then its message".
    order = ("rule", "message", "messageExpression", "fieldPath", "reason")
    return {key: rule[key] for key in order if key in rule}


def _printer_columns() -> list[dict[str, Any]]:
    return [
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase", "description": "Coarse lifecycle phase."},
        {"name": "Stack", "type": "string", "jsonPath": ".status.artifact.stack",
         "description": "Runtime stack profile the artifact is compiled with."},
        {
            "name": "Ready",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
            "description": "Status of the Ready condition.",
        },
        {"name": "Instance", "type": "string", "jsonPath": ".spec.instanceType", "description": "EC2 instance type."},
        {
            "name": "TP",
            "type": "integer",
            "jsonPath": ".spec.tensorParallelSize",
            "description": "Total tensor-parallel degree of one replica.",
        },
        {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas", "description": "Desired replicas."},
        {
            "name": "Artifact",
            "type": "string",
            "jsonPath": ".status.artifact.key",
            "description": "Compile key of the current artifact.",
        },
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]


def build_crd() -> dict[str, Any]:
    """The apiextensions.k8s.io/v1 CustomResourceDefinition for NeuronInferenceService."""
    spec_schema = openapi_schema(NeuronInferenceServiceSpec)
    status_schema = openapi_schema(NeuronInferenceServiceStatus)
    root = {
        "description": (
            "NeuronInferenceService serves an LLM with vLLM on AWS Trainium / Inferentia: the operator compiles the "
            "model once for the instance family, stores the artifacts under a content-addressed key, and runs the "
            "serving pods (single- or multi-node tensor parallelism) from them behind an OpenAI-compatible Service."
        ),
        "type": "object",
        "properties": {
            "apiVersion": {
                "description": f"API version of this object: {GROUP_VERSION}.",
                "type": "string",
            },
            "kind": {"description": f"Kind of this object: {KIND}.", "type": "string"},
            # The API server forbids anything but name/generateName under metadata, even a description.
            "metadata": {"type": "object"},
            "spec": spec_schema,
            "status": status_schema,
        },
        "required": ["spec"],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": root},
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": _printer_columns(),
                }
            ],
        },
    }


def yaml_dump_crd(crd: dict[str, Any]) -> str:
    """Render a CRD as stable YAML (insertion order, no line wrapping surprises)."""
    return yaml.safe_dump(crd, sort_keys=False, width=120, allow_unicode=True, default_flow_style=False)


def crd_yaml() -> str:
    """The committed CRD file's exact content: generated header plus the CRD. `neuron-operator crds` prints it."""
    return HEADER + yaml_dump_crd(build_crd())


if __name__ == "__main__":
    print(crd_yaml(), end="")
