"""`neuron-operator render`: the exact child manifests for a NeuronInferenceService file, without a cluster.

Uses the same parse, validation, plan and child set (children.all_children) as the running operator, so a GitOps
pipeline can review what an apply will create. The serving workload is rendered as it will look once its artifact
is compiled.
"""

from __future__ import annotations

from typing import Any, Iterable

import yaml

from . import constants as C
from .catalog import Catalog
from .children import all_children
from .config import OperatorConfig
from .decide import intent_for

PLACEHOLDER_UID = "00000000-0000-0000-0000-000000000000"  # the real uid is assigned by the API server


class RenderError(Exception):
    pass


def render_children(resource: dict[str, Any], catalog: Catalog, config: OperatorConfig,
                    namespace: str = "default") -> list[dict[str, Any]]:
    if resource.get("apiVersion") != C.GROUP_VERSION or resource.get("kind") != C.KIND:
        raise RenderError(f"not a {C.KIND} ({C.GROUP_VERSION}): {resource.get('apiVersion')}/{resource.get('kind')}")
    meta = dict(resource.get("metadata") or {})
    name = meta.get("name")
    if not name:
        raise RenderError("metadata.name is required")
    meta.setdefault("namespace", namespace)
    meta.setdefault("uid", PLACEHOLDER_UID)
    intent = intent_for({**resource, "metadata": meta}, catalog, config)
    if intent.plan is None:
        raise RenderError(f"{name}: " + "; ".join(p.message for p in intent.problems))
    return all_children(intent.plan)


def render_documents(documents: Iterable[Any], catalog: Catalog, config: OperatorConfig,
                     namespace: str = "default") -> str:
    out: list[dict[str, Any]] = []
    for doc in documents:
        if doc:
            out += render_children(doc, catalog, config, namespace)
    return yaml.safe_dump_all(out, sort_keys=False)
