"""spec.autoscaling without a cluster: the model and its CEL rule, the two autoscaler builders (golden of the
example), the operator's provider setting and its start-up resolution, the chart values that set it, and the kopf
wiring of the two autoscaler kinds."""

from __future__ import annotations

import pathlib

import pytest
import yaml

from neuron_operator import constants as C
from neuron_operator import handlers
from neuron_operator.api.spec import QUEUE_METRIC, InvalidSpecError, parse_spec
from neuron_operator.builders.autoscaling import (KEDA_HPA_EXCLUDED_LABELS_ANNOTATION, build_autoscaler,
                                                  build_horizontal_pod_autoscaler, build_scaled_object, queue_query)
from neuron_operator.cache import HPA, KINDS, SCALED_OBJECT, ObjectCache
from neuron_operator.catalog import load_catalog
from neuron_operator.children import serving_children
from neuron_operator.config import ConfigError, OperatorConfig
from neuron_operator.plan import plan_for
from neuron_operator.render import render_documents

from loop.fakes import FakeKube
from test_builders import check_golden
from test_chart import env_of, render, render_error
from test_crd import cel_failures

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "llama-autoscaling.yaml"
PROMETHEUS = "http://prometheus-operated.monitoring.svc:9090"
KEDA = OperatorConfig(prometheus_server_address=PROMETHEUS)  # auto, as resolved where KEDA is installed
HPA_CONFIG = OperatorConfig(autoscaling_provider=C.AUTOSCALER_HPA)


def spec(**autoscaling) -> dict:
    return {"model": {"uri": "hf://meta-llama/Llama-3.1-8B-Instruct"}, "instanceType": "trn1.32xlarge",
            "tensorParallelSize": 8, "artifacts": {"pvc": {"claimName": "artifacts"}},
            **({"autoscaling": autoscaling} if autoscaling else {})}


def plan(config: OperatorConfig = KEDA, name: str = "llama", **autoscaling):
    return plan_for(name, "ml", "uid-1", parse_spec(spec(**autoscaling)), load_catalog(), config)


# --- the model --------------------------------------------------------------------------------------------


def test_defaults_and_zero_minimum():
    scaling = parse_spec(spec(maxReplicas=3)).autoscaling
    assert (scaling.min_replicas, scaling.target_queue_depth, scaling.scale_down_stabilization_seconds) == (1, 4, 300)
    assert parse_spec(spec(minReplicas=0, maxReplicas=1)).autoscaling.min_replicas == 0
    assert parse_spec(spec()).autoscaling is None


@pytest.mark.parametrize("fields,complaint", [
    ({"minReplicas": 3, "maxReplicas": 2}, "spec.autoscaling: minReplicas must be at most maxReplicas"),
    ({"minReplicas": 1}, "spec.autoscaling.maxReplicas: Field required"),
    ({"maxReplicas": 0}, "spec.autoscaling.maxReplicas"),
    ({"maxReplicas": 2, "targetQueueDepth": 0}, "spec.autoscaling.targetQueueDepth"),
    ({"maxReplicas": 2, "scaleDownStabilizationSeconds": 3601}, "spec.autoscaling.scaleDownStabilizationSeconds"),
    ({"maxReplicas": 2, "minReplicas": -1}, "spec.autoscaling.minReplicas"),
])
def test_invalid_autoscaling_is_rejected_naming_the_field(fields, complaint):
    with pytest.raises(InvalidSpecError) as err:
        parse_spec(spec(**fields))
    assert any(m.startswith(complaint) for m in err.value.messages), err.value.messages


def test_the_cel_rule_rejects_min_above_max_at_admission():
    assert cel_failures(spec(minReplicas=5, maxReplicas=4)) == [
        "spec.autoscaling.minReplicas: must be at most spec.autoscaling.maxReplicas"]
    assert cel_failures(spec(minReplicas=4, maxReplicas=4)) == []
    assert cel_failures(spec(maxReplicas=1)) == []  # minReplicas defaults to 1 in the schema


# --- builders ---------------------------------------------------------------------------------------------


def test_example_renders_a_scaled_object_where_keda_is_the_provider_golden():
    text = render_documents(yaml.safe_load_all(EXAMPLE.read_text()), load_catalog(), KEDA, "ml")
    docs = list(yaml.safe_load_all(text))
    assert [d["kind"] for d in docs] == ["Job", "Deployment", "Service", "PodDisruptionBudget", "ScaledObject"]
    check_golden("llama-autoscaling-children.yaml", docs)


def test_example_renders_an_hpa_with_the_hpa_provider_or_without_a_prometheus_address():
    for config in (HPA_CONFIG, OperatorConfig()):
        text = render_documents(yaml.safe_load_all(EXAMPLE.read_text()), load_catalog(), config, "ml")
        assert [d["kind"] for d in yaml.safe_load_all(text)][-1] == "HorizontalPodAutoscaler"


def test_the_scaled_object_scales_the_service_on_its_summed_queue():
    obj = build_scaled_object(plan(minReplicas=0, maxReplicas=4, targetQueueDepth=5,
                                   scaleDownStabilizationSeconds=120))
    s = obj["spec"]
    assert s["scaleTargetRef"] == {"apiVersion": C.GROUP_VERSION, "kind": C.KIND, "name": "llama"}
    assert (s["minReplicaCount"], s["maxReplicaCount"], s["cooldownPeriod"]) == (0, 4, 120)
    assert s["advanced"]["horizontalPodAutoscalerConfig"]["behavior"] == {
        "scaleDown": {"stabilizationWindowSeconds": 120}}
    [trigger] = s["triggers"]
    assert trigger["type"] == "prometheus" and trigger["metricType"] == "AverageValue"
    assert trigger["metadata"] == {
        "serverAddress": PROMETHEUS, "threshold": "5",
        "query": 'sum(vllm:num_requests_waiting{namespace="ml",model_name="meta-llama/Llama-3.1-8B-Instruct"})'}
    # KEDA's own HPA does not inherit our labels (managed-by stays keda-operator, our watches skip it).
    excluded = obj["metadata"]["annotations"][KEDA_HPA_EXCLUDED_LABELS_ANNOTATION].split(",")
    assert set(excluded) == set(obj["metadata"]["labels"]) and C.LABEL_MANAGED_BY in excluded


def test_the_query_follows_the_served_model_name_and_escapes_it():
    raw = spec(maxReplicas=2)
    raw["engine"] = {"servedModelName": 'my"model\\x'}
    p = plan_for("llama", "team-a", "u", parse_spec(raw), load_catalog(), KEDA)
    assert queue_query(p) == 'sum(vllm:num_requests_waiting{namespace="team-a",model_name="my\\"model\\\\x"})'


def test_the_hpa_uses_the_per_pod_custom_metric_and_never_goes_below_one():
    hpa = build_horizontal_pod_autoscaler(plan(HPA_CONFIG, minReplicas=0, maxReplicas=3, targetQueueDepth=6,
                                               scaleDownStabilizationSeconds=30))
    s = hpa["spec"]
    assert (s["minReplicas"], s["maxReplicas"]) == (1, 3)
    assert s["metrics"] == [{"type": "Pods", "pods": {"metric": {"name": QUEUE_METRIC},
                                                      "target": {"type": "AverageValue", "averageValue": "6"}}}]
    assert s["behavior"] == {"scaleDown": {"stabilizationWindowSeconds": 30}}
    renamed = OperatorConfig(autoscaling_provider=C.AUTOSCALER_HPA, hpa_metric_name="vllm_num_requests_waiting")
    hpa = build_horizontal_pod_autoscaler(plan(renamed, minReplicas=2, maxReplicas=3))
    assert hpa["spec"]["minReplicas"] == 2
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "vllm_num_requests_waiting"


def test_serving_children_list_the_autoscaler_last_and_only_when_asked():
    assert [m["kind"] for m in serving_children(plan(maxReplicas=2))][-1] == C.SCALED_OBJECT_KIND
    assert build_autoscaler(plan()) is None
    assert C.SCALED_OBJECT_KIND not in [m["kind"] for m in serving_children(plan())]


def test_multi_node_autoscaling_counts_groups():
    raw = spec(maxReplicas=3)
    raw.update(tensorParallelSize=64, nodesPerReplica=2)
    p = plan_for("big", "ml", "u", parse_spec(raw), load_catalog(), HPA_CONFIG)
    kinds = [m["kind"] for m in serving_children(p)]
    assert kinds[-1] == C.HPA_KIND and kinds.count("StatefulSet") == 1  # replicas (groups) default to 1


# --- the operator setting ---------------------------------------------------------------------------------


def test_config_from_env_and_its_errors():
    config = OperatorConfig.from_env({"NEURON_OPERATOR_AUTOSCALING_PROVIDER": "keda",
                                      "NEURON_OPERATOR_PROMETHEUS_SERVER_ADDRESS": PROMETHEUS,
                                      "NEURON_OPERATOR_HPA_METRIC_NAME": "waiting"})
    assert (config.autoscaler, config.prometheus_server_address, config.hpa_metric_name) == (
        "keda", PROMETHEUS, "waiting")
    assert OperatorConfig.from_env({}).autoscaling_provider == "auto"
    with pytest.raises(ConfigError, match="expected one of auto, keda, hpa"):
        OperatorConfig.from_env({"NEURON_OPERATOR_AUTOSCALING_PROVIDER": "kpa"})
    with pytest.raises(ConfigError, match="keda needs the Prometheus address"):
        OperatorConfig(autoscaling_provider="keda")


@pytest.mark.parametrize("config,keda_served,provider", [
    (KEDA, True, "keda"),
    (KEDA, False, "hpa"),
    (OperatorConfig(), True, "hpa"),  # KEDA is there but its trigger would have nothing to query
    (HPA_CONFIG, True, "hpa"),
    (OperatorConfig(autoscaling_provider="keda", prometheus_server_address=PROMETHEUS), True, "keda"),
])
def test_auto_is_resolved_once_from_discovery(config, keda_served, provider):
    resolved, why = config.resolve_autoscaling_provider(keda_served)
    assert resolved.autoscaling_provider == provider and why.startswith(provider)


def test_an_explicit_keda_provider_without_keda_refuses_to_start():
    with pytest.raises(ConfigError, match="not served: install KEDA"):
        OperatorConfig(autoscaling_provider="keda",
                       prometheus_server_address=PROMETHEUS).resolve_autoscaling_provider(False)


def test_start_up_discovery_decides_the_provider_and_what_to_prime():
    kube = FakeKube()
    config, kinds = handlers.discover_autoscaling(kube, KEDA)
    assert config.autoscaling_provider == "keda" and kinds == KINDS
    kube.unserved.add(C.KEDA_API_VERSION)
    config, kinds = handlers.discover_autoscaling(kube, KEDA)
    assert config.autoscaling_provider == "hpa" and SCALED_OBJECT not in kinds and HPA in kinds
    kube.reset_requests()
    handlers.prime_cache(kube, ObjectCache(), config, kinds)
    assert [k for v, k, *_ in kube.requests] == [k[1] for k in KINDS if k != SCALED_OBJECT]  # no LIST that 404s


def test_autoscaler_events_land_in_the_cache_and_enqueue_the_owner(monkeypatch):
    queued: list = []

    class Queue:
        def enqueue(self, key, delay: float = 0.0) -> None:
            queued.append(key)

    state = {"cache": ObjectCache(), "queue": Queue(), "phases": {}}
    monkeypatch.setattr(handlers, "_state", state)
    owner = [{"apiVersion": C.GROUP_VERSION, "kind": C.KIND, "name": "llama", "uid": "u", "controller": True}]
    for kind, event in ((HPA, handlers.hpa_event), (SCALED_OBJECT, handlers.scaled_object_event)):
        body = {"apiVersion": kind[0], "kind": kind[1],
                "metadata": {"name": "llama", "namespace": "ml", "ownerReferences": owner}}
        event(type="ADDED", body=body)
        assert state["cache"].get(kind, "ml", "llama") is not None
        event(type="DELETED", body=body)
        assert state["cache"].get(kind, "ml", "llama") is None
    assert queued == [("ml", "llama")] * 4


# --- the chart --------------------------------------------------------------------------------------------


def test_chart_values_reach_the_operator_config():
    assert not {k for k in env_of(render()) if "AUTOSCALING" in k or "PROMETHEUS" in k or "HPA" in k}
    env = env_of(render({"autoscaling": {"provider": "keda", "keda": {"prometheusServerAddress": PROMETHEUS},
                                         "hpa": {"metricName": "vllm_num_requests_waiting"}}}))
    config = OperatorConfig.from_env(env)
    assert (config.autoscaling_provider, config.prometheus_server_address, config.hpa_metric_name) == (
        "keda", PROMETHEUS, "vllm_num_requests_waiting")


@pytest.mark.parametrize("values,complaint", [
    ({"autoscaling": {"provider": "kpa"}}, "/autoscaling/provider"),
    ({"autoscaling": {"provider": "auto", "keda": {"prometheusServerAddress": "prometheus:9090"}}},
     "/autoscaling/keda/prometheusServerAddress"),
    ({"autoscaling": {"provider": "auto", "hpa": {"metricName": ""}}}, "/autoscaling/hpa/metricName"),
])
def test_chart_schema_rejects_bad_autoscaling_values(values, complaint):
    assert complaint in render_error(values)
