"""The runtime must run on the Neuron DLCs' Pythons (3.10 for the 2.23 stack, 3.13 for vllm-neuron) with only the
standard library at import time.

Checks: every module parses with feature_version=(3, 10); no 3.11+ standard-library names; nothing removed from the
standard library by 3.13; module-level imports are stdlib or neuron_runtime; lazy imports are limited to the known
Neuron/AWS/HF packages; nothing imports the operator. When real Python 3.10 and 3.13 interpreters are on this
machine, the CLI also runs under them, for both stacks.
"""

from __future__ import annotations

import ast
import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import neuron_runtime

PACKAGE_DIR = Path(neuron_runtime.__file__).parent
MODULES = sorted(PACKAGE_DIR.rglob("*.py"))
# Imported lazily, inside the functions that need them, and only in the runtime image.
LAZY_IMPORTS = {"boto3", "huggingface_hub", "neuronx_distributed_inference", "transformers", "vllm",
                "libtorch_neuronx_lite"}
# Standard-library names that first appeared in Python 3.11 or later.
NEW_MODULES = {"tomllib", "wsgiref.types"}
NEW_NAMES = {
    "typing": {"Self", "LiteralString", "Never", "assert_never", "assert_type", "reveal_type", "Required",
               "NotRequired", "TypeVarTuple", "Unpack", "dataclass_transform", "override"},
    "datetime": {"UTC"},
    "enum": {"StrEnum", "ReprEnum", "verify", "member", "nonmember", "global_enum"},
    "asyncio": {"TaskGroup", "timeout", "Runner"},
    "contextlib": {"chdir"},
    "hashlib": {"file_digest"},
    "operator": {"call"},
}  # fmt: skip
NEW_BUILTINS = {"ExceptionGroup", "BaseExceptionGroup"}
# Standard-library modules removed by Python 3.13 (PEP 594 "dead batteries", and lib2to3).
REMOVED_IN_313 = {"aifc", "audioop", "cgi", "cgitb", "chunk", "crypt", "imghdr", "lib2to3", "mailcap", "msilib",
                  "nis", "nntplib", "ossaudiodev", "pipes", "sndhdr", "spwd", "sunau", "telnetlib", "uu", "xdrlib"}


def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path), feature_version=(3, 10))


def test_modules_found():
    names = {p.relative_to(PACKAGE_DIR).as_posix() for p in MODULES}
    assert {"cli.py", "stacks/__init__.py", "stacks/neuron_2_23.py", "stacks/neuron_2_32.py", "neuron_config.py",
            "artifacts.py", "compile.py", "serve.py"} <= names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.relative_to(PACKAGE_DIR).as_posix())
def test_parses_as_python_3_10(path):
    parse(path)


def test_the_syntax_check_can_fail():
    with pytest.raises(SyntaxError):
        ast.parse("try:\n    pass\nexcept* ValueError:\n    pass\n", feature_version=(3, 10))


def python_3_11_names(tree: ast.AST) -> list:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name in NEW_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module in NEW_MODULES:
                found.append(node.module)
            found += [f"{node.module}.{a.name}" for a in node.names if a.name in NEW_NAMES.get(node.module, ())]
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.attr in NEW_NAMES.get(node.value.id, ()):
                found.append(f"{node.value.id}.{node.attr}")
        elif isinstance(node, ast.Name) and node.id in NEW_BUILTINS:
            found.append(node.id)
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.relative_to(PACKAGE_DIR).as_posix())
def test_no_python_3_11_stdlib(path):
    assert python_3_11_names(parse(path)) == []


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.relative_to(PACKAGE_DIR).as_posix())
def test_nothing_removed_in_python_3_13(path):
    assert {root for root, _ in imports(parse(path))} & REMOVED_IN_313 == set()


def test_the_stdlib_check_can_fail():
    tree = ast.parse("import tomllib\nfrom typing import Self\nimport datetime\nx = datetime.UTC\n")
    assert python_3_11_names(tree) == ["tomllib", "typing.Self", "datetime.UTC"]


def imports(tree: ast.Module):
    """(root module, at module level?) for every import; relative imports count as neuron_runtime."""
    top_level = set()
    for node in tree.body:
        for sub in ast.walk(node) if isinstance(node, (ast.If, ast.Try)) else [node]:
            top_level.add(id(sub))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split(".")[0], id(node) in top_level
        elif isinstance(node, ast.ImportFrom):
            root = "neuron_runtime" if node.level else (node.module or "").split(".")[0]
            yield root, id(node) in top_level


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.relative_to(PACKAGE_DIR).as_posix())
def test_imports_are_stdlib_at_import_time(path):
    stdlib = set(sys.stdlib_module_names)
    for root, at_module_level in imports(parse(path)):
        assert root not in {"kopf", "neuron_operator"}, f"{path.name} imports {root}"
        if at_module_level:
            assert root in stdlib or root in {"neuron_runtime", "__future__"}, f"{path.name}: top-level import {root}"
        else:
            assert root in stdlib or root in LAZY_IMPORTS or root == "neuron_runtime", f"{path.name}: lazy {root}"


def find_python(minor: int):
    """An interpreter of Python 3.<minor>: $PYTHON3<minor>, python3.<minor> on PATH, or a pyenv version."""
    name = f"python3.{minor}"
    candidates = [os.environ.get(f"PYTHON3{minor}"), shutil.which(name)]
    for root in (os.environ.get("PYENV_ROOT"), os.path.expanduser("~/.pyenv")):
        if root:
            candidates += sorted(glob.glob(os.path.join(root, "versions", f"3.{minor}*", "bin", name)))
    for candidate in filter(None, candidates):
        try:
            out = subprocess.run(
                [candidate, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True, timeout=30
            )
        except OSError:
            continue
        if out.returncode == 0 and out.stdout.strip() == f"(3, {minor})":
            return candidate
    return None


def test_cli_runs_on_a_real_python_3_10(make_spec, contract_env, tmp_path):
    python310 = find_python(10)
    if python310 is None:
        pytest.skip("no Python 3.10 interpreter on this machine (set PYTHON310 to point at one)")
    spec = make_spec(lora_adapters=[{"name": "a", "uri": "hf://org/a"}])
    env = {**contract_env(spec, tmp_path / "store"), "PYTHONPATH": str(PACKAGE_DIR.parent), "PATH": "/usr/bin:/bin"}
    env[  # the serve path too, including the server argv building
        "NEURON_OPERATOR_SERVE_CONFIG"
    ] = json.dumps({"port": 8000, "served_model_name": None, "extra_args": [], "enable_lora": True, "max_loras": None})
    for command in ("compile", "serve"):
        result = subprocess.run(
            [python310, "-m", "neuron_runtime.cli", command, "--dry-run"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["command"] == command
    # and the failure path (termination message, exit 3) under 3.10
    result = subprocess.run(
        [python310, "-m", "neuron_runtime.cli", "serve"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 3, result.stderr


def test_vllm_neuron_cli_runs_on_a_real_python_3_13(contract_env, tmp_path):
    """The vllm-neuron image's Python (DLC 0.24.0.1.1.0: python3.13): dry runs of both commands, and a real compile
    through the fake engine, so the process supervision and publication run on 3.13 too."""
    python313 = find_python(13)
    if python313 is None:
        pytest.skip("no Python 3.13 interpreter on this machine (set PYTHON313 to point at one)")
    from neuron_runtime.compile_spec import CompileSpec

    model = tmp_path / "model"
    model.mkdir()
    spec = CompileSpec.from_dict(dict(model_uri=str(model), model_revision="main", instance_family="trn3", lnc=2,
                                      tp_degree=64, world_size=1, max_num_seqs=16, max_model_len=8192,
                                      dtype="bfloat16", stack="neuron-2.32-vllm-neuron-0.24",
                                      override_neuron_config={"quantization": "mxfp4"}))
    env = {**contract_env(spec, tmp_path / "store"), "PYTHONPATH": str(PACKAGE_DIR.parent), "PATH": "/usr/bin:/bin",
           "NEURON_RUNTIME_ENGINE_CACHE": str(tmp_path / "engine"), "VLLM_NEURON_CPU_COMPILE": "1",
           "NEURON_RUNTIME_TEST_MODE": "1", "NEURON_RUNTIME_FAKE_ENGINE": "1"}
    for command in ("compile", "serve"):
        result = subprocess.run([python313, "-m", "neuron_runtime.cli", command, "--dry-run"], env=env,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["stack"] == "neuron-2.32-vllm-neuron-0.24"
    result = subprocess.run([python313, "-m", "neuron_runtime.cli", "compile"], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "compiled 3 graphs" in (tmp_path / "termination-log").read_text()
