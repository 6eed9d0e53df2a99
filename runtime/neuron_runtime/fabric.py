"""The inter-node fabric check of multi-node serving: before the rendezvous, every member asks libfabric whether the
provider its engine is told to use (FI_PROVIDER, ``efa`` unless the pod says otherwise) exists in this pod, and
ends with EXIT_FABRIC_UNAVAILABLE (7) and a message naming what to check when it does not. Without it, a pod that
got no EFA device, or an image without the EFA user space, forms the group and then fails deep inside the Neuron
runtime's collectives set-up.

:func:`fabric_problem` is pure (the command's exit status and output in, the reason out); :func:`run_fi_info` is the
thin runner; :func:`check_fabric` puts them together and is the only part skippable, and only in test mode.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Callable, List, Mapping, Optional

from neuron_runtime import testhooks
from neuron_runtime.errors import FabricUnavailable

log = logging.getLogger(__name__)

FI_INFO = "fi_info"
# Where the EFA installer puts libfabric and its tools on Ubuntu (aws-neuron-sdk v2.23.0
# frameworks/torch/torch-neuronx/setup-trn1-multi-node-execution.rst "Containers": /opt/amazon/efa/lib), searched
# after PATH because the DLC's PATH does not include it.
EFA_BIN_DIR = "/opt/amazon/efa/bin"
CHECK_TIMEOUT_SECONDS = 30.0
EFA = "efa"


@dataclass(frozen=True)
class ProbeResult:
    """What ``fi_info -p <provider>`` did. ``returncode`` None: it could not be run (``error`` says why)."""

    command: List[str]
    returncode: Optional[int]
    stdout: str = ""
    stderr: str = ""
    error: str = ""


def listed_providers(stdout: str) -> List[str]:
    """Provider names in fi_info's short output: one ``provider: <name>`` line per fabric interface, layered
    providers written ``a;b`` (ofiwg/libfabric util/info.c print_short_info)."""
    names: List[str] = []
    for line in stdout.splitlines():
        key, _, value = line.strip().partition(":")
        if key == "provider":
            names += [n.strip() for n in value.split(";") if n.strip() and n.strip() not in names]
    return names


def fabric_problem(provider: str, result: ProbeResult) -> Optional[str]:
    """Why libfabric cannot give this pod ``provider``; None when it can. Pure.

    fi_info exits 0 after listing what fi_getinfo found, and when fi_getinfo fails it prints ``fi_getinfo: <ret>``
    to stderr and exits -ret, e.g. 61 (FI_ENODATA) when no provider matches (util/info.c run/main)."""
    command = " ".join(result.command)
    if result.returncode is None:
        return f"`{command}` could not run ({result.error})"
    if result.returncode != 0:
        detail = " ".join((result.stderr or result.stdout).split())[:200]
        return f"`{command}` exited {result.returncode}" + (f" ({detail})" if detail else "")
    if provider not in listed_providers(result.stdout):
        return f"`{command}` listed no {provider} provider"
    return None


def failure_message(provider: str, problem: str, who: str) -> str:
    """The termination message: what is wrong and what to check."""
    if provider == EFA:
        return (
            f"EFA unavailable on {who}: {problem}. Multi-node serving needs EFA in every pod of the group: check that "
            "the EFA device plugin runs on this node and advertises vpc.amazonaws.com/efa, that the pod requests "
            "vpc.amazonaws.com/efa, that the runtime image has the EFA user space (/opt/amazon/efa, installed by "
            "Dockerfile.neuron), and that the nodes' security group allows all traffic between the group's nodes"
        )
    return (
        f"libfabric provider {provider!r} (FI_PROVIDER) unavailable on {who}: {problem}. Check the pod's FI_PROVIDER "
        "and the network devices the node gives the pod"
    )


def fi_info_command(provider: str, env: Mapping[str, str]) -> List[str]:
    """``fi_info -p <provider>``, with fi_info found on the engine's PATH or in the EFA install directory."""
    found = shutil.which(FI_INFO, path=env.get("PATH", os.defpath))
    if found is None and os.access(os.path.join(EFA_BIN_DIR, FI_INFO), os.X_OK):
        found = os.path.join(EFA_BIN_DIR, FI_INFO)
    return [found or FI_INFO, "-p", provider]


def run_fi_info(provider: str, env: Mapping[str, str], timeout: float = CHECK_TIMEOUT_SECONDS) -> ProbeResult:
    """Run fi_info with the engine's environment (FI_* and LD_LIBRARY_PATH decide what libfabric finds)."""
    command = fi_info_command(provider, env)
    try:
        done = subprocess.run(command, env=dict(env), capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        return ProbeResult(command, None, error=f"no {FI_INFO} on PATH or in {EFA_BIN_DIR}: the image has no EFA "
                                                 "user space")  # fmt: skip
    except subprocess.TimeoutExpired:
        return ProbeResult(command, None, error=f"no answer within {timeout:g}s")
    except OSError as e:
        return ProbeResult(command, None, error=str(e))
    return ProbeResult(command, done.returncode, done.stdout, done.stderr)


def check_fabric(
    engine_env: Mapping[str, str],
    who: str,
    *,
    runner: Callable[[str, Mapping[str, str]], ProbeResult] = run_fi_info,
) -> None:
    """FabricUnavailable unless libfabric offers the engine's FI_PROVIDER (default efa) in this pod."""
    if testhooks.fabric_check_skipped(engine_env):
        return
    provider = engine_env.get("FI_PROVIDER") or EFA
    if not re.fullmatch(r"[\w;]+", provider):
        # A list or an exclusion ("efa,tcp", "^tcp") lets libfabric choose: there is no single provider to ask for.
        log.warning("fabric check skipped: FI_PROVIDER=%r names no single provider", provider)
        return
    result = runner(provider, engine_env)
    problem = fabric_problem(provider, result)
    if problem:
        raise FabricUnavailable(failure_message(provider, problem, who))
    log.info("fabric check: libfabric offers the %s provider (%s)", provider, " ".join(result.command))
