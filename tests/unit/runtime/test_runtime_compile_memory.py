"""The 2.23 compile's memory: the estimate the operator sizes Jobs with, and the check before NxDI loads anything
(a stand-in cgroup directory sets the limit; sparse files stand in for a large checkpoint)."""

from __future__ import annotations

import json
import os

import pytest

from neuron_runtime import cli, constants
from neuron_runtime.compile import run_compile
from neuron_runtime.compile_memory import (GIB, cgroup_memory_limit, check_fits, checkpoint_bytes, required_gib)
from neuron_runtime.contract import read_contract
from neuron_runtime.errors import CompileMemoryError


def sparse(path, size: int) -> None:
    with open(path, "wb") as f:
        f.truncate(size)


@pytest.fixture
def model_dir(tmp_path):
    path = tmp_path / "model"
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "torch_dtype": "bfloat16"}))
    sparse(path / "model-00001-of-00002.safetensors", 10 * GIB)
    sparse(path / "model-00002-of-00002.safetensors", 6 * GIB)
    (path / "tokenizer.json").write_text("{}")  # not a weight file
    return path


def test_required_memory_is_twice_the_checkpoint_plus_a_base():
    assert required_gib(16 * GIB) == 48
    assert required_gib(1) == 17  # rounds up


def test_checkpoint_bytes_counts_weight_files_only(model_dir, tmp_path):
    draft = tmp_path / "draft"
    draft.mkdir()
    sparse(draft / "pytorch_model.bin", GIB)
    assert checkpoint_bytes([str(model_dir), None, str(draft)]) == 17 * GIB


@pytest.mark.parametrize("files,expected", [
    ({"memory.max": "34359738368\n"}, 32 * GIB),  # cgroup v2
    ({"memory.max": "max\n"}, None),
    ({"memory/memory.limit_in_bytes": "9223372036854771712"}, None),  # v1 "unlimited"
    ({"memory/memory.limit_in_bytes": "1073741824"}, GIB),
    ({}, None),
])
def test_cgroup_memory_limit(tmp_path, files, expected):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cgroup_memory_limit(str(tmp_path)) == expected


def test_a_checkpoint_beyond_the_limit_fails_naming_the_field_and_a_value():
    with pytest.raises(CompileMemoryError) as caught:
        check_fits(16 * GIB, 12 * GIB)
    message = str(caught.value)
    assert "16.0 GiB but the compile pod's memory limit is 12.0 GiB" in message
    assert "set spec.runtime.compileResources.limits.memory (and requests.memory) to at least 48Gi" in message
    assert caught.value.exit_code == constants.EXIT_COMPILE_MEMORY


def test_a_multi_node_rank_needs_its_share_only():
    check_fits(64 * GIB, 20 * GIB, nodes=4)  # 16 GiB each
    with pytest.raises(CompileMemoryError, match=r"this node's share \(1/4\) of the checkpoint is 32.0 GiB"):
        check_fits(128 * GIB, 20 * GIB, nodes=4)


def test_within_the_limit_or_unlimited_passes_and_below_the_estimate_warns(caplog):
    check_fits(16 * GIB, None)
    check_fits(16 * GIB, 64 * GIB)
    assert "may be OOM-killed" not in caplog.text
    with caplog.at_level("WARNING"):
        check_fits(16 * GIB, 32 * GIB)
    assert "may be OOM-killed (raise spec.runtime.compileResources.limits.memory)" in caplog.text


def test_compile_fails_fast_before_nxdi_runs(make_spec, contract_env, tmp_path, model_dir, monkeypatch,
                                             termination_log):
    cgroup = tmp_path / "cgroup"
    cgroup.mkdir()
    (cgroup / "memory.max").write_text(str(12 * GIB))
    spec = make_spec(model_uri=str(model_dir), tp_degree=2)
    env = contract_env(spec, tmp_path / "store", **{constants.ENV_TEST_MODE: "1",
                                                      constants.ENV_TEST_CGROUP_ROOT: str(cgroup)})
    calls = []
    with pytest.raises(CompileMemoryError):
        run_compile(read_contract(env), env, compile_fn=lambda *a: calls.append(a))
    assert calls == []  # NxDI was never called
    # through the CLI: the exit code and the termination message the operator shows (the real nxdi_compile, which
    # would fail with NxDI missing here, is never reached)
    monkeypatch.setattr(os, "environ", dict(env))
    assert cli.main(["compile"]) == constants.EXIT_COMPILE_MEMORY
    assert "set spec.runtime.compileResources.limits.memory" in termination_log.read_text()
    assert not (tmp_path / "store" / ".staging").exists() or os.listdir(tmp_path / "store" / ".staging") == []
