"""The operator -> runtime env contract: key recomputation, malformed input -> exit 2 with a termination message."""

from __future__ import annotations

import json
import os

import pytest

from neuron_runtime import cli, constants
from neuron_runtime.compile_spec import compile_key
from neuron_runtime.contract import ServeConfig, read_contract, read_serve_config
from neuron_runtime.errors import SpecError
from neuron_runtime.termination import one_line, write_termination_message


def run_cli(monkeypatch, env, *args):
    monkeypatch.setattr(os, "environ", dict(env))
    return cli.main(list(args))


def test_contract_recomputes_the_key(make_spec, contract_env, tmp_path):
    spec = make_spec()
    contract = read_contract(contract_env(spec, tmp_path))
    assert contract.key == compile_key(spec)
    assert contract.spec == spec
    assert contract.profile.id == "neuron-2.23-vllm-0.7.2"


@pytest.mark.parametrize("command", ["compile", "serve"])
def test_key_mismatch_exits_2(monkeypatch, make_spec, contract_env, tmp_path, termination_log, command):
    spec = make_spec()
    env = contract_env(spec, tmp_path / "store")
    env[constants.ENV_ARTIFACT_KEY] = "0123456789abcdef0123"
    assert run_cli(monkeypatch, env, command) == constants.EXIT_BAD_SPEC
    message = termination_log.read_text()
    assert "artifact key mismatch" in message
    assert "0123456789abcdef0123" in message and compile_key(spec) in message
    assert not (tmp_path / "store").exists()  # nothing was done before failing


def test_a_changed_spec_field_changes_the_key(make_spec, contract_env, tmp_path):
    env = contract_env(make_spec(), tmp_path)
    env[constants.ENV_COMPILE_SPEC] = make_spec(max_num_seqs=16).to_json()  # spec edited, key stale
    with pytest.raises(SpecError, match="key mismatch"):
        read_contract(env)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda env: env.pop(constants.ENV_COMPILE_SPEC), "NEURON_OPERATOR_COMPILE_SPEC is not set"),
        (lambda env: env.pop(constants.ENV_ARTIFACT_KEY), "NEURON_OPERATOR_ARTIFACT_KEY is not set"),
        (lambda env: env.pop(constants.ENV_ARTIFACT_STORE), "NEURON_OPERATOR_ARTIFACT_STORE is not set"),
        (lambda env: env.update({constants.ENV_COMPILE_SPEC: "{not json"}), "not a valid compile spec"),
        (lambda env: env.update({constants.ENV_COMPILE_SPEC: '{"model_uri": "x"}'}), "not a valid compile spec"),
        (lambda env: env.update({constants.ENV_ARTIFACT_STORE: "relative/path"}), "absolute path or s3://"),
    ],
)
def test_malformed_contract_exits_2(monkeypatch, make_spec, contract_env, tmp_path, termination_log, mutate, message):
    env = contract_env(make_spec(), tmp_path)
    mutate(env)
    assert run_cli(monkeypatch, env, "compile", "--dry-run") == constants.EXIT_BAD_SPEC
    assert message in termination_log.read_text()


def test_unknown_stack_exits_2(monkeypatch, make_spec, contract_env, tmp_path, termination_log):
    env = contract_env(make_spec(stack="neuron-2.99-vllm-9.9"), tmp_path)
    assert run_cli(monkeypatch, env, "compile") == constants.EXIT_BAD_SPEC
    assert "unknown runtime stack 'neuron-2.99-vllm-9.9'" in termination_log.read_text()


def test_serve_config_parsing():
    env = {
        constants.ENV_SERVE_CONFIG: json.dumps(
            {"port": 8000, "served_model_name": "x", "extra_args": ["--a"], "enable_lora": True, "max_loras": 3}
        )
    }
    assert read_serve_config(env) == ServeConfig(8000, "x", ("--a",), True, 3)
    assert read_serve_config({}) == ServeConfig()


@pytest.mark.parametrize(
    "config, message",
    [
        ("[1]", "JSON object"),
        ("{", "not valid JSON"),
        ('{"port": 0}', "port"),
        ('{"port": "8000"}', "port"),
        ('{"max_loras": 0}', "max_loras"),
        ('{"extra_args": "--x"}', "extra_args"),
        ('{"replicas": 2}', "unknown fields"),
    ],
)
def test_bad_serve_config(config, message):
    with pytest.raises(SpecError, match=message):
        read_serve_config({constants.ENV_SERVE_CONFIG: config})


def test_termination_message_is_one_bounded_line(tmp_path):
    path = tmp_path / "log"
    write_termination_message("first\nsecond   third" + "x" * 10000, {constants.ENV_TERMINATION_LOG: str(path)})
    text = path.read_text()
    assert text.startswith("first second third")
    assert text.count("\n") == 1 and len(text) <= constants.TERMINATION_MESSAGE_MAX_CHARS + 1
    assert one_line("a\tb") == "a b"


def test_unwritable_termination_log_is_ignored(tmp_path):
    write_termination_message("boom", {constants.ENV_TERMINATION_LOG: str(tmp_path / "no" / "such" / "dir")})
