"""The CLI as the container runs it: a separate process, ``python -m neuron_runtime.cli``, env in, exit code out."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import neuron_runtime
from neuron_runtime import constants
from neuron_runtime.compile_spec import compile_key


# The package under test, importable in the child whether or not it is pip-installed.
PACKAGE_ROOT = os.path.dirname(os.path.dirname(neuron_runtime.__file__))


def run(args, env, timeout=60):
    child_env = {**env, "PATH": "/usr/bin:/bin", "PYTHONPATH": PACKAGE_ROOT}
    return subprocess.run([sys.executable, "-m", *args], env=child_env, capture_output=True, text=True, timeout=timeout)


def test_compile_dry_run(make_spec, contract_env, tmp_path):
    spec = make_spec(lora_adapters=[{"name": "a", "uri": "pvc://adapters/a"}])
    result = run(["neuron_runtime.cli", "compile", "--dry-run"], contract_env(spec, tmp_path / "store"))
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["command"] == "compile"
    assert plan["key"] == compile_key(spec)
    assert plan["artifact"] == str(tmp_path / "store" / compile_key(spec))
    assert plan["env"] == {"set": {"NEURON_LOGICAL_NC_CONFIG": "1"}, "unset": []}
    assert plan["neuron_config"]["lora_config"]["lora_ckpt_paths"] == {
        "a": "/var/lib/neuron-operator/models/adapters/a"
    }
    assert not (tmp_path / "store").exists()  # a dry run touches nothing


def test_serve_dry_run(make_spec, contract_env, tmp_path):
    spec = make_spec()
    env = contract_env(spec, "s3://bucket/prefix", WORLD_SIZE="8")
    env[constants.ENV_SERVE_CONFIG] = json.dumps(
        {
            "port": 8000,
            "served_model_name": "llama",
            "extra_args": ["--uvicorn-log-level", "warning"],
            "enable_lora": False,
            "max_loras": None,
        }
    )
    result = run(["neuron_runtime.cli", "serve", "--dry-run"], env)
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    local = str(tmp_path / "local-artifacts" / compile_key(spec))
    assert plan["artifact"] == local
    assert plan["argv"][1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert plan["argv"][-2:] == ["--uvicorn-log-level", "warning"]
    assert plan["env"]["set"]["NEURON_COMPILED_ARTIFACTS"] == local
    assert plan["env"]["unset"] == ["WORLD_SIZE"]
    assert plan["neuron_config"]["batch_size"] == 8


def test_python_dash_m_package_and_help(make_spec, contract_env, tmp_path):
    env = contract_env(make_spec(), tmp_path)
    assert run(["neuron_runtime", "compile", "--dry-run"], env).returncode == 0
    help_text = run(["neuron_runtime", "--help"], env).stdout
    assert "compile" in help_text and "serve" in help_text and "exit codes" in help_text


@pytest.mark.parametrize("command", ["compile", "serve"])
def test_key_mismatch_in_a_real_process(make_spec, contract_env, tmp_path, termination_log, command):
    env = contract_env(make_spec(), tmp_path)
    env[constants.ENV_ARTIFACT_KEY] = "ffffffffffffffffffff"
    result = run(["neuron_runtime.cli", command, "--dry-run"], env)
    assert result.returncode == 2
    assert "artifact key mismatch" in termination_log.read_text()
    assert "artifact key mismatch" in result.stderr


def test_serve_without_artifacts_in_a_real_process(make_spec, contract_env, tmp_path, termination_log):
    spec = make_spec()
    result = run(["neuron_runtime.cli", "serve"], contract_env(spec, tmp_path / "store"))
    assert result.returncode == 3
    assert f"compiled artifacts for key {compile_key(spec)} not found" in termination_log.read_text()


def test_runtime_import_does_not_load_the_operator_or_the_neuron_stack(make_spec, contract_env, tmp_path):
    code = (
        "import sys, neuron_runtime.cli, neuron_runtime.compile, neuron_runtime.serve;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'kopf', 'neuron_operator', 'torch', 'vllm', 'neuronx_distributed_inference', 'boto3', 'huggingface_hub', 'transformers'});"
        "print(bad)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "[]", result.stderr


def test_help_lists_every_exit_code():
    from neuron_runtime import cli

    codes = {name: value for name, value in vars(constants).items() if name.startswith("EXIT_") and value}
    assert codes["EXIT_FABRIC_UNAVAILABLE"] == 7
    for name, value in codes.items():
        assert f"{value} " in cli.EPILOG, f"{name}={value} is not explained in the help"
    assert "7 multi-node pod without a usable EFA (libfabric) provider" in cli.EPILOG
