"""Multi-node serving: one StatefulSet per replica group plus a headless Service for peer discovery.

Pod 0 of a group is the leader (OpenAI server); every pod learns its rank from the pod-index label Kubernetes
sets on StatefulSet pods, and everything else (world size, leader and peer DNS names, Neuron multi-node env) is
known when the manifest is built, so no pod ever calls the API. Groups are updated with OnDelete: the operator
replaces a whole group at a time (a group with mixed revisions cannot run), see gang.py.
"""

from __future__ import annotations

from typing import Any

from .. import constants as C
from ..naming import group_name, headless_service_name
from ..plan import ServicePlan
from . import common
from .serving import serving_pod_template


def group_labels(plan: ServicePlan, group: int) -> dict[str, str]:
    return {C.LABEL_GROUP: group_name(plan.name, group), C.LABEL_GROUP_INDEX: str(group)}


def peer_address(plan: ServicePlan, group: int, rank: int) -> str:
    return f"{group_name(plan.name, group)}-{rank}.{headless_service_name(plan.name)}.{plan.namespace}.svc.cluster.local"


def multinode_env(plan: ServicePlan, group: int) -> list[dict[str, Any]]:
    """Rank env for one group. NEURON_RANK_ID/NEURON_OPERATOR_RANK come from the pod-index label."""
    leader = peer_address(plan, group, 0)
    rank_ref = {"valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{C.LABEL_POD_INDEX}']"}}}
    peers = ",".join(peer_address(plan, group, r) for r in range(plan.nodes_per_replica))
    env: list[dict[str, Any]] = [
        {"name": C.ENV_RANK, **rank_ref},
        {"name": C.ENV_NEURON_RANK_ID, **rank_ref},
        {"name": C.ENV_WORLD_SIZE, "value": str(plan.nodes_per_replica)},
        {"name": C.ENV_GROUP_INDEX, "value": str(group)},
        {"name": C.ENV_LEADER_ADDRESS, "value": leader},
        {"name": C.ENV_PEER_ADDRESSES, "value": peers},
        {"name": C.ENV_RENDEZVOUS_TIMEOUT, "value": str(C.DEFAULT_RENDEZVOUS_TIMEOUT_SECONDS)},
        {"name": C.NEURON_MULTI_NODE_ENV_FLAG, "value": "true"},
        {"name": C.ENV_NEURON_WORLD_SIZE, "value": str(plan.nodes_per_replica)},
        {"name": C.ENV_MASTER_ADDR, "value": leader},
        {"name": C.ENV_MASTER_PORT, "value": str(C.MASTER_PORT)},
        {"name": C.ENV_NEURON_RT_ROOT_COMM_ID, "value": f"{leader}:{C.NEURON_RT_ROOT_COMM_PORT}"},
        {"name": C.ENV_NEURON_LOCAL_TP, "value": str(plan.tp_per_node)},
    ]
    env += [{"name": k, "value": v} for k, v in C.EFA_ENV.items()]
    return env


def group_affinity(plan: ServicePlan, group_selector: dict[str, str]) -> dict[str, Any]:
    """One pod per node within a group; optionally all of a group inside one topology domain (e.g. a node group
    or placement group label) so NeuronLink/EFA traffic stays local."""
    term = {"labelSelector": {"matchLabels": dict(group_selector)}, "topologyKey": "kubernetes.io/hostname"}
    affinity: dict[str, Any] = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}
    if plan.topology_key:
        affinity["podAffinity"] = {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": dict(group_selector)}, "topologyKey": plan.topology_key}]}
    return affinity


def build_group_statefulset(plan: ServicePlan, group: int) -> dict[str, Any]:
    name = group_name(plan.name, group)
    labels = group_labels(plan, group)
    selector = {**common.serving_selector(plan), **labels}
    meta = common.metadata(plan, name, C.COMPONENT_SERVING, {C.LABEL_SERVICE: plan.name, C.LABEL_ARTIFACT_KEY: plan.key,
                                                            **labels})
    meta["annotations"] = {
        C.ANNOTATION_COMPILE_SPEC: plan.compile_spec.to_json(),
        C.ANNOTATION_ARTIFACT_LOCATION: plan.store.artifact_location(plan.key),
    }
    template = serving_pod_template(plan, extra_labels=labels, leading_env=multinode_env(plan, group),
                                    affinity=group_affinity(plan, selector))
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": meta,
        "spec": {
            "replicas": plan.nodes_per_replica,
            "serviceName": headless_service_name(plan.name),
            # All ranks start together: the engine cannot start until every peer is up anyway.
            "podManagementPolicy": "Parallel",
            # The operator replaces whole groups (gang.py); a rolling update would mix revisions inside a group.
            "updateStrategy": {"type": "OnDelete"},
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": selector},
            "template": template,
        },
    }


def build_headless_service(plan: ServicePlan) -> dict[str, Any]:
    """Stable per-pod DNS (<pod>.<svc>-peers) for rank discovery, published before pods are ready: peers must
    find each other to become ready at all."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": common.metadata(plan, headless_service_name(plan.name), C.COMPONENT_SERVING,
                                    {C.LABEL_SERVICE: plan.name}),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": common.serving_selector(plan),
            "ports": [
                {"name": C.HTTP_PORT_NAME, "port": C.HTTP_PORT, "targetPort": C.HTTP_PORT, "protocol": "TCP"},
                {"name": "rendezvous", "port": C.RENDEZVOUS_PORT, "targetPort": C.RENDEZVOUS_PORT, "protocol": "TCP"},
                {"name": "gloo", "port": C.MASTER_PORT, "targetPort": C.MASTER_PORT, "protocol": "TCP"},
                {"name": "neuron-rt", "port": C.NEURON_RT_ROOT_COMM_PORT, "targetPort": C.NEURON_RT_ROOT_COMM_PORT,
                 "protocol": "TCP"},
            ],
        },
    }
