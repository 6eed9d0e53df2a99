"""Prometheus metrics of the operator itself, served on the metrics port from start-up."""

from __future__ import annotations

from typing import Optional

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
# Compiles take minutes to hours (a 405B model on trn1 well over one); the last bucket is the default Job deadline.
COMPILE_DURATION = Histogram(
    "neuron_operator_compile_duration_seconds",
    "Duration of finished compile Jobs (start to completion or failure), by outcome (succeeded, failed).",
    ["outcome"], buckets=(30, 60, 120, 300, 600, 900, 1800, 2700, 3600, 5400, 7200, 10800, 14400),
    registry=REGISTRY)
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


def observe_compile_finished(outcome: str, duration_seconds: Optional[float]) -> None:
    """One finished compile Job: counted by outcome, and its duration observed when the Job reports one."""
    COMPILE_JOBS.labels(outcome=outcome).inc()
    if duration_seconds is not None:
        COMPILE_DURATION.labels(outcome=outcome).observe(duration_seconds)


def set_phase_counts(counts: dict[str, int]) -> None:
    for phase in Phase.ALL:
        SERVICES.labels(phase=phase).set(counts.get(phase, 0))


def serve(port: int, address: str) -> None:
    start_http_server(port, addr=address, registry=REGISTRY)
