"""Pieces shared by the child builders: labels, owner references, env, volumes and the Neuron placement."""

from __future__ import annotations

import json
from typing import Any, Mapping

from neuron_runtime import vllm_neuron

from .. import constants as C
from ..catalog import InstanceType
from ..plan import ServicePlan


def base_labels(plan: ServicePlan, component: str) -> dict[str, str]:
    return {
        C.LABEL_NAME: C.APP_NAME,
        C.LABEL_INSTANCE: plan.name,
        C.LABEL_COMPONENT: component,
        C.LABEL_MANAGED_BY: C.MANAGED_BY,
    }


def serving_selector(plan: ServicePlan) -> dict[str, str]:
    """Labels that identify this service's serving pods; immutable once a Deployment exists."""
    return {C.LABEL_SERVICE: plan.name, C.LABEL_COMPONENT: C.COMPONENT_SERVING}


def owner_reference(plan: ServicePlan, controller: bool = True) -> dict[str, Any]:
    return {
        "apiVersion": C.GROUP_VERSION,
        "kind": C.KIND,
        "name": plan.name,
        "uid": plan.uid,
        "controller": controller,
        "blockOwnerDeletion": True,
    }


def metadata(plan: ServicePlan, name: str, component: str, extra_labels: dict[str, str] | None = None) -> dict:
    labels = {**base_labels(plan, component), **(extra_labels or {})}
    return {
        "name": name,
        "namespace": plan.namespace,
        "labels": labels,
        "ownerReferences": [owner_reference(plan)],
    }


def runtime_env(plan: ServicePlan, *, serving: bool, leading: list[dict[str, Any]] | None = None
                ) -> list[dict[str, Any]]:
    """The runtime contract. ``leading`` entries (multi-node rank env) come first so later values can refer to
    them with Kubernetes' $(VAR) expansion."""
    env: list[dict[str, Any]] = list(leading or []) + [
        {"name": C.ENV_COMPILE_SPEC, "value": plan.compile_spec.to_json()},
        {"name": C.ENV_ARTIFACT_KEY, "value": plan.key},
        {"name": C.ENV_ARTIFACT_STORE, "value": plan.store.runtime_root},
    ]
    if serving:
        env.append({"name": C.ENV_SERVE_CONFIG, "value": json.dumps(plan.serve_config, sort_keys=True)})
        if plan.store.kind == "s3":
            env.append({"name": C.ENV_LOCAL_ARTIFACTS, "value": C.LOCAL_ARTIFACTS_DIR})
        local_root = C.ARTIFACT_STORE_MOUNT if plan.store.kind == "pvc" else C.LOCAL_ARTIFACTS_DIR
        artifacts = f"{local_root}/{plan.key}"
        if plan.plugin_stack is not None:
            env += _env_list(stack_serve_env(plan, artifacts))
        else:
            if plan.multi_node:  # each rank loads its own shard set (runtime/neuron_runtime: rank-<r> layout)
                artifacts += f"/rank-$({C.ENV_NEURON_RANK_ID})"
            env.append({"name": C.ENV_NEURON_COMPILED_ARTIFACTS, "value": artifacts})
            env.append({"name": C.ENV_VLLM_NEURON_FRAMEWORK, "value": C.VLLM_NEURON_FRAMEWORK_NXDI})
    elif plan.plugin_stack is not None:
        env += _env_list(stack_compile_env(plan))
    if plan.token_secret:
        name, key = plan.token_secret
        env.append({"name": C.ENV_HF_TOKEN, "valueFrom": {"secretKeyRef": {"name": name, "key": key}}})
    env += [
        {"name": C.ENV_POD_NAME, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": C.ENV_POD_NAMESPACE, "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    ]
    # User env last: the names above are the runtime contract, so a user entry with the same name is dropped
    # rather than silently breaking it.
    reserved = {e["name"] for e in env}
    env += [dict(e) for e in plan.env if e.get("name") not in reserved]
    return env


def _env_list(values: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"name": k, "value": v} for k, v in sorted(values.items())]


def stack_serve_env(plan: ServicePlan, artifact_dir: str) -> dict[str, str]:
    """The vllm-neuron serving env, from the runtime's own builder (the runtime applies the same values)."""
    profile = plan.plugin_stack
    assert profile is not None
    return vllm_neuron.serve_env(
        profile, plan.compile_spec, remote_cache=artifact_dir, cache_root=C.ENGINE_CACHE_DIR,
        prometheus_dir=vllm_neuron.prometheus_dir(C.ENGINE_CACHE_DIR),
        startup_timeout_seconds=plan.startup_timeout_seconds)


def stack_compile_env(plan: ServicePlan) -> dict[str, str]:
    """The vllm-neuron compile env: CPU-compile mode and target, one compile worker per requested CPU, compile
    timeouts as long as the Job's deadline. The remote cache is the runtime's own staging directory, so it is not
    known here and the runtime sets it."""
    profile = plan.plugin_stack
    assert profile is not None
    cpu = str(plan.compile_placement.resources.get("requests", {}).get("cpu", "1"))
    return vllm_neuron.compile_env(
        profile, plan.compile_spec, on_cpu=plan.compile_placement.on_cpu, remote_cache=None,
        cache_root=C.ENGINE_CACHE_DIR, workers=vllm_neuron.workers_for_cpu(cpu),
        timeout_seconds=plan.compile_active_deadline_seconds)


def neuron_resources(plan: ServicePlan, base: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """User/default cpu+memory plus the derived Neuron devices (and EFA for multi-node): requests == limits for
    extended resources, as the scheduler requires."""
    out = {section: dict(values) for section, values in base.items()}
    extended = {C.NEURON_TAINT_KEY: str(plan.devices_per_pod)}
    if plan.efa_per_pod:
        extended["vpc.amazonaws.com/efa"] = str(plan.efa_per_pod)
    out.setdefault("limits", {}).update(extended)
    out.setdefault("requests", {}).update(extended)
    return out


def lnc_node_affinity(instance: InstanceType) -> dict[str, Any] | None:
    """Nodes whose LNC matches ``instance``'s (compiled graphs run only at their compile-time LNC): labelled with
    it, or, for the type's default, also unlabelled. None where the type has one LNC only."""
    if not instance.lnc_configurable:
        return None
    if instance.lnc == instance.default_lnc:
        others = [str(v) for v in instance.lnc_options if v != instance.lnc]
        expression = {"key": C.LNC_NODE_LABEL, "operator": "NotIn", "values": others}  # NotIn matches unlabelled
    else:
        expression = {"key": C.LNC_NODE_LABEL, "operator": "In", "values": [str(instance.lnc)]}
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [expression]}]}}}


def merge_affinity(*parts: Mapping[str, Any] | None) -> dict[str, Any]:
    """One pod affinity from disjoint parts (node affinity, pod (anti-)affinity); a later part never replaces an
    earlier kind silently."""
    out: dict[str, Any] = {}
    for part in parts:
        for kind, value in (part or {}).items():
            if kind in out:
                raise ValueError(f"affinity {kind} given twice")
            out[kind] = value
    return out


def placement(plan: ServicePlan) -> dict[str, Any]:
    """nodeSelector on the instance type, the LNC node affinity, the Neuron taint toleration, and the user's
    additions."""
    tolerations = [{"key": C.NEURON_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}]
    tolerations += [dict(t) for t in plan.tolerations if t != tolerations[0]]
    spec: dict[str, Any] = {
        "nodeSelector": {**plan.node_selector, C.INSTANCE_TYPE_LABEL: plan.instance.name},
        "tolerations": tolerations,
    }
    lnc = lnc_node_affinity(plan.instance)
    if lnc:
        spec["affinity"] = lnc
    if plan.scheduler_name:
        spec["schedulerName"] = plan.scheduler_name
    if plan.service_account_name:
        spec["serviceAccountName"] = plan.service_account_name
    if plan.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": n} for n in plan.image_pull_secrets]
    return spec


def cpu_placement(plan: ServicePlan, node_selector: Mapping[str, str],
                  tolerations: tuple[Mapping[str, Any], ...]) -> dict[str, Any]:
    """A compile pod on the CPU compile pool: the pool's selector and tolerations only. No Neuron toleration, so
    it can never land on (and hold) a Neuron node; the user's serving node selector is for the serving pods."""
    spec: dict[str, Any] = {}
    if node_selector:
        spec["nodeSelector"] = dict(node_selector)
    if tolerations:
        spec["tolerations"] = [dict(t) for t in tolerations]
    # No schedulerName: spec.runtime.schedulerName is for placing Neuron devices (e.g. the Neuron scheduler
    # extension), which a CPU compile does not hold.
    if plan.service_account_name:
        spec["serviceAccountName"] = plan.service_account_name
    if plan.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": n} for n in plan.image_pull_secrets]
    return spec


def engine_cache_volume(plan: ServicePlan) -> tuple[list[dict], list[dict]]:
    """vllm-neuron stacks: the engine's local NEFF cache and Prometheus directory (VLLM_CACHE_ROOT), an emptyDir."""
    if plan.plugin_stack is None:
        return [], []
    return ([{"name": "engine-cache", "emptyDir": {}}],
            [{"name": "engine-cache", "mountPath": C.ENGINE_CACHE_DIR}])


def store_volume(plan: ServicePlan, *, read_only: bool) -> tuple[list[dict], list[dict]]:
    """(volumes, mounts) for the artifact store; S3 stores need a local directory instead of a claim."""
    if plan.store.kind == "pvc":
        mount = {"name": "artifacts", "mountPath": C.ARTIFACT_STORE_MOUNT, "readOnly": read_only}
        if plan.store.sub_path:
            mount["subPath"] = plan.store.sub_path
        volume = {"name": "artifacts", "persistentVolumeClaim": {"claimName": plan.store.claim_name, "readOnly": read_only}}
        return [volume], [mount]
    if read_only:  # serving from S3: the runtime downloads <key>/ here first
        return ([{"name": "local-artifacts", "emptyDir": {}}],
                [{"name": "local-artifacts", "mountPath": C.LOCAL_ARTIFACTS_DIR}])
    return [], []


def model_volumes(plan: ServicePlan) -> tuple[list[dict], list[dict]]:
    volumes, mounts = [], []
    for i, claim in enumerate(plan.model_pvc_claims):
        name = f"model-{i}"
        volumes.append({"name": name, "persistentVolumeClaim": {"claimName": claim, "readOnly": True}})
        mounts.append({"name": name, "mountPath": f"{C.MODELS_MOUNT_ROOT}/{claim}", "readOnly": True})
    return volumes, mounts


def container_security_context() -> dict[str, Any]:
    # The Neuron devices come from the device plugin; nothing here needs privilege escalation or extra
    # capabilities. The root filesystem stays writable: NxDI/neuronx-cc write caches under $HOME and /var/tmp.
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"}}


def image_fields(plan: ServicePlan) -> dict[str, Any]:
    out: dict[str, Any] = {"image": plan.image}
    if plan.image_pull_policy:
        out["imagePullPolicy"] = plan.image_pull_policy
    return out
