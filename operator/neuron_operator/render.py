"""`neuron-operator render`: the exact child manifests for a NeuronInferenceService file, without a cluster.

Uses the same parse, validation, plan and builders as the running operator, so a GitOps pipeline can review
what an apply will create. The serving workload is rendered as it will look once its artifact is compiled.
"""

from __future__ import annotations

from typing import Any, Iterable

import yaml

from . import constants as C
from .api.spec import InvalidSpecError, parse_spec
from .builders import build_compile_job, build_pod_disruption_budget, build_service, build_serving_deployment
from .builders.multinode import build_group_statefulset, build_headless_service
from .catalog import Catalog
from .config import OperatorConfig
from .plan import plan_for
from .validation import validate

PLACEHOLDER_UID = "00000000-0000-0000-0000-000000000000"  # the real uid is assigned by the API server


class RenderError(Exception):
    pass


def render_children(resource: dict[str, Any], catalog: Catalog, config: OperatorConfig,
                    namespace: str = "default") -> list[dict[str, Any]]:
    if resource.get("apiVersion") != C.GROUP_VERSION or resource.get("kind") != C.KIND:
        raise RenderError(f"not a {C.KIND} ({C.GROUP_VERSION}): {resource.get('apiVersion')}/{resource.get('kind')}")
    meta = resource.get("metadata") or {}
    name = meta.get("name")
    if not name:
        raise RenderError("metadata.name is required")
    try:
        spec = parse_spec(resource.get("spec"))
    except InvalidSpecError as err:
        raise RenderError(f"{name}: " + "; ".join(err.messages)) from None
    problems = validate(spec, catalog, config)
    if problems:
        raise RenderError(f"{name}: " + "; ".join(p.message for p in problems))
    plan = plan_for(name, meta.get("namespace") or namespace, meta.get("uid") or PLACEHOLDER_UID, spec, catalog, config)
    if plan.multi_node:
        workloads = [build_headless_service(plan)] + [build_group_statefulset(plan, g) for g in range(plan.replicas)]
    else:
        workloads = [build_serving_deployment(plan)]
    return [build_compile_job(plan), *workloads, build_service(plan), build_pod_disruption_budget(plan)]


def render_documents(documents: Iterable[Any], catalog: Catalog, config: OperatorConfig,
                     namespace: str = "default") -> str:
    out: list[dict[str, Any]] = []
    for doc in documents:
        if doc:
            out += render_children(doc, catalog, config, namespace)
    return yaml.safe_dump_all(out, sort_keys=False)
