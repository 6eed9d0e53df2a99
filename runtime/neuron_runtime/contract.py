"""Reads and checks what the operator hands the runtime through the environment (see constants).

Everything here fails with SpecError (exit 2): a malformed spec or a key the runtime cannot reproduce means the
operator and the image disagree, and no retry can fix that.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Tuple

from neuron_runtime import constants
from neuron_runtime.compile_spec import CompileSpec, compile_key
from neuron_runtime.errors import SpecError
from neuron_runtime.stacks import Stack, get_profile


@dataclass(frozen=True)
class Contract:
    spec: CompileSpec
    key: str
    store: str  # local directory or s3://bucket/prefix
    profile: Stack


DEFAULT_STARTUP_TIMEOUT_SECONDS = 1800  # the operator's default spec.runtime.startupTimeoutSeconds


@dataclass(frozen=True)
class ServeConfig:
    """Serving-only settings: none of them is a compile input, so none is in the key."""

    port: int = constants.DEFAULT_SERVING_PORT
    served_model_name: Optional[str] = None
    extra_args: Tuple[str, ...] = field(default_factory=tuple)
    enable_lora: bool = False
    max_loras: Optional[int] = None
    # spec.runtime.startupTimeoutSeconds: the engine's own start-up waits follow the pod's startup probe budget.
    startup_timeout_seconds: int = DEFAULT_STARTUP_TIMEOUT_SECONDS

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ServeConfig":
        known = {"port", "served_model_name", "extra_args", "enable_lora", "max_loras", "startup_timeout_seconds"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SpecError(f"{constants.ENV_SERVE_CONFIG} has unknown fields {unknown}")
        port = data.get("port", constants.DEFAULT_SERVING_PORT)
        max_loras = data.get("max_loras")
        extra = data.get("extra_args") or []
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            raise SpecError(f"{constants.ENV_SERVE_CONFIG}.port must be a TCP port, got {port!r}")
        if max_loras is not None and (not isinstance(max_loras, int) or isinstance(max_loras, bool) or max_loras < 1):
            raise SpecError(f"{constants.ENV_SERVE_CONFIG}.max_loras must be a positive integer, got {max_loras!r}")
        if not isinstance(extra, list) or not all(isinstance(a, str) for a in extra):
            raise SpecError(f"{constants.ENV_SERVE_CONFIG}.extra_args must be a list of strings")
        startup = data.get("startup_timeout_seconds", DEFAULT_STARTUP_TIMEOUT_SECONDS)
        if not isinstance(startup, int) or isinstance(startup, bool) or startup < 1:
            raise SpecError(f"{constants.ENV_SERVE_CONFIG}.startup_timeout_seconds must be a positive integer, "
                            f"got {startup!r}")
        return cls(
            port=port,
            served_model_name=data.get("served_model_name") or None,
            extra_args=tuple(extra),
            enable_lora=bool(data.get("enable_lora", False)),
            max_loras=max_loras,
            startup_timeout_seconds=startup,
        )


def _required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise SpecError(f"environment variable {name} is not set; the operator sets it on runtime pods")
    return value


def parse_spec(text: str) -> CompileSpec:
    try:
        return CompileSpec.from_json(text)
    except (ValueError, TypeError, AttributeError) as e:  # bad JSON, missing/unknown fields, wrong shapes
        raise SpecError(f"{constants.ENV_COMPILE_SPEC} is not a valid compile spec: {e}") from None


def read_contract(env: Mapping[str, str]) -> Contract:
    """Spec, expected key (recomputed and compared) and store root, for both compile and serve."""
    spec = parse_spec(_required(env, constants.ENV_COMPILE_SPEC))
    expected = _required(env, constants.ENV_ARTIFACT_KEY)
    actual = compile_key(spec)
    if actual != expected:
        raise SpecError(
            f"artifact key mismatch: the operator expects {expected} but this runtime computes {actual} from the "
            f"same spec; the operator and the runtime image disagree on compile_key (version skew?)"
        )
    store = _required(env, constants.ENV_ARTIFACT_STORE)
    if not (store.startswith("s3://") or store.startswith("/")):
        raise SpecError(f"{constants.ENV_ARTIFACT_STORE} must be an absolute path or s3://bucket/prefix, got {store!r}")
    return Contract(spec=spec, key=actual, store=store.rstrip("/") or "/", profile=get_profile(spec.stack))


def read_serve_config(env: Mapping[str, str]) -> ServeConfig:
    text = env.get(constants.ENV_SERVE_CONFIG, "").strip()
    if not text:
        return ServeConfig()
    try:
        data = json.loads(text)
    except ValueError as e:
        raise SpecError(f"{constants.ENV_SERVE_CONFIG} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{constants.ENV_SERVE_CONFIG} must be a JSON object")
    return ServeConfig.from_dict(data)


def local_artifacts_dir(env: Mapping[str, str]) -> str:
    return env.get(constants.ENV_LOCAL_ARTIFACTS) or constants.DEFAULT_LOCAL_ARTIFACTS
