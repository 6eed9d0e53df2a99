"""Stack profiles: every name that belongs to one pinned Neuron + vLLM stack, in one place.

Each profile (one module here) holds its engine's env var names, server flags, config vocabulary, artifact layout
and package pins; the base class (:mod:`neuron_runtime.stacks.base`) holds what every profile states (families,
features, pins, images). Supporting a newer stack means adding one more profile module and registering it below;
the operator reads the registry for validation, per-family defaults and ``neuron-operator stacks``.

Profiles:
  neuron-2.23-vllm-0.7.2        (stacks/neuron_2_23.py) SDK 2.23, NxD Inference 0.3, AWS vLLM fork 0.7.2 (V0)
  neuron-2.32-vllm-neuron-0.24  (stacks/neuron_2_32.py) SDK 2.32, vLLM 0.24.0 + vllm-neuron plugin 0.24.0.1.1.0
"""

from __future__ import annotations

import importlib.metadata
from types import MappingProxyType
from typing import Mapping, Optional, Sequence

from neuron_runtime import constants
from neuron_runtime.errors import SpecError
from neuron_runtime.stacks.base import (
    ENGINE_VLLM_NEURON,
    ENGINE_VLLM_V0_NXDI,
    STATUS_BETA,
    STATUS_END_OF_LIFE,
    Stack,
    StackFeatures,
)
from neuron_runtime.stacks.neuron_2_23 import NEURON_2_23_VLLM_0_7_2, MultiNodeSettings, NxdiStackProfile, ServerFlags
from neuron_runtime.stacks.neuron_2_32 import NEURON_2_32_VLLM_NEURON_0_24, PluginStackProfile

PROFILES: Mapping[str, Stack] = MappingProxyType(
    {p.id: p for p in (NEURON_2_23_VLLM_0_7_2, NEURON_2_32_VLLM_NEURON_0_24)}
)

__all__ = [
    "ENGINE_VLLM_NEURON",
    "ENGINE_VLLM_V0_NXDI",
    "NEURON_2_23_VLLM_0_7_2",
    "NEURON_2_32_VLLM_NEURON_0_24",
    "PROFILES",
    "STATUS_BETA",
    "STATUS_END_OF_LIFE",
    "MultiNodeSettings",
    "NxdiStackProfile",
    "PluginStackProfile",
    "ServerFlags",
    "Stack",
    "StackFeatures",
    "check_installed_stack",
    "get_profile",
    "installed_versions",
    "pin_matches",
    "stack_problems",
    "stacks_for_family",
]


def get_profile(stack_id: str) -> Stack:
    try:
        return PROFILES[stack_id]
    except KeyError:
        raise SpecError(f"unknown runtime stack {stack_id!r}; this runtime supports {sorted(PROFILES)}") from None


def stacks_for_family(family: str) -> list:
    """Ids of the profiles that run on instance family ``family``, in registry order."""
    return [p.id for p in PROFILES.values() if p.supports_family(family)]


def installed_versions(names: Sequence[str]) -> dict:
    """Installed distribution versions (None when absent), via importlib.metadata only: nothing is imported."""
    versions: dict = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _release(version: str) -> str:
    return version.split("+", 1)[0]


def pin_matches(version: str, pin: str) -> bool:
    """The release of ``version`` is ``pin``, or is in it when ``pin`` is a PEP 440 prefix such as ``4.48.*``."""
    if pin.endswith(".*"):
        prefix = pin[:-2].split(".")
        return _release(version).split(".")[: len(prefix)] == prefix
    return _release(version) == pin


def stack_problems(profile: Stack, versions: Mapping[str, Optional[str]], image_stack: Optional[str]) -> list:
    """Why the installed software is not the stack ``profile`` describes; empty when it is."""
    problems = []
    if image_stack and image_stack != profile.id:
        problems.append(f"this image provides stack {image_stack!r}, the spec asks for {profile.id!r}")
    for name, pin in profile.pinned_distributions.items():
        found = versions.get(name)
        if found is None:
            problems.append(f"{name} is not installed (need {pin})")
        elif not pin_matches(found, pin):
            problems.append(f"{name} {found} is installed, stack {profile.id} needs {pin}")
    for name in profile.required_distributions:
        if versions.get(name) is None:
            problems.append(f"{name} is not installed")
    return problems


def check_installed_stack(profile: Stack, env: Mapping[str, str]) -> None:
    """Raise SpecError unless the running image is the stack ``profile`` describes (skippable for tests)."""
    if env.get(constants.ENV_SKIP_STACK_CHECK) == "1":
        return
    names = list(profile.pinned_distributions) + list(profile.required_distributions)
    problems = stack_problems(profile, installed_versions(names), env.get(constants.ENV_IMAGE_STACK))
    if problems:
        raise SpecError("runtime image does not match the requested stack: " + "; ".join(problems))
