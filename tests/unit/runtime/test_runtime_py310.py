"""The runtime must run on the Neuron DLC's Python 3.10 with only the standard library at import time.

Checks: every module parses with feature_version=(3, 10); no 3.11+ standard-library names; module-level imports
are stdlib or neuron_runtime; lazy imports are limited to the known Neuron/AWS/HF packages; nothing imports the
operator. When a real Python 3.10 interpreter is on this machine, the CLI also runs under it.
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
MODULES = sorted(PACKAGE_DIR.glob("*.py"))
# Imported lazily, inside the functions that need them, and only in the runtime image.
LAZY_IMPORTS = {"boto3", "huggingface_hub", "neuronx_distributed_inference", "transformers", "vllm"}
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


def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path), feature_version=(3, 10))


def test_modules_found():
    names = {p.name for p in MODULES}
    assert {"cli.py", "stacks.py", "neuron_config.py", "artifacts.py", "compile.py", "serve.py"} <= names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
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


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_python_3_11_stdlib(path):
    assert python_3_11_names(parse(path)) == []


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


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_imports_are_stdlib_at_import_time(path):
    stdlib = set(sys.stdlib_module_names)
    for root, at_module_level in imports(parse(path)):
        assert root not in {"kopf", "neuron_operator"}, f"{path.name} imports {root}"
        if at_module_level:
            assert root in stdlib or root in {"neuron_runtime", "__future__"}, f"{path.name}: top-level import {root}"
        else:
            assert root in stdlib or root in LAZY_IMPORTS or root == "neuron_runtime", f"{path.name}: lazy {root}"


def find_python_3_10():
    candidates = [os.environ.get("PYTHON310"), shutil.which("python3.10")]
    for root in (os.environ.get("PYENV_ROOT"), os.path.expanduser("~/.pyenv")):
        if root:
            candidates += sorted(glob.glob(os.path.join(root, "versions", "3.10*", "bin", "python3.10")))
    for candidate in filter(None, candidates):
        try:
            out = subprocess.run(
                [candidate, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True, timeout=30
            )
        except OSError:
            continue
        if out.returncode == 0 and out.stdout.strip() == "(3, 10)":
            return candidate
    return None


def test_cli_runs_on_a_real_python_3_10(make_spec, contract_env, tmp_path):
    python310 = find_python_3_10()
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
