"""The autoscaler of spec.autoscaling: a KEDA ScaledObject or an autoscaling/v2 HorizontalPodAutoscaler, both
targeting the NeuronInferenceService's scale subresource on the engine's queue of waiting requests.

Either one writes the service's spec.replicas through /scale; the operator only carries spec.replicas on to the
workload (a Deployment's replicas, or the number of group StatefulSets), so it never competes with the autoscaler.
"""

from __future__ import annotations

from typing import Any, Optional

from .. import constants as C
from ..api.spec import QUEUE_METRIC
from ..naming import serving_name
from ..plan import AutoscalingPlan, ServicePlan
from . import common

# apiVersion of each autoscaler kind the operator makes (to delete one whose provider is no longer configured).
AUTOSCALER_API_VERSIONS = {C.SCALED_OBJECT_KIND: C.KEDA_API_VERSION, C.HPA_KIND: C.HPA_API_VERSION}

# KEDA copies a ScaledObject's labels onto the HPA it makes (keda controllers/keda/hpa.go) unless listed here: that
# HPA is KEDA's (it keeps its managed-by: keda-operator) and stays out of the operator's watches.
KEDA_HPA_EXCLUDED_LABELS_ANNOTATION = "scaledobject.keda.sh/hpa-excluded-labels"

# How often KEDA queries Prometheus (its default, stated so the manifest says what it does).
KEDA_POLLING_SECONDS = 30


def autoscaler_kind(provider: str) -> tuple[str, str]:
    """(apiVersion, kind) of the autoscaler a provider makes."""
    if provider == C.AUTOSCALER_KEDA:
        return C.KEDA_API_VERSION, C.SCALED_OBJECT_KIND
    return C.HPA_API_VERSION, C.HPA_KIND


def scale_target_ref(plan: ServicePlan) -> dict[str, str]:
    """The service itself (its scale subresource), never the Deployment: the operator derives the workload."""
    return {"apiVersion": C.GROUP_VERSION, "kind": C.KIND, "name": plan.name}


def _promql_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def queue_query(plan: ServicePlan) -> str:
    """Requests waiting across the service's engines, as Prometheus holds vLLM's gauge: only leaders run the
    OpenAI server, so multi-node workers add nothing. Matched by namespace and vLLM's own model_name label."""
    scaling = _scaling(plan)
    return (f"sum({QUEUE_METRIC}{{namespace={_promql_string(plan.namespace)},"
            f"model_name={_promql_string(scaling.served_model_name)}}})")


def scale_down_behavior(scaling: AutoscalingPlan) -> dict[str, Any]:
    return {"scaleDown": {"stabilizationWindowSeconds": scaling.scale_down_stabilization_seconds}}


def build_scaled_object(plan: ServicePlan) -> dict[str, Any]:
    """KEDA: a Prometheus trigger on the summed queue (AverageValue: KEDA's HPA then asks for
    ceil(waiting / targetQueueDepth) replicas), and KEDA itself scales to and from minReplicas 0."""
    scaling = _scaling(plan)
    meta = common.metadata(plan, serving_name(plan.name), C.COMPONENT_SERVING, {C.LABEL_SERVICE: plan.name})
    meta["annotations"] = {KEDA_HPA_EXCLUDED_LABELS_ANNOTATION: ",".join(sorted(meta["labels"]))}
    return {
        "apiVersion": C.KEDA_API_VERSION,
        "kind": C.SCALED_OBJECT_KIND,
        "metadata": meta,
        "spec": {
            "scaleTargetRef": scale_target_ref(plan),
            "minReplicaCount": scaling.min_replicas,
            "maxReplicaCount": scaling.max_replicas,
            "pollingInterval": KEDA_POLLING_SECONDS,
            # Scale to zero only after the queue stayed empty this long, and not before a new object is that old.
            "cooldownPeriod": scaling.scale_down_stabilization_seconds,
            "initialCooldownPeriod": scaling.scale_down_stabilization_seconds,
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": scale_down_behavior(scaling)}},
            "triggers": [{
                "type": "prometheus",
                "metricType": "AverageValue",
                "metadata": {
                    "serverAddress": scaling.prometheus_server_address,
                    "query": queue_query(plan),
                    "threshold": str(scaling.target_queue_depth),
                },
            }],
        },
    }


def build_horizontal_pod_autoscaler(plan: ServicePlan) -> dict[str, Any]:
    """HPA: the queue gauge per serving pod from the custom metrics API (type Pods, e.g. prometheus-adapter). The
    pods are the scale subresource's status.selector, leaders only, so one group counts once. With a Pods metric
    an HPA cannot go below 1 replica (the API server allows minReplicas 0 only with an Object or External metric:
    without pods there is no per-pod value to scale up on), so minReplicas 0 means 1."""
    scaling = _scaling(plan)
    return {
        "apiVersion": C.HPA_API_VERSION,
        "kind": C.HPA_KIND,
        "metadata": common.metadata(plan, serving_name(plan.name), C.COMPONENT_SERVING, {C.LABEL_SERVICE: plan.name}),
        "spec": {
            "scaleTargetRef": scale_target_ref(plan),
            "minReplicas": max(1, scaling.min_replicas),
            "maxReplicas": scaling.max_replicas,
            "metrics": [{
                "type": "Pods",
                "pods": {
                    "metric": {"name": scaling.metric_name},
                    "target": {"type": "AverageValue", "averageValue": str(scaling.target_queue_depth)},
                },
            }],
            "behavior": scale_down_behavior(scaling),
        },
    }


def build_autoscaler(plan: ServicePlan) -> Optional[dict[str, Any]]:
    """The service's autoscaler for the configured provider, or None without spec.autoscaling."""
    if plan.autoscaling is None:
        return None
    if plan.autoscaling.provider == C.AUTOSCALER_KEDA:
        return build_scaled_object(plan)
    return build_horizontal_pod_autoscaler(plan)


def _scaling(plan: ServicePlan) -> AutoscalingPlan:
    if plan.autoscaling is None:
        raise ValueError(f"{plan.name}: spec.autoscaling is not set")
    return plan.autoscaling
