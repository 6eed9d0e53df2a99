"""Pure builders: ServicePlan -> child manifests (plain dicts). No I/O, no mutation of inputs."""

from .compile_job import build_compile_job
from .serving import build_pod_disruption_budget, build_service, build_serving_deployment

__all__ = [
    "build_compile_job",
    "build_serving_deployment",
    "build_service",
    "build_pod_disruption_budget",
]
