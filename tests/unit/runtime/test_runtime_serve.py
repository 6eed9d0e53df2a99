"""Serve: server argv and env (golden), artifact verification -> exit 3, signal forwarding to the server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from neuron_runtime import artifacts, cli, constants
from neuron_runtime.compile_spec import compile_key
from neuron_runtime.contract import ServeConfig, read_contract
from neuron_runtime.dryrun import env_diff
from neuron_runtime.errors import SpecError
from neuron_runtime.nxdi_server import build_serve_env, build_server_argv, lora_module_arg
from neuron_runtime.process import exit_code_from_status
from neuron_runtime.serve import run_serve
from neuron_runtime.topology import NodeRole

MODEL = "/models/llama"


def argv_for(spec, profile, serve_config=None, **kw):
    serve_config = serve_config or ServeConfig()
    kw.setdefault("model_path", MODEL)
    kw.setdefault("adapter_paths", {})
    return build_server_argv(spec, serve_config, profile, python="python", **kw)


def test_single_node_argv(make_spec, profile):
    spec = make_spec(override_neuron_config={"skip_warmup": True, "fused_qkv": True})
    serve_config = ServeConfig(port=8080, served_model_name="llama", extra_args=("--disable-log-requests",))
    assert argv_for(spec, profile, serve_config) == [
        "python", "-m", "vllm.entrypoints.openai.api_server",
        "--model", MODEL,
        "--port", "8080",
        "--tensor-parallel-size", "32",
        "--max-num-seqs", "8",
        "--max-model-len", "4096",
        "--dtype", "bfloat16",
        "--device", "neuron",
        "--served-model-name", "llama",
        "--override-neuron-config", '{"skip_warmup":true}',  # load-time keys only, never fused_qkv
        "--disable-log-requests",
    ]  # fmt: skip


def test_default_served_model_name_is_the_hf_id(make_spec, profile):
    argv = argv_for(make_spec(), profile)
    assert argv[argv.index("--served-model-name") + 1] == "meta-llama/Llama-3.1-8B-Instruct"


def test_lora_argv(make_spec, profile):
    spec = make_spec(
        lora_adapters=[{"name": "sql", "uri": "hf://org/sql"}, {"name": "chat", "uri": "pvc://a/chat"}],
        max_lora_rank=64,
    )
    argv = argv_for(
        spec, profile, ServeConfig(enable_lora=True, max_loras=4), adapter_paths={"sql": "/m/sql", "chat": "/m/chat"}
    )
    tail = argv[argv.index("--override-neuron-config") + 2 :]
    assert tail == [
        "--enable-lora", "--max-loras", "4", "--max-lora-rank", "64",
        "--lora-modules", "chat=/m/chat", "sql=/m/sql",  # same order as the compiled lora_ckpt_paths
    ]  # fmt: skip


def test_lora_defaults_and_checks(make_spec, profile):
    spec = make_spec(lora_adapters=[{"name": "a", "uri": "pvc://x/a"}, {"name": "b", "uri": "pvc://x/b"}])
    paths = {"a": "/a", "b": "/b"}
    argv = argv_for(spec, profile, ServeConfig(enable_lora=True), adapter_paths=paths)
    assert argv[argv.index("--max-loras") + 1] == "2"
    assert argv[argv.index("--max-lora-rank") + 1] == "16"
    with pytest.raises(SpecError, match="max_loras=1 is less than the 2"):
        argv_for(spec, profile, ServeConfig(enable_lora=True, max_loras=1), adapter_paths=paths)
    with pytest.raises(SpecError, match="enable_lora=False"):
        argv_for(spec, profile, ServeConfig(enable_lora=False), adapter_paths=paths)
    with pytest.raises(SpecError, match="enable_lora=True"):
        argv_for(make_spec(), profile, ServeConfig(enable_lora=True))


def test_lora_module_arg_falls_back_to_json():
    assert lora_module_arg("a", "/p/a") == "a=/p/a"
    assert json.loads(lora_module_arg("a", "/p/x=1,y")) == {"name": "a", "path": "/p/x=1,y"}


def test_eagle_argv(make_spec, profile):
    spec = make_spec(
        max_num_seqs=4,
        max_model_len=2048,
        speculative={
            "model_uri": "pvc://d/eagle",
            "num_speculative_tokens": 5,
            "max_model_len": 2048,
            "method": "eagle",
        },
    )
    argv = argv_for(spec, profile, draft_path="/d/eagle")
    override = json.loads(argv[argv.index("--override-neuron-config") + 1])
    assert override == {"enable_eagle_speculation": True, "enable_fused_speculation": True}
    assert argv[argv.index("--override-neuron-config") + 2 :] == [
        "--speculative-model", "/d/eagle", "--num-speculative-tokens", "5", "--speculative-max-model-len", "2048",
    ]  # fmt: skip


def test_draft_argv_without_max_len(make_spec, profile):
    spec = make_spec(speculative={"model_uri": "pvc://d/small", "num_speculative_tokens": 4})
    argv = argv_for(spec, profile, draft_path="/d/small")
    assert "--speculative-max-model-len" not in argv
    assert json.loads(argv[argv.index("--override-neuron-config") + 1]) == {"enable_fused_speculation": True}


@pytest.mark.parametrize("arg", ["--max-num-seqs=4", "--tensor-parallel-size", "--override-neuron-config", "-tp"])
def test_extra_args_cannot_override_compiled_settings(make_spec, profile, arg):
    with pytest.raises(SpecError, match="extra_args must not set"):
        argv_for(make_spec(), profile, ServeConfig(extra_args=(arg, "1")))


def test_serve_env(make_spec, profile):
    base = {
        "PATH": "/usr/bin",
        "WORLD_SIZE": "4",  # leaked from somewhere: would make vLLM wait for peers
        "ENABLE_NEURON_MULTI_NODE": "true",
        "NEURON_RT_VISIBLE_CORES": "0-31",  # set by the device plugin
        "VLLM_RPC_TIMEOUT": "200000",  # pod-level override wins
    }
    env = build_serve_env(base, make_spec(lnc=2), profile, "/art/key")
    assert env == {
        "PATH": "/usr/bin",
        "NEURON_RT_VISIBLE_CORES": "0-31",
        "VLLM_RPC_TIMEOUT": "200000",
        "VLLM_NEURON_FRAMEWORK": "neuronx-distributed-inference",
        "NEURON_COMPILED_ARTIFACTS": "/art/key",
        "NEURON_LOGICAL_NC_CONFIG": "2",
    }
    assert base["WORLD_SIZE"] == "4"  # pure: the input is untouched
    assert env_diff(base, env) == {
        "set": {
            "NEURON_COMPILED_ARTIFACTS": "/art/key",
            "NEURON_LOGICAL_NC_CONFIG": "2",
            "VLLM_NEURON_FRAMEWORK": "neuronx-distributed-inference",
        },
        "unset": ["ENABLE_NEURON_MULTI_NODE", "WORLD_SIZE"],
    }
    assert build_serve_env({}, make_spec(), profile, "/a")["VLLM_RPC_TIMEOUT"] == "100000"


def test_multi_node_argv_loads_the_nodes_slice(make_spec, profile):
    # The seam is now the feature: same flags as a single node, total TP, plus the node's rank keys
    # (multi-node details in test_runtime_multinode.py).
    argv = argv_for(make_spec(tp_degree=64, world_size=2), profile, role=NodeRole(rank=1, world_size=2))
    assert argv[argv.index("--tensor-parallel-size") + 1] == "64"
    assert json.loads(argv[argv.index("--override-neuron-config") + 1]) == {"local_ranks_size": 32, "start_rank_id": 32}


def test_exit_code_from_status():
    assert exit_code_from_status(3 << 8) == 3
    assert exit_code_from_status(signal.SIGKILL) == 128 + signal.SIGKILL


# --- run_serve: verification before the server starts -----------------------------------------------------------


def run_cli(monkeypatch, env, *args):
    monkeypatch.setattr(os, "environ", dict(env))
    return cli.main(list(args))


def test_serve_without_artifacts_exits_3(monkeypatch, make_spec, contract_env, tmp_path, termination_log):
    spec = make_spec()
    env = contract_env(spec, tmp_path / "store")
    assert run_cli(monkeypatch, env, "serve") == constants.EXIT_ARTIFACT_INVALID
    message = termination_log.read_text()
    assert message.count("\n") == 1
    assert (
        f"compiled artifacts for key {compile_key(spec)} not found at {tmp_path / 'store' / compile_key(spec)}"
        in message
    )
    assert "the compile Job must finish first" in message


def test_serve_with_wrong_key_artifact_exits_3(
    monkeypatch, make_spec, contract_env, tmp_path, termination_log, fake_nxdi_output
):
    spec = make_spec(tp_degree=2)
    key = compile_key(spec)
    art = tmp_path / "store" / key
    fake_nxdi_output(str(art), 2, 8, 4096)
    artifacts.write_manifest(str(art), {"key": "someotherkey", "neuron_config": {}})
    assert run_cli(monkeypatch, contract_env(spec, tmp_path / "store"), "serve") == constants.EXIT_ARTIFACT_INVALID
    assert "are for key 'someotherkey'" in termination_log.read_text()


def test_serve_with_missing_model_pt_exits_3(
    monkeypatch, make_spec, contract_env, tmp_path, termination_log, fake_nxdi_output
):
    spec = make_spec(tp_degree=2)
    key = compile_key(spec)
    art = tmp_path / "store" / key
    fake_nxdi_output(str(art), 2, 8, 4096)
    artifacts.write_manifest(str(art), {"key": key, "neuron_config": {"save_sharded_checkpoint": True, "tp_degree": 2}})
    os.remove(art / "model.pt")
    assert run_cli(monkeypatch, contract_env(spec, tmp_path / "store"), "serve") == constants.EXIT_ARTIFACT_INVALID
    assert "missing ['model.pt']" in termination_log.read_text()


def test_serve_multi_node_without_group_env_exits_2(monkeypatch, make_spec, contract_env, tmp_path, termination_log):
    env = contract_env(make_spec(tp_degree=64, world_size=2), tmp_path)
    assert run_cli(monkeypatch, env, "serve") == constants.EXIT_BAD_SPEC
    assert "NEURON_OPERATOR_WORLD_SIZE is not set" in termination_log.read_text()


def test_serve_starts_server_on_verified_artifacts(
    make_spec, contract_env, tmp_path, fake_nxdi_output, termination_log
):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    spec = make_spec(model_uri=str(model_dir), tp_degree=2, max_num_seqs=4, max_model_len=512)
    key = compile_key(spec)
    art = tmp_path / "store" / key
    fake_nxdi_output(str(art), 2, 4, 512)
    artifacts.write_manifest(
        str(art), {"key": key, "versions": {}, "neuron_config": {"save_sharded_checkpoint": True, "tp_degree": 2}}
    )
    env = contract_env(spec, tmp_path / "store", WORLD_SIZE="2")
    env[constants.ENV_SERVE_CONFIG] = json.dumps(
        {"port": 9000, "served_model_name": "m", "extra_args": [], "enable_lora": False, "max_loras": None}
    )
    calls = []

    def fake_runner(argv, server_env):
        calls.append((argv, server_env))
        return 7

    assert run_serve(read_contract(env), env, runner=fake_runner) == 7
    ((argv, server_env),) = calls
    assert argv[argv.index("--model") + 1] == str(model_dir)
    assert argv[argv.index("--port") + 1] == "9000"
    assert server_env["NEURON_COMPILED_ARTIFACTS"] == str(art)
    assert "WORLD_SIZE" not in server_env
    assert termination_log.read_text().strip() == "vLLM server exited with code 7"


# --- signal forwarding (a real child process) ---------------------------------------------------------------------

FORWARDER = textwrap.dedent(
    """
    import sys
    from neuron_runtime.process import run_and_forward
    child = '''
    import signal, sys, time
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(42))
    print("ready", flush=True)
    time.sleep(60)
    sys.exit(1)
    '''
    sys.exit(run_and_forward([sys.executable, "-c", child], {"PATH": "/usr/bin"}))
    """
)


def test_sigterm_is_forwarded_and_child_code_returned():
    proc = subprocess.Popen([sys.executable, "-c", FORWARDER], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"  # the grandchild runs and has its handler installed
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 42
    finally:
        if proc.poll() is None:
            proc.kill()


def test_child_killed_by_signal_reports_128_plus_n():
    code = textwrap.dedent(
        """
        import sys
        from neuron_runtime.process import run_and_forward
        sys.exit(run_and_forward([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"], {}))
        """
    )
    start = time.monotonic()
    assert subprocess.run([sys.executable, "-c", code], timeout=20).returncode == 128 + signal.SIGKILL
    assert time.monotonic() - start < 20


def test_version_drift_between_compile_and_serve_images(profile):
    from neuron_runtime.nxdi_server import version_drift

    recorded = {"neuronx-cc": "2.18.121.0+9e31e41a", "neuronx-distributed-inference": "0.3.5591", "vllm": None}
    assert version_drift(profile, recorded, dict(recorded)) == []
    installed = dict(recorded, **{"neuronx-cc": "2.19.8089.0+aa"})
    assert version_drift(profile, recorded, installed) == [
        "neuronx-cc compiled with 2.18.121.0+9e31e41a, installed 2.19.8089.0+aa"
    ]
