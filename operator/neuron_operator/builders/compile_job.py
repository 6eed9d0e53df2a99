"""The compile Job: runs `neuron-runtime compile` once per (artifact key, store), on the target instance type or,
for stacks that compile on CPU, on CPU nodes without holding a Neuron device."""

from __future__ import annotations

from typing import Any

from neuron_runtime import constants as runtime_constants

from .. import constants as C
from ..naming import compile_job_name
from ..plan import ServicePlan
from . import common


PERMANENT_COMPILE_EXIT_CODES = (runtime_constants.EXIT_BAD_SPEC, runtime_constants.EXIT_COMPILE_MEMORY)


def build_compile_job(plan: ServicePlan) -> dict[str, Any]:
    name = compile_job_name(plan.key, plan.store.location)
    labels = {**common.base_labels(plan, C.COMPONENT_COMPILE), C.LABEL_ARTIFACT_KEY: plan.key}
    # Shared by every service with the same compile inputs, so no single instance owns it: the instance label
    # names the first requester only for humans. Owners are added as non-controller references.
    labels.pop(C.LABEL_INSTANCE)
    store_volumes, store_mounts = common.store_volume(plan, read_only=False)
    model_volumes, model_mounts = common.model_volumes(plan)
    where = plan.compile_placement
    if where.on_cpu:
        resources = {section: dict(values) for section, values in where.resources.items()}
        placement = common.cpu_placement(plan, where.node_selector, where.tolerations)
    else:
        resources = common.neuron_resources(plan, where.resources)
        placement = common.placement(plan)
    engine_volumes, engine_mounts = common.engine_cache_volume(plan)
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        **placement,
        "containers": [{
            "name": "compile",
            **common.image_fields(plan),
            "args": ["compile"],
            "env": common.runtime_env(plan, serving=False),
            "resources": resources,
            "volumeMounts": store_mounts + model_mounts + engine_mounts + [
                {"name": "tmp", "mountPath": C.TMP_MOUNT},
                {"name": "compile-cache", "mountPath": C.COMPILE_CACHE_MOUNT},
                {"name": "model-cache", "mountPath": C.MODEL_CACHE_DIR},
            ],
            # The runtime writes its one-line failure reason here; logs are the fallback (e.g. OOM kills).
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "securityContext": common.container_security_context(),
        }],
        # NxDI traces into /tmp/nxd_model and neuronx-cc caches NEFFs: both can reach tens of GiB.
        "volumes": store_volumes + model_volumes + engine_volumes + [
            {"name": "tmp", "emptyDir": {}},
            {"name": "compile-cache", "emptyDir": {}},
            {"name": "model-cache", "emptyDir": {}},
        ],
    }
    job_spec: dict[str, Any] = {
        "backoffLimit": plan.compile_backoff_limit,
        "activeDeadlineSeconds": plan.compile_active_deadline_seconds,
        # The runtime's permanent exit codes fail the Job at once: a retry has the same spec and the same memory
        # limit, so it would only spend the backoff (minutes) before the same Stalled.
        "podFailurePolicy": {"rules": [{"action": "FailJob", "onExitCodes": {
            "containerName": "compile", "operator": "In", "values": list(PERMANENT_COMPILE_EXIT_CODES)}}]},
    }
    if plan.multi_node:
        # One pod per rank, each on its own node of the target type, like the serving group: rank r (the
        # completion index, env JOB_COMPLETION_INDEX) compiles/shards into <key>/rank-<r>/ (runtime contract).
        job_spec.update(completionMode="Indexed", completions=plan.nodes_per_replica,
                        parallelism=plan.nodes_per_replica)
        pod_spec["affinity"] = common.merge_affinity(pod_spec.get("affinity"), {"podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [{
                "labelSelector": {"matchLabels": {"batch.kubernetes.io/job-name": name}},
                "topologyKey": "kubernetes.io/hostname"}]}})
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": plan.namespace,
            "labels": labels,
            "annotations": {
                C.ANNOTATION_ARTIFACT_LOCATION: plan.store.artifact_location(plan.key),
                C.ANNOTATION_COMPILE_SPEC: plan.compile_spec.to_json(),
                C.ANNOTATION_COMPILE_TARGET: where.reason,
            },
            "ownerReferences": [common.owner_reference(plan, controller=False)],
        },
        "spec": {
            **job_spec,
            "template": {
                "metadata": {"labels": {**plan.pod_labels, **labels}, "annotations": dict(plan.pod_annotations)},
                "spec": pod_spec,
            },
        },
    }
