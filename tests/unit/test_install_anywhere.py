"""`make` works with a distribution's "externally managed" (PEP 668) Python: it builds its own venv from it.

The test runs the Makefile's own `venv` target with PYTHON pointing at the system interpreter and VENV at a
temporary directory, then runs both console scripts from that venv. It needs such an interpreter (Debian's and
Ubuntu's /usr/bin/python3 are) and PyPI or a warm pip cache; it skips when the machine has no PEP 668 Python.
"""

from __future__ import annotations

import glob
import os
import pathlib
import subprocess

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
PROBE = (
    "import os, sys, sysconfig; "
    "print(sys.version_info >= (3, 10) and os.path.isfile(os.path.join(sysconfig.get_path('stdlib'), "
    "'EXTERNALLY-MANAGED')), sys.base_prefix)"
)


def externally_managed_python():
    """(path, base prefix) of the first system Python >= 3.10 that declares itself externally managed."""
    for candidate in ["/usr/bin/python3", *sorted(glob.glob("/usr/bin/python3.1[0-9]"), reverse=True)]:
        if not os.access(candidate, os.X_OK):
            continue
        out = subprocess.run([candidate, "-c", PROBE], capture_output=True, text=True, timeout=30)
        managed, _, prefix = out.stdout.strip().partition(" ")
        if out.returncode == 0 and managed == "True":
            return candidate, prefix
    return None


def make_venv(python: str, venv: pathlib.Path) -> subprocess.CompletedProcess:
    # A clean environment for the inner make: no variables of an outer `make test` or of the venv running pytest.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS", "PYTHON", "VIRTUAL_ENV")}
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), "venv", f"VENV={venv}", f"PYTHON={python}"],
        env=env, capture_output=True, text=True, timeout=600,
    )


def test_make_builds_a_working_venv_from_an_externally_managed_python(tmp_path):
    found = externally_managed_python()
    if found is None:
        pytest.skip("no externally managed (PEP 668) Python >= 3.10 in /usr/bin on this machine")
    python, base_prefix = found

    # The premise: installing into this interpreter is refused, which is what broke `make demo` before.
    if subprocess.run([python, "-m", "pip", "--version"], capture_output=True).returncode == 0:
        refused = subprocess.run([python, "-m", "pip", "install", "--dry-run", "--no-index", "neuron-operator"],
                                 capture_output=True, text=True, timeout=120)
        assert refused.returncode != 0 and "externally-managed-environment" in refused.stdout + refused.stderr

    venv = tmp_path / "venv"
    first = make_venv(python, venv)
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"creating {venv} from {python}" in first.stdout and "installing" in first.stdout
    bin_dir = venv / "bin"
    prefix = subprocess.run([bin_dir / "python", "-c", "import sys; print(sys.base_prefix)"],
                            capture_output=True, text=True, check=True).stdout.strip()
    assert prefix == base_prefix  # built from the system interpreter, not from the one running pytest

    runtime_help = subprocess.run([bin_dir / "neuron-runtime", "--help"], capture_output=True, text=True, timeout=60)
    assert runtime_help.returncode == 0, runtime_help.stderr
    assert "compile" in runtime_help.stdout and "serve" in runtime_help.stdout
    crds = subprocess.run([bin_dir / "neuron-operator", "crds"], capture_output=True, text=True, timeout=120)
    assert crds.returncode == 0, crds.stderr
    crd = yaml.safe_load(crds.stdout)
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == "neuroninferenceservices.inference.neuron-operator.io"

    # The stamp: a second run with pyproject.toml unchanged neither recreates the venv nor reinstalls.
    second = make_venv(python, venv)
    assert second.returncode == 0, second.stdout + second.stderr
    assert second.stdout == ""
