"""Compile command: the thin I/O around NxDI, driven with a fake compile function on a local model directory."""

from __future__ import annotations

import json
import os

import pytest

from neuron_runtime import cli, constants
from neuron_runtime.compile import run_compile, select_model_class
from neuron_runtime.compile_spec import compile_key
from neuron_runtime.contract import read_contract
from neuron_runtime.errors import SpecError
from neuron_runtime.stacks import stack_problems


@pytest.fixture
def model_dir(tmp_path):
    path = tmp_path / "model"
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"architectures": ["MistralForCausalLM"], "torch_dtype": "bfloat16"}))
    return path


class FakeCompile:
    """Records its calls and writes what NxDI compile() would."""

    def __init__(self, write):
        self.calls = []
        self.write = write

    def __call__(self, spec, profile, model_path, model_config, kwargs, draft_path, staging):
        self.calls.append(
            {
                "model_path": model_path,
                "kwargs": kwargs,
                "staging": staging,
                "lnc_env": os.environ.get("NEURON_LOGICAL_NC_CONFIG"),
            }
        )
        self.write(staging, kwargs["tp_degree"], kwargs["batch_size"], kwargs["seq_len"])


def test_compile_publishes_then_hits_cache(
    make_spec, contract_env, tmp_path, model_dir, fake_nxdi_output, monkeypatch, caplog
):
    monkeypatch.setenv("NEURON_LOGICAL_NC_CONFIG", "1")  # restored after the test; compile must overwrite it
    spec = make_spec(model_uri=str(model_dir), tp_degree=2, max_num_seqs=4, max_model_len=512, dtype="auto", lnc=2)
    key = compile_key(spec)
    env = contract_env(spec, tmp_path / "store")
    fake = FakeCompile(fake_nxdi_output)

    assert run_compile(read_contract(env), env, compile_fn=fake) == 0
    (call,) = fake.calls
    assert call["model_path"] == str(model_dir)
    assert call["kwargs"]["torch_dtype"] == "bfloat16"  # "auto" resolved from config.json like vLLM does
    assert call["lnc_env"] == "2"  # NxDI reads the env var, which beats the kwarg
    assert call["staging"].startswith(str(tmp_path / "store" / constants.STAGING_DIR))
    manifest = json.loads((tmp_path / "store" / key / constants.MANIFEST_FILE).read_text())
    assert manifest["key"] == key
    assert manifest["stack"] == "neuron-2.23-vllm-0.7.2"
    assert manifest["neuron_config"] == call["kwargs"]
    assert set(manifest["versions"]) >= {"vllm", "neuronx-distributed-inference", "neuronx-cc"}
    assert manifest["created"].endswith("Z")

    with caplog.at_level("INFO"):
        assert run_compile(read_contract(env), env, compile_fn=fake) == 0
    assert len(fake.calls) == 1
    assert "artifact cache hit" in caplog.text


def test_compile_to_s3_store(make_spec, contract_env, tmp_path, model_dir, fake_nxdi_output, fake_s3):
    spec = make_spec(model_uri=str(model_dir), tp_degree=2, max_num_seqs=4, max_model_len=512)
    key = compile_key(spec)
    env = contract_env(spec, "s3://bucket/artifacts")
    assert run_compile(read_contract(env), env, compile_fn=FakeCompile(fake_nxdi_output), s3_client=fake_s3) == 0
    assert fake_s3.uploads[-1] == f"artifacts/{key}/manifest.json"


def test_compile_failure_exits_1_and_leaves_no_artifact(
    make_spec, contract_env, tmp_path, model_dir, monkeypatch, termination_log
):
    # The real nxdi_compile runs: NxDI is not installed here, which is a compile failure like any other.
    spec = make_spec(model_uri=str(model_dir), tp_degree=2)
    env = contract_env(spec, tmp_path / "store")
    monkeypatch.setattr(os, "environ", dict(env))
    assert cli.main(["compile"]) == constants.EXIT_FAILURE
    assert termination_log.read_text().startswith("NxDI compile failed: ModuleNotFoundError")
    assert not (tmp_path / "store" / compile_key(spec)).exists()
    assert os.listdir(tmp_path / "store" / constants.STAGING_DIR) == []


def test_missing_local_model_exits_1(make_spec, contract_env, tmp_path, monkeypatch, termination_log):
    spec = make_spec(model_uri=str(tmp_path / "absent"))
    env = contract_env(spec, tmp_path / "store")
    monkeypatch.setattr(os, "environ", dict(env))
    assert cli.main(["compile"]) == constants.EXIT_FAILURE
    assert "does not exist" in termination_log.read_text()


def test_stack_check_runs_unless_skipped(make_spec, contract_env, tmp_path, monkeypatch, termination_log):
    spec = make_spec(model_uri=str(tmp_path))
    env = contract_env(spec, tmp_path / "store")
    del env[constants.ENV_SKIP_STACK_CHECK]
    env[constants.ENV_IMAGE_STACK] = "neuron-2.24-vllm-0.7.2"
    monkeypatch.setattr(os, "environ", dict(env))
    assert cli.main(["compile"]) == constants.EXIT_BAD_SPEC
    message = termination_log.read_text()
    assert "does not match the requested stack" in message
    assert "this image provides stack 'neuron-2.24-vllm-0.7.2'" in message


def test_stack_problems(profile):
    good = {"neuronx-distributed-inference": "0.3.5591", "neuronx-cc": "2.18.121.0+9e31e41a", "vllm": "0.7.2+neuron218",
            "torch-neuronx": "2.6.0.2.7.5413", "neuronx-distributed": "0.12.12111", "transformers": "4.48.3"}  # fmt: skip
    assert stack_problems(profile, good, "neuron-2.23-vllm-0.7.2") == []
    bad = dict(good, **{"neuronx-cc": "2.19.8089.0", "vllm": None})
    assert stack_problems(profile, bad, None) == [
        "neuronx-cc 2.19.8089.0 is installed, stack neuron-2.23-vllm-0.7.2 needs 2.18.121.0",
        "vllm is not installed (need 0.7.2)",
    ]


def test_select_model_class(profile):
    assert select_model_class(["MistralForCausalLM"], profile) == (
        "MistralForCausalLM",
        "neuronx_distributed_inference.models.llama.modeling_llama",
        "NeuronLlamaForCausalLM",
    )
    assert select_model_class(["Foo", "MixtralForCausalLM"], profile)[2] == "NeuronMixtralForCausalLM"
    with pytest.raises(SpecError, match="not supported"):
        select_model_class(["Qwen2ForCausalLM"], profile)
