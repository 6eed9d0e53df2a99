"""The Grafana dashboard shipped with the chart (charts/neuron-operator/dashboards/neuron-operator.json): every query
parses as PromQL and names only metrics that exist, with labels they have: the operator's own (read from its
registry, so renaming one in metrics.py fails here) and vLLM's and vllm-neuron's (the checked list below, each with
its source). Its ConfigMap carries the file unchanged, and the PodMonitor sets the label the dashboard groups by.
"""

from __future__ import annotations

import json
import pathlib
import re

import pytest
from prometheus_client.metrics import MetricWrapperBase

from neuron_operator import metrics

import promql_subset as promql  # tests/unit is on sys.path (rootdir-relative test modules, no package)
from test_chart import one, render

ROOT = pathlib.Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "charts" / "neuron-operator" / "dashboards" / "neuron-operator.json"

# Where the names below were read (counters are exposed with "_total" by prometheus_client; a histogram as
# _bucket{le}, _sum and _count):
VLLM_V1 = "vLLM 0.24.0 vllm/v1/metrics/loggers.py (labels model_name, engine)"
VLLM_FORK = "AWS vLLM fork branch neuron-2.23-vllm-v0.7.2 vllm/engine/metrics.py (labels model_name)"
VLLM_NEURON = ("vllm-neuron 0.24 vllm_neuron/metrics.py, documented in aws-neuron-sdk "
               "vllm-neuron/docs/design/vllm/metrics.md (labels model_name[, bucket_name])")
V1_LABELS = ("model_name", "engine")

# name -> (type, labels, where). Both stacks' engines: the 0.24 plugin stack runs vLLM V1, the 2.23 stack the fork.
EXTERNAL_METRICS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "vllm:num_requests_running": ("gauge", V1_LABELS, f"{VLLM_V1} l.457; {VLLM_FORK} l.59"),
    "vllm:num_requests_waiting": ("gauge", V1_LABELS, f"{VLLM_V1} l.467; {VLLM_FORK} l.64"),
    "vllm:kv_cache_usage_perc": ("gauge", V1_LABELS, f"{VLLM_V1} l.525"),
    "vllm:gpu_cache_usage_perc": ("gauge", ("model_name",), f"{VLLM_FORK} l.85 (V1 renamed it kv_cache_usage_perc)"),
    "vllm:request_success": ("counter", V1_LABELS + ("finished_reason",), f"{VLLM_V1} l.678; {VLLM_FORK} l.236"),
    "vllm:prompt_tokens": ("counter", V1_LABELS, f"{VLLM_V1} l.634; {VLLM_FORK} l.112"),
    "vllm:generation_tokens": ("counter", V1_LABELS, f"{VLLM_V1} l.668; {VLLM_FORK} l.116"),
    "vllm:time_to_first_token_seconds": ("histogram", V1_LABELS, f"{VLLM_V1} l.760; {VLLM_FORK} l.134"),
    "vllm:inter_token_latency_seconds": ("histogram", V1_LABELS, f"{VLLM_V1} l.793"),
    "vllm:time_per_output_token_seconds": ("histogram", ("model_name",),
                                           f"{VLLM_FORK} l.142 (V1: inter_token_latency_seconds)"),
    "vllm:e2e_request_latency_seconds": ("histogram", V1_LABELS, f"{VLLM_V1} l.876; {VLLM_FORK} l.157"),
    "vllm:request_queue_time_seconds": ("histogram", V1_LABELS, f"{VLLM_V1} l.886; {VLLM_FORK} l.162"),
    "vllm:request_prompt_tokens": ("histogram", V1_LABELS, f"{VLLM_V1} l.694; {VLLM_FORK} l.205"),
    "vllm:request_generation_tokens": ("histogram", V1_LABELS, f"{VLLM_V1} l.704; {VLLM_FORK} l.212"),
    "vllm_neuron:startup_time_seconds": ("gauge", ("model_name",), VLLM_NEURON),
    "vllm_neuron:model_load_time_seconds": ("gauge", ("model_name",), VLLM_NEURON),
    "vllm_neuron:model_load_size_bytes": ("gauge", ("model_name",), VLLM_NEURON),
    "vllm_neuron:compilation_time_seconds": ("gauge", ("model_name", "bucket_name"), VLLM_NEURON),
    "vllm_neuron:neff_execution_count": ("counter", ("model_name", "bucket_name"), VLLM_NEURON),
}
# Labels Prometheus adds to every scraped series (the Prometheus Operator's PodMonitor/ServiceMonitor targets),
# plus "nis", which the chart's PodMonitor copies from the serving pod's service label.
TARGET_LABELS = {"namespace", "pod", "container", "endpoint", "job", "instance", "service", "nis"}
GRAFANA_BUILTINS = {"__rate_interval", "__interval", "__range"}

# What the dashboard must show (issue 10): a panel that lost one of these fails here.
REQUIRED = {
    "neuron_operator_reconcile_duration_seconds_count", "neuron_operator_reconcile_duration_seconds_bucket",
    "neuron_operator_reconcile_errors_total", "neuron_operator_compile_jobs_total",
    "neuron_operator_compile_duration_seconds_bucket", "neuron_operator_api_requests_total",
    "neuron_operator_services", "vllm:request_success_total", "vllm:num_requests_waiting", "vllm:num_requests_running",
    "vllm:time_to_first_token_seconds_bucket", "vllm:inter_token_latency_seconds_bucket",
    "vllm:e2e_request_latency_seconds_bucket", "vllm:prompt_tokens_total", "vllm:generation_tokens_total",
    "vllm_neuron:startup_time_seconds", "vllm_neuron:compilation_time_seconds", "vllm_neuron:model_load_time_seconds",
}


def exposed(name: str, type_: str, labels: tuple[str, ...]) -> dict[str, set[str]]:
    """The series names a metric family is scraped as, each with its labels."""
    base = set(labels)
    if type_ == "counter":
        return {name.removesuffix("_total") + "_total": base}
    if type_ == "histogram":
        return {f"{name}_bucket": base | {"le"}, f"{name}_sum": base, f"{name}_count": base}
    return {name: base}


def operator_series() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for metric in vars(metrics).values():
        if isinstance(metric, MetricWrapperBase):
            out.update(exposed(metric._name, metric._type, tuple(metric._labelnames)))
    return out


def known_series() -> dict[str, set[str]]:
    out = operator_series()
    for name, (type_, labels, _) in EXTERNAL_METRICS.items():
        out.update(exposed(name, type_, labels))
    return out


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def panels(board: dict) -> list[dict]:
    out = []
    for panel in board["panels"]:
        out.append(panel)
        out += panel.get("panels", [])  # a collapsed row keeps its panels inside
    return out


def queries(board: dict) -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in panels(board) for t in p.get("targets", [])]


EXPRESSIONS = queries(dashboard())


# --- the checker itself: it must reject what a broken dashboard would contain ---------------------------------

@pytest.mark.parametrize("expr", [
    "sum(rate(x_total[5m])",  # unbalanced
    "sum(rate(x_total[5m])))",
    "rate(x_total)",  # rate of an instant vector
    "rate(sum(x_total)[5m])",  # a range on an aggregation without the subquery form
    "histogram_quantile(0.9)",  # arity
    "histgram_quantile(0.9, x_bucket)",  # unknown function
    "sum by (le (x)",
    'x{a="b" c="d"}',  # missing comma
    "x{a=b}",  # unquoted value
    "x +",
    "sum(x) y",
])
def test_the_checker_rejects_broken_promql(expr: str):
    with pytest.raises(promql.PromQLError):
        promql.parse(expr)


def test_the_checker_reads_what_an_expression_references():
    refs = promql.parse('histogram_quantile(0.95, sum by (le, verb) (rate(m_bucket{a=~"$ns"}[$__rate_interval]))) '
                        'or on (verb) vector(0)')
    assert refs.metrics == {"m_bucket"} and refs.labels == {"le", "verb", "a"}
    assert refs.functions == {"histogram_quantile", "sum", "rate", "vector"}
    assert refs.variables == {"ns", "__rate_interval"}


def test_exposed_names_follow_prometheus_client():
    assert exposed("a_total", "counter", ()) == {"a_total": set()} == exposed("a", "counter", ())
    assert set(exposed("h_seconds", "histogram", ("x",))) == {"h_seconds_bucket", "h_seconds_sum", "h_seconds_count"}
    # The operator's registry as prometheus_client exposes it (what a scrape shows).
    from prometheus_client import generate_latest

    metrics.COMPILE_DURATION.labels(outcome="succeeded")
    text = generate_latest(metrics.REGISTRY).decode()
    scraped = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    assert scraped - {n for n in scraped if n.endswith("_created")} <= set(operator_series())


# --- the dashboard -------------------------------------------------------------------------------------------

def test_every_query_parses_and_names_only_known_metrics_and_labels():
    known = known_series()
    assert EXPRESSIONS
    for title, expr in EXPRESSIONS:
        refs = promql.parse(expr)
        unknown = refs.metrics - set(known)
        assert not unknown, f"panel {title!r} queries metrics no source exposes: {sorted(unknown)}\n{expr}"
        available = set().union(*(known[m] for m in refs.metrics)) | TARGET_LABELS
        assert refs.labels <= available, (f"panel {title!r} uses labels {sorted(refs.labels - available)} that "
                                          f"none of {sorted(refs.metrics)} has\n{expr}")


def test_the_dashboard_shows_what_issue_10_asks_for_and_every_operator_metric():
    used = set().union(*(promql.parse(expr).metrics for _, expr in EXPRESSIONS))
    assert REQUIRED <= used, sorted(REQUIRED - used)
    families = {re.sub(r"_(bucket|sum|count)$", "", name) for name in operator_series()}
    graphed = {re.sub(r"_(bucket|sum|count)$", "", name) for name in used}
    assert families <= graphed, f"operator metrics without a panel: {sorted(families - graphed)}"


def test_every_variable_used_is_defined_and_variable_queries_are_valid():
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    used = set().union(*(promql.parse(expr).variables for _, expr in EXPRESSIONS))
    assert used <= set(variables) | GRAFANA_BUILTINS, sorted(used - set(variables) - GRAFANA_BUILTINS)
    known = known_series()
    for name, var in variables.items():
        if var["type"] != "query":
            continue
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        match = re.fullmatch(r"label_values\((.+),\s*([A-Za-z_][A-Za-z0-9_]*)\)", query)
        assert match, f"variable {name}: {query}"
        refs = promql.parse(match.group(1))
        assert refs.metrics <= set(known) and match.group(2) in known[next(iter(refs.metrics))] | TARGET_LABELS
        assert refs.variables <= set(variables) - {name}


def test_panels_are_well_formed():
    board = dashboard()
    assert board["uid"] == "neuron-operator" and board["schemaVersion"] >= 36 and board["title"]
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: set[tuple[int, int]] = set()
    for panel in panels(board):
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        mine = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not cells & mine, f"panel {panel['title']!r} overlaps another"
        cells |= mine
        if panel["type"] == "row":
            continue
        assert panel["targets"] and panel.get("description"), panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]


def test_the_chart_ships_the_dashboard_in_a_configmap_for_the_grafana_sidecar():
    docs = render({"metrics": {"dashboards": {"enabled": True, "namespace": "monitoring",
                                              "annotations": {"grafana_folder": "Neuron"}}}})
    configmap = one(docs, "ConfigMap", "nrn-neuron-operator-dashboards")
    assert configmap["metadata"]["namespace"] == "monitoring"
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "Neuron"}
    assert json.loads(configmap["data"]["neuron-operator.json"]) == dashboard()
    assert not [d for d in render() if d["kind"] == "ConfigMap"]  # off by default


def test_the_pod_monitor_sets_the_label_the_dashboard_groups_by():
    [monitor] = [d for d in render({"metrics": {"podMonitor": {"enabled": True}}}) if d["kind"] == "PodMonitor"]
    relabel = {r.get("targetLabel") for r in monitor["spec"]["podMetricsEndpoints"][0]["relabelings"]}
    assert "nis" in relabel
    used = set().union(*(promql.parse(expr).labels for _, expr in EXPRESSIONS))
    assert "nis" in used
