"""Operator-wide settings, read once from the environment (the Helm chart sets them): the one typed object for
every default the operator applies to a service that does not set it itself."""

from __future__ import annotations

import fnmatch
import json
import os
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Mapping, Optional

from neuron_runtime.stacks import NEURON_2_23_VLLM_0_7_2, NEURON_2_32_VLLM_NEURON_0_24, PROFILES

from . import constants as C
from .api.spec import QUEUE_METRIC

# The stack a service gets when spec.runtime.stack is unset, per instance family. trn2 stays on the seed stack so
# an operator upgrade never moves a running trn2 service to another stack (a new compile key, a recompile and a
# different engine under the same spec); new trn2 services opt in with spec.runtime.stack or the Helm value.
# trn3 has only the vllm-neuron stack.
DEFAULT_STACKS: Mapping[str, str] = MappingProxyType({
    "inf2": NEURON_2_23_VLLM_0_7_2.id,
    "trn1": NEURON_2_23_VLLM_0_7_2.id,
    "trn2": NEURON_2_23_VLLM_0_7_2.id,
    "trn3": NEURON_2_32_VLLM_NEURON_0_24.id,
})

# Environment of the operator process (set by charts/neuron-operator/templates/deployment.yaml).
ENV_NAMESPACES = "NEURON_OPERATOR_NAMESPACES"
ENV_DEFAULT_STACKS = "NEURON_OPERATOR_DEFAULT_STACKS"  # JSON {family: stack id}, merged over DEFAULT_STACKS
ENV_RUNTIME_IMAGES = "NEURON_OPERATOR_RUNTIME_IMAGES"  # JSON {stack id: image}, over each stack's default image
ENV_DEFAULT_ARTIFACT_STORE = "NEURON_OPERATOR_DEFAULT_ARTIFACT_STORE"
ENV_COMPILE_BACKOFF_LIMIT = "NEURON_OPERATOR_COMPILE_BACKOFF_LIMIT"
ENV_COMPILE_DEADLINE_SECONDS = "NEURON_OPERATOR_COMPILE_DEADLINE_SECONDS"
ENV_COMPILE_NODE_SELECTOR = "NEURON_OPERATOR_COMPILE_NODE_SELECTOR"  # JSON {label: value} of the CPU compile pool
ENV_COMPILE_TOLERATIONS = "NEURON_OPERATOR_COMPILE_TOLERATIONS"  # JSON [toleration] of the CPU compile pool
ENV_METRICS_PORT = "NEURON_OPERATOR_METRICS_PORT"
ENV_METRICS_ADDRESS = "NEURON_OPERATOR_METRICS_ADDRESS"  # listen address of /metrics; 0.0.0.0 in a pod
ENV_AUTOSCALING_PROVIDER = "NEURON_OPERATOR_AUTOSCALING_PROVIDER"  # auto | keda | hpa
ENV_PROMETHEUS_SERVER_ADDRESS = "NEURON_OPERATOR_PROMETHEUS_SERVER_ADDRESS"  # KEDA's Prometheus trigger queries it
ENV_HPA_METRIC_NAME = "NEURON_OPERATOR_HPA_METRIC_NAME"  # the queue gauge as the custom metrics API names it

AUTOSCALING_PROVIDERS = (C.AUTOSCALER_AUTO, C.AUTOSCALER_KEDA, C.AUTOSCALER_HPA)


class ConfigError(ValueError):
    """The operator's own configuration is invalid: it refuses to start rather than reconcile with it."""


@dataclass(frozen=True)
class OperatorConfig:
    # Stack per instance family when a service sets none (spec.runtime.stack).
    default_stacks: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_STACKS))
    # Runtime image per stack id, over the stack's own default image.
    runtime_images: Mapping[str, str] = field(default_factory=dict)
    # Default artifact store when a service names none: "pvc://claim[/subpath]" or "s3://bucket/prefix".
    default_artifact_store: Optional[str] = None
    # Compile Job: retries of the pod (the Job controller backs off 10s, 20s, 40s ...) and a hard deadline.
    compile_backoff_limit: int = 2
    compile_active_deadline_seconds: int = 4 * 3600
    # Where CPU compiles run (stacks that compile on CPU): a node pool's labels and the tolerations of its taints.
    # Empty: any untainted node with room (Neuron nodes are tainted, so never those).
    compile_node_selector: Mapping[str, str] = field(default_factory=dict)
    compile_tolerations: tuple[Mapping[str, Any], ...] = ()
    # Watched namespaces: names or kopf-style globs ("team-*"), "!pattern" excludes; empty: all namespaces.
    namespaces: tuple[str, ...] = field(default_factory=tuple)
    metrics_port: int = 8080
    # All interfaces in a pod (Prometheus scrapes the pod IP); the demo and the tests bind 127.0.0.1.
    metrics_address: str = "0.0.0.0"
    # Which autoscaler spec.autoscaling makes: keda (ScaledObject), hpa (HorizontalPodAutoscaler), or auto, which
    # the running operator resolves once at start-up (resolve_autoscaling_provider).
    autoscaling_provider: str = C.AUTOSCALER_AUTO
    # Prometheus that KEDA's trigger queries, e.g. http://prometheus-operated.monitoring.svc:9090.
    prometheus_server_address: Optional[str] = None
    # The per-pod metric the HPA asks the custom metrics API for (what prometheus-adapter is configured to serve).
    hpa_metric_name: str = QUEUE_METRIC

    def __post_init__(self) -> None:
        if self.autoscaling_provider not in AUTOSCALING_PROVIDERS:
            raise ConfigError(f"autoscaling provider {self.autoscaling_provider!r}: expected one of "
                              f"{', '.join(AUTOSCALING_PROVIDERS)}")
        if self.autoscaling_provider == C.AUTOSCALER_KEDA and not self.prometheus_server_address:
            raise ConfigError("autoscaling provider keda needs the Prometheus address its trigger queries "
                              f"({ENV_PROMETHEUS_SERVER_ADDRESS}; Helm autoscaling.keda.prometheusServerAddress)")
        for family, stack_id in self.default_stacks.items():
            profile = PROFILES.get(stack_id)
            if profile is None:
                raise ConfigError(f"default stack for {family}: unknown stack {stack_id!r}; known: {sorted(PROFILES)}")
            if not profile.supports_family(family):
                raise ConfigError(f"default stack for {family}: {stack_id} supports only {', '.join(profile.families)}")
        unknown = sorted(set(self.runtime_images) - set(PROFILES))
        if unknown:
            raise ConfigError(f"runtime images for unknown stacks {unknown}; known: {sorted(PROFILES)}")

    @property
    def autoscaler(self) -> str:
        """The autoscaler kind services get: keda or hpa. auto not resolved against a cluster (render) assumes KEDA
        is installed where a Prometheus address is configured, as the start-up resolution would find it."""
        if self.autoscaling_provider == C.AUTOSCALER_AUTO:
            return C.AUTOSCALER_KEDA if self.prometheus_server_address else C.AUTOSCALER_HPA
        return self.autoscaling_provider

    def resolve_autoscaling_provider(self, keda_served: bool) -> tuple["OperatorConfig", str]:
        """auto -> keda when KEDA's ScaledObject API is served and a Prometheus address is configured (its trigger
        cannot work without one), else hpa; an explicit choice stays. Returns the config and why, for the log."""
        if self.autoscaling_provider == C.AUTOSCALER_KEDA and not keda_served:
            raise ConfigError(f"autoscaling provider keda, but {C.KEDA_API_VERSION} {C.SCALED_OBJECT_PLURAL} is not "
                              "served: install KEDA, or set the provider to auto or hpa")
        if self.autoscaling_provider != C.AUTOSCALER_AUTO:
            return self, f"{self.autoscaling_provider} (configured)"
        if keda_served and self.prometheus_server_address:
            return replace(self, autoscaling_provider=C.AUTOSCALER_KEDA), "keda (auto: KEDA's ScaledObject API is served)"
        why = ("no Prometheus address is configured for KEDA's trigger" if keda_served
               else f"{C.KEDA_API_VERSION} {C.SCALED_OBJECT_PLURAL} is not served")
        return replace(self, autoscaling_provider=C.AUTOSCALER_HPA), f"hpa (auto: {why})"

    def default_stack(self, family: str) -> Optional[str]:
        return self.default_stacks.get(family)

    def image_for(self, stack_id: str) -> str:
        return self.runtime_images.get(stack_id) or PROFILES[stack_id].default_image

    @classmethod
    def from_env(cls, env: Optional[Mapping[str, str]] = None) -> "OperatorConfig":
        env = os.environ if env is None else env
        namespaces = tuple(n for n in env.get(ENV_NAMESPACES, "").replace(",", " ").split() if n)
        return cls(
            default_stacks={**DEFAULT_STACKS, **_json_env(env, ENV_DEFAULT_STACKS, dict)},
            runtime_images=_json_env(env, ENV_RUNTIME_IMAGES, dict),
            default_artifact_store=env.get(ENV_DEFAULT_ARTIFACT_STORE) or None,
            compile_backoff_limit=int(env.get(ENV_COMPILE_BACKOFF_LIMIT, "2")),
            compile_active_deadline_seconds=int(env.get(ENV_COMPILE_DEADLINE_SECONDS, str(4 * 3600))),
            compile_node_selector=_json_env(env, ENV_COMPILE_NODE_SELECTOR, dict),
            compile_tolerations=tuple(_json_env(env, ENV_COMPILE_TOLERATIONS, list)),
            namespaces=namespaces,
            metrics_port=int(env.get(ENV_METRICS_PORT, "8080")),
            metrics_address=env.get(ENV_METRICS_ADDRESS, "").strip() or "0.0.0.0",
            autoscaling_provider=env.get(ENV_AUTOSCALING_PROVIDER, "").strip() or C.AUTOSCALER_AUTO,
            prometheus_server_address=env.get(ENV_PROMETHEUS_SERVER_ADDRESS, "").strip() or None,
            hpa_metric_name=env.get(ENV_HPA_METRIC_NAME, "").strip() or QUEUE_METRIC,
        )


def _json_env(env: Mapping[str, str], name: str, kind: type) -> Any:
    text = env.get(name, "").strip()
    if not text:
        return kind()
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{name} is not valid JSON: {exc}") from None
    if not isinstance(value, kind):
        raise ConfigError(f"{name} must be a JSON {'object' if kind is dict else 'array'}, got {text[:80]!r}")
    return value


def has_namespace_patterns(namespaces: tuple[str, ...]) -> bool:
    return any(ch in ns for ns in namespaces for ch in "*?[!")


def namespace_watched(namespace: str, patterns: tuple[str, ...]) -> bool:
    """kopf's rule: included by any positive pattern (or all, if there is none) and excluded by any "!pattern"."""
    positive = [p for p in patterns if not p.startswith("!")]
    negative = [p[1:] for p in patterns if p.startswith("!")]
    included = not positive or any(fnmatch.fnmatchcase(namespace, p) for p in positive)
    return included and not any(fnmatch.fnmatchcase(namespace, p) for p in negative)
