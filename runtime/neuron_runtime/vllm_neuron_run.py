"""``neuron-runtime compile|serve`` on a vllm-neuron stack: the I/O around :mod:`neuron_runtime.vllm_neuron`.

compile: check the image, look for the artifact, fetch the model, then run the serving command line under the
plugin's CPU-compile environment with the remote cache pointed at a staging directory of the store; once the server
answers /health its warm-up compiled every graph, so it is stopped, every graph the plugin kept only in its local
cache is promoted to the staging directory (the plugin's save_cache; the SDK 2.32 docs disagree on whether CPU
compile promotes by itself), our manifest is written last and the directory is published atomically as
``<store>/<key>/``.

serve: fetch (S3) or mount (PVC) ``<store>/<key>/``, verify it, copy its graphs into the engine's local cache (the
plugin's cache-hit-only check looks there before the remote cache: vllm-neuron docs cpu_compilation.md "Sync to
production"), then run the server cache-hit-only. A graph it does not find ends the server; that is reported as a
cache miss (exit 6) naming the key, never compiled on the Neuron node.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import shutil
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, List, Mapping, Optional, TextIO

from neuron_runtime import artifacts, constants, model_source, process, testhooks, vllm_neuron
from neuron_runtime.dryrun import env_diff, print_plan
from neuron_runtime.contract import Contract, ServeConfig, local_artifacts_dir, read_serve_config
from neuron_runtime.errors import ArtifactError, CacheMiss, CompileError, SpecError
from neuron_runtime.stacks import PluginStackProfile, check_installed_stack, installed_versions
from neuron_runtime.termination import write_termination_message

log = logging.getLogger(__name__)

HEALTH_POLL_SECONDS = 2.0
ENGINE_STOP_GRACE_SECONDS = 30.0
OUTPUT_TAIL_LINES = 200  # engine output kept to explain a failure
LOOPBACK = "127.0.0.1"


def _profile(contract: Contract) -> PluginStackProfile:
    if not isinstance(contract.profile, PluginStackProfile):
        raise SpecError(f"stack {contract.profile.id} is not a vllm-neuron stack")
    return contract.profile


def engine_cache_root(env: Mapping[str, str]) -> str:
    return env.get(constants.ENV_ENGINE_CACHE) or constants.DEFAULT_ENGINE_CACHE


def compile_workers(env: Mapping[str, str], profile: PluginStackProfile) -> int:
    """The operator's value (from the pod's CPU request), else the CPUs this process may run on."""
    text = env.get(profile.env_parallel_compile_workers, "").strip()
    if text.isdigit() and int(text) > 0:
        return int(text)
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def compiles_on_cpu(env: Mapping[str, str], profile: PluginStackProfile) -> bool:
    """The operator puts compile pods on CPU nodes with the plugin's CPU-compile switch on; elsewhere (speculative
    decoding) it runs them on the target instance type without it."""
    return env.get(profile.env_cpu_compile) == "1"


def _timeout(env: Mapping[str, str], profile: PluginStackProfile) -> int:
    text = env.get(profile.env_compilation_timeout, "").strip()
    return int(text) if text.isdigit() else 4 * 3600


# --- the engine as a child process ----------------------------------------------------------------------------------


@dataclass
class EngineRun:
    code: int
    ready: bool  # /health answered 200 before the engine was stopped or exited
    seconds: float
    metrics: str = ""  # /metrics text captured while ready
    tail: List[str] = field(default_factory=list)


def free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def http_get(url: str, timeout: float = 5.0) -> Optional[str]:
    """The body of a 200 answer, else None (not listening yet, 503 while the engine starts)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.read().decode("utf-8", "replace") if response.status == 200 else None
    except (OSError, urllib.error.URLError, ValueError):
        return None


def _pump(stream, tail: Deque[str], sink: TextIO) -> None:
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", "replace")
        tail.append(line.rstrip("\n"))
        sink.write(line)
        sink.flush()


def run_engine(
    argv: List[str],
    env: Mapping[str, str],
    *,
    port: int,
    stop_when_ready: bool,
    on_ready: Optional[Callable[[str], None]] = None,
    sink: TextIO = sys.stderr,
    clock: Callable[[], float] = time.monotonic,
) -> EngineRun:
    """Run the engine with its output copied to ``sink`` (and kept for errors), SIGTERM/SIGINT forwarded to it.

    ``stop_when_ready``: stop it as soon as /health answers 200 (the compile run: warm-up is over). Otherwise wait
    for it to exit, calling ``on_ready(metrics text)`` once when it first becomes healthy (serving)."""
    started = clock()
    child = process.start(argv, env, "engine", capture_output=True)
    tail: Deque[str] = collections.deque(maxlen=OUTPUT_TAIL_LINES)
    reader = threading.Thread(target=_pump, args=(child.stdout, tail, sink), daemon=True)
    reader.start()
    stopping = threading.Event()

    def forward(signum, _frame):
        stopping.set()
        try:
            os.killpg(child.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    ready, metrics = False, ""
    with process.handling_signals(forward):
        while True:
            code = process.reap(child)  # as PID 1, the engine's orphans too
            if code is not None:
                break
            if not ready and not stopping.is_set() and http_get(f"http://{LOOPBACK}:{port}/health") is not None:
                ready = True
                metrics = http_get(f"http://{LOOPBACK}:{port}/metrics") or ""
                if stop_when_ready:
                    process.stop_group(child, ENGINE_STOP_GRACE_SECONDS)
                    code = 0
                    break
                if on_ready is not None:
                    on_ready(metrics)
            time.sleep(HEALTH_POLL_SECONDS if not ready else 0.5)
    reader.join(timeout=5)
    return EngineRun(code=code, ready=ready, seconds=clock() - started, metrics=metrics, tail=list(tail))


def metric_values(text: str, name: str) -> List[float]:
    """Sample values of metric ``name`` in Prometheus text (any labels)."""
    values = []
    for line in text.splitlines():
        if line.startswith(name) and line[len(name):len(name) + 1] in ("{", " "):
            try:
                values.append(float(line.rsplit(" ", 1)[1]))
            except (IndexError, ValueError):
                continue
    return values


# --- compile --------------------------------------------------------------------------------------------------------


def _compile_argv(contract: Contract, port: int, model_path: str, draft_path: Optional[str]) -> List[str]:
    """The serving command line with the server-only flags left out (they play no part in compiling), listening
    on loopback only."""
    serve_config = ServeConfig(port=port)
    return vllm_neuron.server_argv(contract.spec, serve_config, _profile(contract), model_path=model_path,
                                   draft_path=draft_path, python=sys.executable, compile_host=LOOPBACK)


def compile_plan(contract: Contract, env: Mapping[str, str]) -> Dict[str, Any]:
    """What compile will do, as data (printed by --dry-run). Pure."""
    spec, profile = contract.spec, _profile(contract)
    cache = model_source.model_cache_dir(env)
    model_path = model_source.local_model_path(spec.model_uri, spec.model_revision, model_cache=cache)
    draft_path = (model_source.local_model_path(spec.speculative.model_uri, model_cache=cache)
                  if spec.speculative else None)
    staging = os.path.join(contract.store if not contract.store.startswith("s3://") else local_artifacts_dir(env),
                           constants.STAGING_DIR, f"{contract.key}-<random>")
    on_cpu = compiles_on_cpu(env, profile)
    forced = vllm_neuron.compile_env(
        profile, spec, on_cpu=on_cpu, remote_cache=staging, cache_root=engine_cache_root(env),
        workers=compile_workers(env, profile), timeout_seconds=_timeout(env, profile))
    return {
        "command": "compile",
        "key": contract.key,
        "stack": profile.id,
        "compile_on": "cpu" if on_cpu else "neuron",
        "artifact": (contract.store.rstrip("/") + "/" + contract.key + "/" if contract.store.startswith("s3://")
                     else os.path.join(contract.store, contract.key)),
        # port 0 stands for the free loopback port chosen when the compile runs
        "argv": _compile_argv(contract, 0, model_path, draft_path),
        "engine_env": forced,
        "env": env_diff(env, vllm_neuron.engine_env(env, forced, profile)),
        "additional_config": vllm_neuron.additional_config(spec),
        "model_path": model_path,
        "draft_model_path": draft_path,
    }


def promote_local_entries(local_dir: str, remote_dir: str, profile: PluginStackProfile,
                          env: Mapping[str, str]) -> List[str]:
    """Promote every graph of the engine's local cache that the remote cache lacks, with the plugin's own
    save_cache (copy to staging, atomic rename, no-op when present: compilation_cache.md "API Reference")."""
    try:
        names = os.listdir(local_dir)
    except OSError:
        return []
    missing = [n for n in vllm_neuron.cache_entry_names(names, profile)
               if not os.path.isdir(os.path.join(remote_dir, n))]
    if not missing:
        return []
    module_name, function_name = profile.save_cache_api
    try:
        module = __import__(module_name, fromlist=[function_name])
        save_cache = getattr(module, function_name)
    except (ImportError, AttributeError):
        if not testhooks.test_mode(env):
            raise CompileError(f"cannot promote {len(missing)} compiled graphs: {module_name}.{function_name} is not "
                               "importable in this image") from None
        save_cache = testhooks.copy_cache_entry  # TEST HOOK: no plugin installed
    for name in missing:
        save_cache(local_dir, remote_dir, name)
    return missing


def run_compile(contract: Contract, env: Mapping[str, str], *, dry_run: bool = False, out: TextIO = sys.stdout,
                s3_client: Any = None, engine: Callable[..., EngineRun] = run_engine) -> int:
    spec, key, profile = contract.spec, contract.key, _profile(contract)
    vllm_neuron.validate_spec(spec, profile)
    on_cpu = compiles_on_cpu(env, profile)
    if on_cpu and spec.speculative is not None and not profile.features.cpu_compile_speculative:
        raise SpecError(f"stack {profile.id} cannot compile speculative decoding on CPU; run the compile on the "
                        "target instance type")
    if dry_run:
        return print_plan(compile_plan(contract, env), out)

    check_installed_stack(profile, env)
    store = artifacts.open_store(contract.store, local_artifacts_dir(env), s3_client)
    if store.lookup(key):
        log.info("artifact cache hit: %s already holds key %s; nothing to compile", store.location, key)
        write_termination_message(f"artifact {key} was already compiled; nothing to do", env)
        return 0
    model_path = model_source.materialize(spec.model_uri, spec.model_revision, include_weights=True, env=env)
    draft_path = (model_source.materialize(spec.speculative.model_uri, None, include_weights=True, env=env)
                  if spec.speculative else None)
    versions = installed_versions(profile.recorded_distributions)
    cache_root = engine_cache_root(env)
    outcome: Dict[str, Any] = {}

    def build(staging: str) -> None:
        port = free_loopback_port()
        forced = vllm_neuron.compile_env(
            profile, spec, on_cpu=on_cpu, remote_cache=staging, cache_root=cache_root,
            workers=compile_workers(env, profile), timeout_seconds=_timeout(env, profile))
        argv = testhooks.engine_command(_compile_argv(contract, port, model_path, draft_path), env, "leader",
                                        LOOPBACK, port)
        log.info("compiling artifact %s (%s): %s", key, "on CPU" if on_cpu else "on Neuron", " ".join(argv))
        run = engine(argv, vllm_neuron.engine_env(env, forced, profile), port=port, stop_when_ready=True)
        if run.code != 0 and not run.ready:
            last = next((line for line in reversed(run.tail) if line.strip()), "no output")
            raise CompileError(f"the engine exited with code {run.code} while compiling artifact {key}: {last}")
        promoted = promote_local_entries(vllm_neuron.local_cache_dir(cache_root, profile), staging, profile, env)
        entries = vllm_neuron.cache_entry_names(os.listdir(staging), profile)
        if not entries:
            raise CompileError(f"the engine compiled no graph into the cache for artifact {key}; check its log")
        plugin_seconds = sum(metric_values(run.metrics, "vllm_neuron:compilation_time_seconds"))
        outcome.update(entries=entries, seconds=round(run.seconds, 1), promoted=len(promoted),
                       plugin_compilation_seconds=round(plugin_seconds, 1) if plugin_seconds else None)

    def make_manifest() -> Dict[str, Any]:
        manifest = artifacts.build_manifest(key, spec, versions, vllm_neuron.additional_config(spec))
        manifest["cache_entries"] = outcome["entries"]
        manifest["compile"] = {"on": "cpu" if on_cpu else "neuron", "seconds": outcome["seconds"],
                               "plugin_compilation_seconds": outcome["plugin_compilation_seconds"]}
        return manifest

    result = store.publish(key, build, make_manifest, profile)
    if result == artifacts.CACHE_HIT or not outcome:
        summary = f"artifact {key} was already compiled; nothing to do"
    else:
        summary = (f"compiled {len(outcome['entries'])} graphs for artifact {key} on "
                   f"{'CPU' if on_cpu else 'Neuron'} in {outcome['seconds']:.0f}s ({result})")
    log.info("%s at %s", summary, store.location)
    write_termination_message(summary, env)  # the operator posts it as the compile's Event
    return 0


# --- serve ----------------------------------------------------------------------------------------------------------


def verify_cache_artifact(directory: str, key: str, profile: PluginStackProfile) -> Dict[str, Any]:
    """Check ``directory`` holds the complete artifact for ``key``: our manifest and every graph it lists."""
    manifest = artifacts.read_manifest(directory)
    if manifest is None:
        raise ArtifactError(f"compiled artifacts for key {key} not found at {directory} (no readable "
                            f"{constants.MANIFEST_FILE}); the compile Job must finish first")
    if manifest.get("key") != key:
        raise ArtifactError(f"artifacts at {directory} are for key {manifest.get('key')!r}, expected {key}")
    missing = artifacts.artifact_problems(directory, profile, manifest)
    if missing:
        raise ArtifactError(f"compiled artifacts for key {key} at {directory} are incomplete: missing {missing[:5]}")
    return manifest


def check_versions(profile: PluginStackProfile, manifest: Mapping[str, Any], env: Mapping[str, str], key: str) -> None:
    """A graph's cache key includes the compiler and framework versions (compilation_cache.md "Cache Key"): with
    other versions installed, every lookup would miss. Say so before starting instead of after."""
    if env.get(constants.ENV_SKIP_STACK_CHECK) == "1":
        return
    recorded = manifest.get("versions") or {}
    installed = installed_versions(list(profile.pinned_distributions))
    drift = [f"{name} compiled with {recorded.get(name)}, installed {installed.get(name)}"
             for name in profile.pinned_distributions
             if recorded.get(name) is not None and recorded.get(name) != installed.get(name)]
    if drift:
        raise CacheMiss(f"artifact {key} was compiled by other software than this image runs, so every graph would "
                        "miss the cache: " + "; ".join(drift))


def sync_to_local_cache(artifact_dir: str, local_dir: str, entries: List[str]) -> None:
    """Copy the artifact's graphs into the engine's local cache (its cache-hit-only check reads it first)."""
    os.makedirs(local_dir, exist_ok=True)
    for name in entries:
        target = os.path.join(local_dir, name)
        if not os.path.isdir(target):
            shutil.copytree(os.path.join(artifact_dir, name), target + ".tmp", dirs_exist_ok=True)
            os.replace(target + ".tmp", target)


def fresh_directory(path: str) -> str:
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


def serve_plan(contract: Contract, env: Mapping[str, str], artifact_dir: str, serve_config: ServeConfig,
               model_path: str, draft_path: Optional[str]) -> Dict[str, Any]:
    profile = _profile(contract)
    cache_root = engine_cache_root(env)
    forced = vllm_neuron.serve_env(
        profile, contract.spec, remote_cache=artifact_dir, cache_root=cache_root,
        prometheus_dir=vllm_neuron.prometheus_dir(cache_root),
        startup_timeout_seconds=serve_config.startup_timeout_seconds)
    argv = vllm_neuron.server_argv(contract.spec, serve_config, profile, model_path=model_path,
                                   draft_path=draft_path, python=sys.executable)
    return {"argv": argv, "env": vllm_neuron.engine_env(env, forced, profile), "forced": forced, "cache_root": cache_root}


def run_serve(contract: Contract, env: Mapping[str, str], *, dry_run: bool = False, out: TextIO = sys.stdout,
              s3_client: Any = None, engine: Callable[..., EngineRun] = run_engine) -> int:
    from neuron_runtime.serving_paths import serving_artifact_dir  # the same path rule for every stack

    spec, key, profile = contract.spec, contract.key, _profile(contract)
    serve_config = read_serve_config(env)
    vllm_neuron.validate_spec(spec, profile)
    artifact_dir = serving_artifact_dir(contract, env)
    cache = model_source.model_cache_dir(env)
    if dry_run:
        plan = serve_plan(contract, env, artifact_dir, serve_config,
                          model_source.local_model_path(spec.model_uri, spec.model_revision, model_cache=cache),
                          model_source.local_model_path(spec.speculative.model_uri, model_cache=cache)
                          if spec.speculative else None)
        return print_plan({"command": "serve", "key": key, "stack": profile.id, "artifact": artifact_dir,
                           "argv": plan["argv"], "engine_env": plan["forced"], "env": env_diff(env, plan["env"]),
                           "additional_config": vllm_neuron.additional_config(spec)}, out)

    artifact_dir = artifacts.local_copy(artifacts.open_store(contract.store, local_artifacts_dir(env), s3_client),
                                        key, artifact_dir)
    manifest = verify_cache_artifact(artifact_dir, key, profile)
    check_versions(profile, manifest, env, key)
    model_path = model_source.materialize(spec.model_uri, spec.model_revision, include_weights=True, env=env)
    draft_path = (model_source.materialize(spec.speculative.model_uri, None, include_weights=True, env=env)
                  if spec.speculative else None)
    plan = serve_plan(contract, env, artifact_dir, serve_config, model_path, draft_path)
    sync_to_local_cache(artifact_dir, vllm_neuron.local_cache_dir(plan["cache_root"], profile),
                        list(manifest.get("cache_entries") or []))
    fresh_directory(vllm_neuron.prometheus_dir(plan["cache_root"]))
    argv = testhooks.engine_command(plan["argv"], env, "leader", "", serve_config.port)
    log.info("starting server (cache-hit-only, artifact %s): %s", key, " ".join(argv))

    def report_startup(metrics: str) -> None:
        # The plugin's start-up figures (design/vllm/metrics.md); the pod has no API access, so they go to the log.
        figures = {name: sum(metric_values(metrics, name)) for name in profile.startup_metrics
                   if metric_values(metrics, name)}
        log.info("engine ready: %s", json.dumps(figures, sort_keys=True) if figures else "no vllm_neuron metrics")

    run = engine(argv, plan["env"], port=serve_config.port, stop_when_ready=False, on_ready=report_startup)
    if run.code != 0:
        miss = vllm_neuron.is_cache_miss(run.tail, profile)
        if miss is not None:
            raise CacheMiss(f"compile-cache miss serving artifact {key} at {artifact_dir}: {miss}. Serving is "
                            "cache-hit-only, so the pod stops instead of compiling on the Neuron node")
        write_termination_message(f"vLLM server exited with code {run.code}", env)
    return run.code
