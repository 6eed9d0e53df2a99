"""The vllm-neuron stack in the runtime: argv and env through `neuron-runtime compile|serve --dry-run`, the
neuron_config check, compile with CPU compile into an atomically published cache, cache-hit-only serving that
turns a miss into exit 6 with a termination message, and the version check before start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest

from neuron_runtime import artifacts, cli, constants, vllm_neuron, vllm_neuron_run
from neuron_runtime.compile_spec import CompileSpec, compile_key
from neuron_runtime.contract import ServeConfig, read_contract
from neuron_runtime.errors import SpecError
from neuron_runtime.stacks import NEURON_2_32_VLLM_NEURON_0_24 as PROFILE

STACK = PROFILE.id


@pytest.fixture
def model_dir(tmp_path):
    path = tmp_path / "model"
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    return path


@pytest.fixture
def plugin_spec(model_dir):
    def make(**changes) -> CompileSpec:
        data = dict(model_uri=str(model_dir), model_revision="main", instance_family="trn2", lnc=2, tp_degree=16,
                    world_size=1, max_num_seqs=8, max_model_len=4096, dtype="bfloat16", stack=STACK,
                    override_neuron_config={"num_seqs_buckets": [1, 8]})
        data.update(changes)
        return CompileSpec.from_dict(data)

    return make


@pytest.fixture
def plugin_env(contract_env, tmp_path):
    def make(spec: CompileSpec, *, compile_on_cpu: bool = True, serve_args=(), fake=True, **extra) -> dict:
        env = contract_env(spec, tmp_path / "store", **extra)
        env[constants.ENV_ENGINE_CACHE] = str(tmp_path / "engine-cache")
        env[constants.ENV_SERVE_CONFIG] = json.dumps(
            {"port": free_port(), "extra_args": list(serve_args), "startup_timeout_seconds": 900})
        if compile_on_cpu:
            env[PROFILE.env_cpu_compile] = "1"
        if fake:
            env[constants.ENV_TEST_MODE] = "1"
            env[constants.ENV_FAKE_ENGINE] = "1"
        return env

    return make


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def dry_run(command: str, env: dict) -> dict:
    result = subprocess.run([sys.executable, "-m", "neuron_runtime.cli", command, "--dry-run"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# --- argv and env, through the CLI -----------------------------------------------------------------------------


def test_compile_dry_run_runs_the_serving_command_under_cpu_compile(plugin_spec, plugin_env, model_dir):
    spec = plugin_spec(engine_args=("--block-size", "32"), max_num_batched_tokens=4096,
                       override_neuron_config={"num_batched_tokens_buckets": [1024, 4096], "num_seqs_buckets": [8]})
    env = plugin_env(spec)
    env[PROFILE.env_parallel_compile_workers] = "16"
    plan = dry_run("compile", {**os.environ, **env, "NEURON_RUNTIME_FAKE_ENGINE": "0"})
    assert plan["compile_on"] == "cpu" and plan["stack"] == STACK and plan["key"] == compile_key(spec)
    assert plan["argv"][1:] == [
        "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir),
        "--port", "0",
        "--tensor-parallel-size", "16",
        "--max-num-seqs", "8",
        "--max-model-len", "4096",
        "--dtype", "bfloat16",
        "--served-model-name", "model",
        "--max-num-batched-tokens", "4096",
        "--additional-config", '{"neuron_config":{"num_batched_tokens_buckets":[1024,4096],"num_seqs_buckets":[8]}}',
        "--host", "127.0.0.1",
        "--block-size", "32",
    ]  # fmt: skip
    assert "--device" not in plan["argv"]  # vLLM 0.24 has no --device (migration guide)
    forced = plan["engine_env"]
    assert forced["VLLM_NEURON_CPU_COMPILE"] == "1" and forced["NEURON_PLATFORM_TARGET_OVERRIDE"] == "trn2"
    assert forced["NEURON_LIBTORCH_PARALLEL_COMPILE_WORKERS"] == "16"
    assert forced["NEURON_LIBTORCH_REMOTE_CACHE"].startswith(str(env[constants.ENV_ARTIFACT_STORE]) + "/.staging/")
    assert "VLLM_NEURON_DISABLE_WARMUP_COMPILE" not in forced  # compiling is the point here


def test_serve_dry_run_is_cache_hit_only(plugin_spec, plugin_env):
    spec = plugin_spec(data_parallel_size=2)
    env = plugin_env(spec, compile_on_cpu=False, serve_args=["--disable-log-requests"])
    env.update({"VLLM_NEURON_FRAMEWORK": "neuronx-distributed-inference", "NEURON_COMPILED_ARTIFACTS": "/somewhere"})
    plan = dry_run("serve", {**os.environ, **env})
    argv = plan["argv"]
    assert argv[argv.index("--data-parallel-size") + 1] == "2"
    assert argv[-1] == "--disable-log-requests" and "--host" not in argv
    forced = plan["engine_env"]
    artifact = os.path.join(env[constants.ENV_ARTIFACT_STORE], compile_key(spec))
    assert forced == {
        "NEURON_LIBTORCH_REMOTE_CACHE": artifact,
        "VLLM_CACHE_ROOT": env[constants.ENV_ENGINE_CACHE],
        "VLLM_NEURON_DISABLE_WARMUP_COMPILE": "1",
        "NEURON_LIBTORCH_DISABLE_GRAPH_CAPTURE_BACKEND": "1",
        "VLLM_ENGINE_READY_TIMEOUT_S": "900",  # spec.runtime.startupTimeoutSeconds through the serve config
        "NEURON_LIBTORCH_COMPILATION_TIMEOUT": "900",
        "PROMETHEUS_MULTIPROC_DIR": os.path.join(env[constants.ENV_ENGINE_CACHE], "prometheus-multiproc"),
        "NEURON_LOGICAL_NC_CONFIG": "2",  # the compile's LNC, whatever the node's file says
    }
    # the previous stack's variables, and the ones that would let the engine compile, are removed
    assert {"VLLM_NEURON_FRAMEWORK", "NEURON_COMPILED_ARTIFACTS"} <= set(plan["env"]["unset"])


def test_speculative_eagle3_argv(plugin_spec):
    spec = plugin_spec(speculative={"model_uri": "hf://org/eagle3", "num_speculative_tokens": 5, "method": "eagle3"})
    argv = vllm_neuron.server_argv(spec, ServeConfig(), PROFILE, model_path="/m", draft_path="/d")
    assert json.loads(argv[argv.index("--speculative-config") + 1]) == {
        "method": "eagle3", "model": "/d", "num_speculative_tokens": 5}


def test_speculative_cannot_compile_on_cpu(plugin_spec, plugin_env, termination_log):
    spec = plugin_spec(speculative={"model_uri": "hf://org/eagle3", "num_speculative_tokens": 5, "method": "eagle3"})
    env = plugin_env(spec, compile_on_cpu=True)
    code = subprocess.run([sys.executable, "-m", "neuron_runtime.cli", "compile"], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=60).returncode
    assert code == constants.EXIT_BAD_SPEC
    assert "cannot compile speculative decoding on CPU" in termination_log.read_text()


@pytest.mark.parametrize("changes,message", [
    ({"world_size": 2, "tp_degree": 32}, "serves one model per node"),
    ({"lora_adapters": [{"name": "a", "uri": "hf://o/a"}]}, "does not support LoRA"),
    ({"instance_family": "trn1"}, "does not support instance family 'trn1'"),
    ({"speculative": {"model_uri": "hf://o/d", "num_speculative_tokens": 4, "method": "draft"}},
     "speculative method 'draft' is not supported"),
    ({"override_neuron_config": {"context_encoding_buckets": [128]}},
     "context_encoding_buckets is an NxD Inference key; on stack neuron-2.32-vllm-neuron-0.24 use "
     "num_batched_tokens_buckets"),
    ({"engine_args": ("--additional-config", "{}")}, "engine_args must not set ['--additional-config']"),
])
def test_validate_spec_rejects(plugin_spec, changes, message):
    with pytest.raises(SpecError) as err:
        vllm_neuron.validate_spec(plugin_spec(**changes), PROFILE)
    assert message in str(err.value)


# --- the neuron_config check (also the operator's) ---------------------------------------------------------------


def problems(overrides, **kw):
    args = dict(family="trn2", max_num_seqs=8, max_model_len=4096, max_num_batched_tokens=None)
    args.update(kw)
    return vllm_neuron.neuron_config_problems(PROFILE, overrides, **args)


def test_neuron_config_accepts_the_documented_settings():
    assert problems({"num_batched_tokens_buckets": [2048], "kv_segment_size_buckets": [2048],
                     "num_seqs_buckets": [1, 2, 4, 8], "on_device_sampling_config": {"all_greedy": True},
                     "decode_context_length_buckets": [1024, 2048]}, max_num_batched_tokens=2048) == []
    assert problems({"quantization": "mxfp4"}, family="trn3") == []


@pytest.mark.parametrize("overrides,kw,expected", [
    ({"num_seqs_buckets": [1, 4]}, {}, "num_seqs_buckets: the largest bucket (4) must equal spec.engine.maxNumSeqs (8)"),
    ({"num_batched_tokens_buckets": [512]}, {}, "needs spec.engine.maxNumBatchedTokens"),
    ({"num_batched_tokens_buckets": [512]}, {"max_num_batched_tokens": 1024}, "must equal spec.engine.maxNumBatchedTokens (1024)"),
    ({"num_seqs_buckets": [8, 4]}, {}, "must be strictly ascending"),
    ({"kv_segment_size_buckets": [3000]}, {}, "[3000] not in 512"),
    ({"decode_context_length_buckets": [4096]}, {}, "must be below spec.engine.maxModelLen (4096)"),
    ({"quantization": "mxfp4"}, {}, "mxfp4 is supported on trn3 only"),
    ({"quantization": "int3"}, {}, "quantization must be one of mxfp4, mxfp8"),
    ({"on_device_sampling_config": {"dynamic": True}}, {}, "has unknown keys ['dynamic']"),
    ({"tp_degree": 8}, {}, "tp_degree is an NxD Inference key; on stack neuron-2.32-vllm-neuron-0.24 use spec.tensorParallelSize"),
    ({"sequence_parallel_enabled": True}, {}, "use nothing: sequence parallelism is always on"),
    ({"made_up_key": 1}, {}, "made_up_key is not a neuron_config key of stack neuron-2.32-vllm-neuron-0.24; known keys:"),
])
def test_neuron_config_problems(overrides, kw, expected):
    found = problems(overrides, **kw)
    assert found and expected in found[0][1], found


def test_extra_args_split_keeps_server_only_flags_out_of_the_compile():
    engine, server = vllm_neuron.split_extra_args(PROFILE, [
        "--disable-log-requests", "--block-size", "32", "--max-log-len=100", "--enable-prefix-caching",
        "--no-enable-log-requests", "--tool-call-parser", "llama3_json", "--kv-cache-dtype=fp8"])
    assert engine == ("--block-size", "32", "--enable-prefix-caching", "--kv-cache-dtype=fp8")
    assert server == ("--disable-log-requests", "--max-log-len=100", "--no-enable-log-requests",
                      "--tool-call-parser", "llama3_json")


def test_cache_miss_detection():
    lines = ["INFO loading", "RuntimeError: VLLM_NEURON_DISABLE_WARMUP_COMPILE: local compile cache miss for key ab"]
    assert vllm_neuron.is_cache_miss(lines, PROFILE) == lines[1]
    assert vllm_neuron.is_cache_miss(["RuntimeError: out of memory"], PROFILE) is None


def test_workers_follow_the_cpu_request():
    assert [vllm_neuron.workers_for_cpu(c) for c in ("32", "15500m", "0.5", "bogus")] == [32, 15, 1, 8]


# --- compile and serve as real processes (the fake engine stands in for vLLM) -----------------------------------


def run_cli(command: str, env: dict, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "neuron_runtime.cli", command], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=timeout)


def test_compile_publishes_every_graph_atomically_then_hits(plugin_spec, plugin_env, termination_log):
    spec = plugin_spec(engine_args=("--block-size", "32"))
    env = plugin_env(spec)
    result = run_cli("compile", env)
    assert result.returncode == 0, result.stderr
    key_dir = os.path.join(env[constants.ENV_ARTIFACT_STORE], compile_key(spec))
    manifest = artifacts.read_manifest(key_dir)
    entries = manifest["cache_entries"]
    assert len(entries) == 3 and all(os.path.isdir(os.path.join(key_dir, e)) for e in entries)
    # the fake engine promoted one graph itself; the runtime promoted the two it left in the local cache
    assert manifest["compile"]["on"] == "cpu" and manifest["compile"]["plugin_compilation_seconds"] == 4.5
    assert manifest["spec"]["engine_args"] == ["--block-size", "32"]
    assert os.listdir(os.path.join(env[constants.ENV_ARTIFACT_STORE], constants.STAGING_DIR)) == []
    assert termination_log.read_text().startswith(f"compiled 3 graphs for artifact {compile_key(spec)} on CPU")
    again = run_cli("compile", env)
    assert again.returncode == 0 and "artifact cache hit" in again.stderr


def test_compile_that_produces_nothing_fails_and_publishes_nothing(plugin_spec, plugin_env, termination_log):
    spec = plugin_spec()
    env = plugin_env(spec)
    env[constants.ENV_FAKE_ENGINE_EXIT] = "0:3"  # the engine dies before any warm-up
    result = run_cli("compile", env)
    assert result.returncode == constants.EXIT_FAILURE
    assert "the engine exited with code 3 while compiling" in termination_log.read_text()
    assert not os.path.exists(os.path.join(env[constants.ENV_ARTIFACT_STORE], compile_key(spec)))


def serve_until_healthy(env: dict, timeout: float = 30) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "neuron_runtime.cli", "serve"], env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    port = json.loads(env[constants.ENV_SERVE_CONFIG])["port"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
            return proc
        except OSError:
            time.sleep(0.2)
    return proc


def test_serve_hits_the_cache_with_server_only_flags(plugin_spec, plugin_env):
    spec = plugin_spec(engine_args=("--block-size", "32"))
    assert run_cli("compile", plugin_env(spec)).returncode == 0
    proc = serve_until_healthy(plugin_env(spec, compile_on_cpu=False, serve_args=["--disable-log-requests"]))
    try:
        assert proc.poll() is None, proc.stdout.read().decode()
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_serve_cache_miss_exits_6_with_the_key(plugin_spec, plugin_env, termination_log):
    spec = plugin_spec()
    assert run_cli("compile", plugin_env(spec)).returncode == 0
    # An engine flag the compile did not run with: its graphs differ, so the cache-hit-only engine misses.
    env = plugin_env(spec, compile_on_cpu=False, serve_args=["--enforce-eager"])
    result = run_cli("serve", env)
    assert result.returncode == constants.EXIT_CACHE_MISS, result.stderr
    message = termination_log.read_text()
    assert f"compile-cache miss serving artifact {compile_key(spec)}" in message
    assert "instead of compiling on the Neuron node" in message


def test_serve_without_artifact_exits_3(plugin_spec, plugin_env, termination_log):
    spec = plugin_spec()
    result = run_cli("serve", plugin_env(spec, compile_on_cpu=False))
    assert result.returncode == constants.EXIT_ARTIFACT_INVALID
    assert "the compile Job must finish first" in termination_log.read_text()


def test_serve_refuses_an_artifact_from_other_compiler_versions(plugin_spec, plugin_env, termination_log, tmp_path):
    spec = plugin_spec()
    assert run_cli("compile", plugin_env(spec)).returncode == 0
    key_dir = tmp_path / "store" / compile_key(spec)
    manifest = artifacts.read_manifest(str(key_dir))
    manifest["versions"]["neuronx-cc"] = "2.26.0.0"
    artifacts.write_manifest(str(key_dir), manifest)
    env = plugin_env(spec, compile_on_cpu=False, fake=False)
    env.pop(constants.ENV_SKIP_STACK_CHECK)  # the version check is part of the stack check
    contract = read_contract(env)
    with pytest.raises(Exception) as err:
        vllm_neuron_run.check_versions(PROFILE, manifest, env, contract.key)
    assert err.value.exit_code == constants.EXIT_CACHE_MISS
    assert "neuronx-cc compiled with 2.26.0.0" in str(err.value)


def test_serve_copies_the_graphs_into_the_local_cache(plugin_spec, plugin_env, tmp_path):
    spec = plugin_spec()
    assert run_cli("compile", plugin_env(spec)).returncode == 0
    entries = artifacts.read_manifest(str(tmp_path / "store" / compile_key(spec)))["cache_entries"]
    local = tmp_path / "local-cache"
    vllm_neuron_run.sync_to_local_cache(str(tmp_path / "store" / compile_key(spec)), str(local), entries)
    assert sorted(os.listdir(local)) == entries


def test_cli_epilog_names_the_cache_miss_code():
    assert f"{constants.EXIT_CACHE_MISS} compile-cache miss" in cli.EPILOG
