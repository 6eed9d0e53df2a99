"""Operator-wide settings, read once from the environment (the Helm chart sets them)."""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from typing import Optional

DEFAULT_RUNTIME_IMAGE = "public.ecr.aws/neuron-operator/neuron-runtime:0.1.0-neuron2.23"
# The stack profile baked into the default runtime image; part of every compile key (artifacts are
# SDK-version specific: neuron-runtime.md §3.3).
DEFAULT_STACK = "neuron-2.23-vllm-0.7.2"


@dataclass(frozen=True)
class OperatorConfig:
    runtime_image: str = DEFAULT_RUNTIME_IMAGE
    stack: str = DEFAULT_STACK
    # Default artifact store when a service names none: "pvc://claim[/subpath]" or "s3://bucket/prefix".
    default_artifact_store: Optional[str] = None
    # Compile Job: retries of the pod (the Job controller backs off 10s, 20s, 40s ...) and a hard deadline.
    compile_backoff_limit: int = 2
    compile_active_deadline_seconds: int = 4 * 3600
    # Watched namespaces: names or kopf-style globs ("team-*"), "!pattern" excludes; empty: all namespaces.
    namespaces: tuple[str, ...] = field(default_factory=tuple)
    metrics_port: int = 8080

    @classmethod
    def from_env(cls, env: Optional[dict] = None) -> "OperatorConfig":
        env = os.environ if env is None else env
        namespaces = tuple(n for n in env.get("NEURON_OPERATOR_NAMESPACES", "").replace(",", " ").split() if n)
        return cls(
            runtime_image=env.get("NEURON_OPERATOR_RUNTIME_IMAGE", DEFAULT_RUNTIME_IMAGE),
            stack=env.get("NEURON_OPERATOR_STACK", DEFAULT_STACK),
            default_artifact_store=env.get("NEURON_OPERATOR_DEFAULT_ARTIFACT_STORE") or None,
            compile_backoff_limit=int(env.get("NEURON_OPERATOR_COMPILE_BACKOFF_LIMIT", "2")),
            compile_active_deadline_seconds=int(env.get("NEURON_OPERATOR_COMPILE_DEADLINE_SECONDS", str(4 * 3600))),
            namespaces=namespaces,
            metrics_port=int(env.get("NEURON_OPERATOR_METRICS_PORT", "8080")),
        )


def has_namespace_patterns(namespaces: tuple[str, ...]) -> bool:
    return any(ch in ns for ns in namespaces for ch in "*?[!")


def namespace_watched(namespace: str, patterns: tuple[str, ...]) -> bool:
    """kopf's rule: included by any positive pattern (or all, if there is none) and excluded by any "!pattern"."""
    positive = [p for p in patterns if not p.startswith("!")]
    negative = [p[1:] for p in patterns if p.startswith("!")]
    included = not positive or any(fnmatch.fnmatchcase(namespace, p) for p in positive)
    return included and not any(fnmatch.fnmatchcase(namespace, p) for p in negative)
