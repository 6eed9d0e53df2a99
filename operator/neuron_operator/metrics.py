"""Prometheus metrics of the operator itself, served on the metrics port from start-up."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from .api.status import Phase

REGISTRY = CollectorRegistry(auto_describe=True)

RECONCILE_DURATION = Histogram(
    "neuron_operator_reconcile_duration_seconds", "Time of one reconcile pass of a NeuronInferenceService.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=REGISTRY)
RECONCILE_ERRORS = Counter(
    "neuron_operator_reconcile_errors_total", "Reconcile passes that ended in an error, by reason.",
    ["reason"], registry=REGISTRY)
COMPILE_JOBS = Counter(
    "neuron_operator_compile_jobs_total", "Compile Jobs by outcome (created, succeeded, failed).",
    ["outcome"], registry=REGISTRY)
SERVICES = Gauge(
    "neuron_operator_services", "NeuronInferenceServices by phase.", ["phase"], registry=REGISTRY)
API_REQUESTS = Counter(
    "neuron_operator_api_requests_total", "Kubernetes API requests made by the reconciler, by verb and status code.",
    ["verb", "code"], registry=REGISTRY)
API_REQUEST_DURATION = Histogram(
    "neuron_operator_api_request_duration_seconds", "Kubernetes API request latency, by verb.", ["verb"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5), registry=REGISTRY)

for _phase in Phase.ALL:
    SERVICES.labels(phase=_phase).set(0)


def observe_api_request(verb: str, kind: str, code: int, seconds: float) -> None:
    API_REQUESTS.labels(verb=verb, code=str(code)).inc()
    API_REQUEST_DURATION.labels(verb=verb).observe(seconds)


def set_phase_counts(counts: dict[str, int]) -> None:
    for phase in Phase.ALL:
        SERVICES.labels(phase=phase).set(counts.get(phase, 0))


def serve(port: int, address: str = "0.0.0.0") -> None:
    start_http_server(port, addr=address, registry=REGISTRY)
