"""Single-node serving: the Deployment running `neuron-runtime serve`, its Service and PodDisruptionBudget."""

from __future__ import annotations

import math
from typing import Any

from .. import constants as C
from ..naming import serving_name
from ..plan import ServicePlan, default_resources, merge_resources
from . import common

PROBE_PERIOD_SECONDS = 10
SHM_SIZE_LIMIT = "16Gi"  # vLLM/torch use /dev/shm for IPC between the API server and the engine process


def probes(plan: ServicePlan) -> dict[str, Any]:
    """Startup allows the whole model load (weights + NEFF load + warmup: minutes to tens of minutes, reference
    §2/§3.4); once started, readiness reacts within ~30s and liveness restarts a wedged engine after ~1 min."""
    def http() -> dict[str, Any]:
        return {"httpGet": {"path": C.HEALTH_PATH, "port": C.HTTP_PORT_NAME}}

    return {
        "startupProbe": {**http(), "periodSeconds": PROBE_PERIOD_SECONDS, "timeoutSeconds": 5,
                         "failureThreshold": max(1, math.ceil(plan.startup_timeout_seconds / PROBE_PERIOD_SECONDS))},
        "readinessProbe": {**http(), "periodSeconds": PROBE_PERIOD_SECONDS, "timeoutSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {**http(), "periodSeconds": 15, "timeoutSeconds": 10, "failureThreshold": 4},
    }


def serving_pod_template(plan: ServicePlan, extra_labels: dict[str, str] | None = None,
                         leading_env: list[dict[str, Any]] | None = None,
                         affinity: dict[str, Any] | None = None) -> dict[str, Any]:
    labels = {
        **plan.pod_labels,
        **common.base_labels(plan, C.COMPONENT_SERVING),
        **common.serving_selector(plan),
        C.LABEL_ARTIFACT_KEY: plan.key,
        **(extra_labels or {}),
    }
    store_volumes, store_mounts = common.store_volume(plan, read_only=True)
    model_volumes, model_mounts = common.model_volumes(plan)
    engine_volumes, engine_mounts = common.engine_cache_volume(plan)
    resources = common.neuron_resources(
        plan, merge_resources(default_resources(plan.instance, plan.devices_per_pod), plan.resources)
    )
    container = {
        "name": "engine",
        **common.image_fields(plan),
        "args": ["serve"],
        "env": common.runtime_env(plan, serving=True, leading=leading_env),
        "ports": [{"name": C.HTTP_PORT_NAME, "containerPort": C.HTTP_PORT, "protocol": "TCP"}],
        "resources": resources,
        **probes(plan),
        "volumeMounts": store_mounts + model_mounts + engine_mounts + [
            {"name": "dshm", "mountPath": C.SHM_MOUNT},
            {"name": "tmp", "mountPath": C.TMP_MOUNT},
            {"name": "model-cache", "mountPath": C.MODEL_CACHE_DIR},
        ],
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": common.container_security_context(),
    }
    spec: dict[str, Any] = {**common.placement(plan)}
    merged = common.merge_affinity(spec.get("affinity"), affinity)
    if merged:
        spec["affinity"] = merged
    return {
        "metadata": {"labels": labels, "annotations": dict(plan.pod_annotations)},
        "spec": {
            **spec,
            "containers": [container],
            # vLLM drains in-flight requests on SIGTERM; give long generations time to finish.
            "terminationGracePeriodSeconds": 60,
            "volumes": store_volumes + model_volumes + engine_volumes + [
                {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": SHM_SIZE_LIMIT}},
                {"name": "tmp", "emptyDir": {}},
                # hf:// and s3:// models (tokenizer, config, weights for LoRA/draft) are downloaded here.
                {"name": "model-cache", "emptyDir": {}},
            ],
        },
    }


def rolling_update(plan: ServicePlan) -> dict[str, Any]:
    """Never hold more Neuron devices than the replicas already do unless the user allows surge: a surge pod
    would need a whole extra device set that is usually not free (and would sit Pending)."""
    if plan.allow_surge:
        return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}


def build_serving_deployment(plan: ServicePlan) -> dict[str, Any]:
    meta = common.metadata(plan, serving_name(plan.name), C.COMPONENT_SERVING,
                           {C.LABEL_SERVICE: plan.name, C.LABEL_ARTIFACT_KEY: plan.key})
    meta["annotations"] = {
        C.ANNOTATION_COMPILE_SPEC: plan.compile_spec.to_json(),
        C.ANNOTATION_ARTIFACT_LOCATION: plan.store.artifact_location(plan.key),
    }
    if plan.lent_to_compile:
        meta["annotations"][C.ANNOTATION_LENT_TO_COMPILE] = plan.lent_to_compile
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": plan.replicas,
            "selector": {"matchLabels": common.serving_selector(plan)},
            "strategy": rolling_update(plan),
            "revisionHistoryLimit": 3,
            # Report a stuck rollout only after the startup budget plus scheduling slack has passed.
            "progressDeadlineSeconds": plan.startup_timeout_seconds + 600,
            "template": serving_pod_template(plan),
        },
    }


def leader_selector(plan: ServicePlan) -> dict[str, str]:
    selector = common.serving_selector(plan)
    if plan.multi_node:
        selector[C.LABEL_POD_INDEX] = C.LEADER_POD_INDEX  # only leaders (ordinal 0) run the OpenAI server
    return selector


def build_service(plan: ServicePlan) -> dict[str, Any]:
    """The OpenAI-compatible endpoint: http://<name>.<namespace>.svc:8000/v1."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": common.metadata(plan, serving_name(plan.name), C.COMPONENT_SERVING, {C.LABEL_SERVICE: plan.name}),
        "spec": {
            "type": "ClusterIP",
            "selector": leader_selector(plan),
            "ports": [{"name": C.HTTP_PORT_NAME, "port": C.HTTP_PORT, "targetPort": C.HTTP_PORT_NAME, "protocol": "TCP"}],
        },
    }


def build_pod_disruption_budget(plan: ServicePlan) -> dict[str, Any]:
    """Voluntary disruptions (node drains, upgrades) take at most one serving pod (or group) at a time."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": common.metadata(plan, serving_name(plan.name), C.COMPONENT_SERVING, {C.LABEL_SERVICE: plan.name}),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": common.serving_selector(plan)}},
    }


def endpoint_url(plan: ServicePlan) -> str:
    return f"http://{serving_name(plan.name)}.{plan.namespace}.svc.cluster.local:{C.HTTP_PORT}/v1"
