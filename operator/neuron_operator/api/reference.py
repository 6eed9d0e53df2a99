"""Generate docs/reference.md, the field-by-field reference of NeuronInferenceService, from the same structural
schema the CRD is generated from, so the README's reference can never disagree with `kubectl explain`.

Regenerate: `neuron-operator reference > docs/reference.md` (a unit test fails when the committed file drifts).
"""

from __future__ import annotations

import json
from typing import Any, Iterator

from neuron_operator.api.crd import build_crd

REGENERATE_COMMAND = "neuron-operator reference > docs/reference.md"


def _type(node: dict[str, Any]) -> str:
    kind = node.get("type", "object")
    if kind == "array":
        return f"[]{_type(node.get('items', {}))}"
    if kind == "object" and "additionalProperties" in node:
        return f"map[string]{_type(node['additionalProperties'])}"
    if node.get("x-int-or-string"):
        return "int-or-string"
    return kind


def _constraints(node: dict[str, Any]) -> str:
    parts = []
    if "enum" in node:
        parts.append("one of " + ", ".join(f"`{v}`" for v in node["enum"]))
    for key, label in (("minimum", "≥"), ("maximum", "≤"), ("minLength", "min length"), ("maxLength", "max length"),
                       ("maxItems", "max items")):
        if key in node:
            parts.append(f"{label} {node[key]}")
    if "pattern" in node:
        parts.append(f"pattern `{node['pattern']}`")
    return "; ".join(parts)


def _rows(node: dict[str, Any], path: str, required: bool) -> Iterator[tuple[str, str, str, str, str]]:
    default = json.dumps(node["default"]) if "default" in node else ""
    description = " ".join((node.get("description") or "").split())
    yield path, _type(node), ("yes" if required else "") + (f" (default `{default}`)" if default else ""), \
        _constraints(node), description
    child = node.get("items") if node.get("type") == "array" else node
    for name, sub in (child or {}).get("properties", {}).items():
        prefix = f"{path}[]" if node.get("type") == "array" else path
        yield from _rows(sub, f"{prefix}.{name}", name in (child or {}).get("required", []))


def reference_markdown() -> str:
    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    lines = [
        "<!-- GENERATED FILE - do not edit. Source: operator/neuron_operator/api/ (pydantic models). -->",
        f"<!-- Regenerate: {REGENERATE_COMMAND} -->",
        "# NeuronInferenceService reference (inference.neuron-operator.io/v1alpha1)",
        "",
        "Every field of the resource, generated from the models that also generate the CRD. Rules that span",
        "fields (CEL, enforced at `kubectl apply`) are listed after the tables.",
        "",
    ]
    for section in ("spec", "status"):
        lines += [f"## {section}", "", "| Field | Type | Required / default | Constraints | Description |",
                  "|---|---|---|---|---|"]
        node = schema["properties"][section]
        for path, kind, req, cons, desc in _rows(node, section, False):
            if path == section:
                continue
            cell = lambda text: text.replace("|", "\\|")  # noqa: E731 - table cell escaping
            lines.append(f"| `{path}` | {cell(kind)} | {cell(req)} | {cell(cons)} | {cell(desc)} |")
        lines.append("")
    lines += _stack_section()
    lines += ["## Cross-field rules (CEL)", ""]
    for _, node in _walk(schema["properties"]["spec"], "spec"):
        for rule in node.get("x-kubernetes-validations", []):
            lines.append(f"- {' '.join(rule['message'].split())}")
    return "\n".join(lines) + "\n"


def _stack_section() -> list[str]:
    """The stack profiles (neuron_runtime.stacks) and the operator's built-in per-family defaults."""
    from neuron_runtime.stacks import PROFILES

    from neuron_operator.config import DEFAULT_STACKS

    lines = [
        "## Stacks (spec.runtime.stack)",
        "",
        "A stack is the Neuron SDK, the vLLM engine and the runtime image that compile and serve a service; it is",
        "part of the compile key. Unset, a service gets its instance family's default (Helm `runtime.defaultStacks`,",
        "built in: the column below). `neuron-operator stacks` prints the same with the operator's configuration.",
        "Choose `neuron-2.32-vllm-neuron-0.24` for new Trn2/Trn3 services: it compiles on CPU nodes and serves",
        "cache-hit-only. Keep `neuron-2.23-vllm-0.7.2` for inf2/trn1 (the only stack there), for multi-node tensor",
        "parallelism or LoRA, and for services that already run on it (changing the stack recompiles).",
        "",
        "| Stack | SDK | Status | Families | Default for | Compiles on | Multi-node | LoRA | Speculative | "
        "Data parallel | Image |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for stack in PROFILES.values():
        f = stack.features
        default_for = ", ".join(sorted(fam for fam, sid in DEFAULT_STACKS.items() if sid == stack.id)) or "-"
        compiles = "CPU nodes (target instance for speculative decoding)" if f.cpu_compile else "target instance"
        multi = ("yes (experimental upstream)" if f.multi_node_experimental else "yes") if f.multi_node else "no"
        lines.append(
            f"| `{stack.id}` | {stack.sdk_version} | {stack.status} | {', '.join(stack.families)} | {default_for} | "
            f"{compiles} | {multi} | {'yes' if f.lora else 'no'} | {', '.join(f.speculative_methods) or 'no'} | "
            f"{'yes' if f.data_parallel else 'no'} | `{stack.default_image}` |")
    return lines + [""]


def _walk(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    if node.get("type") == "array" and "items" in node:
        yield from _walk(node["items"], f"{path}[]")
    for name, sub in node.get("properties", {}).items():
        yield from _walk(sub, f"{path}.{name}")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}.*")


if __name__ == "__main__":
    print(reference_markdown(), end="")
