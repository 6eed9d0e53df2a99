"""``neuron-runtime serve``: verify the compiled artifacts, then run vLLM's OpenAI server on them.

``build_serve_env`` and ``build_server_argv`` are pure (golden-tested); ``run_serve`` does the I/O: fetch/verify
artifacts (exit 3 instead of vLLM's silent in-pod recompile), make the model's config/tokenizer, LoRA adapters and
draft model available locally, start the server as a child and forward signals to it.

Why a child process and not ``os.execvpe``: multi-node serving (multinode.py) keeps this process alive next to the
engine (rendezvous with peers before start, watch the group, tear the engine down when a peer dies). Forwarding
SIGTERM/SIGINT and exiting with the child's code keeps the pod's behaviour identical to exec, and the child is
reaped together with any orphans, which matters because this process is PID 1 in the container.

``spec.world_size > 1`` is handed to :func:`neuron_runtime.multinode.run_multinode_serve`, which reuses the pure
builders below with the node's role.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, TextIO

from neuron_runtime import artifacts, constants, model_source
from neuron_runtime.compile_spec import CompileSpec
from neuron_runtime.dryrun import env_diff, print_plan
from neuron_runtime.contract import Contract, ServeConfig, local_artifacts_dir, read_serve_config
from neuron_runtime.errors import ArtifactError, RuntimeFailure, SpecError
from neuron_runtime.neuron_config import build_neuron_config_kwargs, serve_override_neuron_config, sorted_adapters
from neuron_runtime.stacks import ENGINE_VLLM_NEURON, NxdiStackProfile, installed_versions
from neuron_runtime.termination import write_termination_message
from neuron_runtime.testhooks import engine_command
from neuron_runtime.topology import SINGLE_NODE, NodeRole

log = logging.getLogger(__name__)

FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def build_serve_env(
    base_env: Mapping[str, str],
    spec: CompileSpec,
    profile: NxdiStackProfile,
    artifact_dir: str,
) -> Dict[str, str]:
    """The single-node server's environment: ``base_env`` plus the stack's Neuron/vLLM settings. Pure.
    (Multi-node: multinode.build_multinode_env starts from this and adds the node's multi-node settings.)"""
    env = dict(base_env)
    env[profile.env_framework] = profile.framework_nxdi  # never fall back to transformers-neuronx
    env[profile.env_compiled_artifacts] = artifact_dir
    env[profile.env_logical_nc_config] = str(spec.lnc)  # must equal the compile-time LNC
    env.setdefault(profile.env_rpc_timeout, profile.default_rpc_timeout_ms)  # a pod-level value wins
    # F23 neuron_worker.py reads WORLD_SIZE even without multi-node; an inherited value > 1 would make a single
    # server wait for peers that never come.
    for name in (profile.env_world_size, profile.env_multi_node, profile.env_rank_id):
        env.pop(name, None)
    # NEURON_RT_VISIBLE_CORES is left alone on purpose: the device plugin sets it to the cores it allocated.
    return env


def lora_module_arg(name: str, path: str) -> str:
    # F23 cli_args.py LoRAParserAction: "name=path" only when neither side has "=" or ","; else JSON.
    if "=" in name or "=" in path or "," in name or "," in path:
        return json.dumps({"name": name, "path": path}, separators=(",", ":"))
    return f"{name}={path}"


def _owned_flags(profile: NxdiStackProfile) -> set:
    f = profile.flags
    return {
        f.model, f.port, f.tensor_parallel_size, f.max_num_seqs, f.max_model_len, f.dtype, f.device,
        f.served_model_name, f.override_neuron_config, f.enable_lora, f.max_loras, f.max_lora_rank, f.lora_modules,
        f.speculative_model, f.num_speculative_tokens, f.speculative_max_model_len, *f.reserved_aliases,
    }  # fmt: skip


def build_server_argv(
    spec: CompileSpec,
    serve_config: ServeConfig,
    profile: NxdiStackProfile,
    *,
    model_path: str,
    adapter_paths: Mapping[str, str],
    draft_path: Optional[str] = None,
    role: NodeRole = SINGLE_NODE,
    python: str = "python",
) -> List[str]:
    """The OpenAI server command line for ``spec`` on ``profile``'s vLLM, for node ``role``. Pure.

    Multi-node nodes get the same flags (``--tensor-parallel-size`` stays the total TP degree: the fork's Neuron
    platform runs one process per node whatever it is, F23 vllm/platforms/neuron.py and vllm/config.py
    ParallelConfig "uni"), plus their own start_rank_id/local_ranks_size in --override-neuron-config."""
    f = profile.flags
    clashes = sorted({a.split("=", 1)[0] for a in serve_config.extra_args} & _owned_flags(profile))
    if clashes:
        raise SpecError(f"extra_args must not set {clashes}: they are derived from the spec and the compiled model")
    has_lora = bool(spec.lora_adapters)
    if serve_config.enable_lora != has_lora:
        raise SpecError(
            f"serve config enable_lora={serve_config.enable_lora} but the compiled model has "
            f"{len(spec.lora_adapters)} LoRA adapter(s); LoRA serving follows the compiled adapters"
        )
    override = serve_override_neuron_config(spec, role)
    argv = [
        python, "-m", profile.server_module,
        f.model, model_path,
        f.port, str(serve_config.port),
        f.tensor_parallel_size, str(spec.tp_degree),
        f.max_num_seqs, str(spec.max_num_seqs),
        f.max_model_len, str(spec.max_model_len),
        f.dtype, spec.dtype,
        f.device, profile.device,
        f.served_model_name, serve_config.served_model_name or model_source.display_name(spec.model_uri),
        f.override_neuron_config, json.dumps(override, sort_keys=True, separators=(",", ":")),
    ]  # fmt: skip
    if has_lora:
        count = len(spec.lora_adapters)
        max_loras = serve_config.max_loras or count
        if max_loras < count:
            # F23 neuronx_distributed_model_runner._get_nxdi_lora_config raises the same at start-up
            raise SpecError(f"max_loras={max_loras} is less than the {count} compiled LoRA adapters")
        argv += [f.enable_lora, f.max_loras, str(max_loras)]
        argv += [f.max_lora_rank, str(spec.max_lora_rank or profile.default_max_lora_rank)]
        argv += [f.lora_modules] + [lora_module_arg(a.name, adapter_paths[a.name]) for a in sorted_adapters(spec)]
    if spec.speculative:
        if not draft_path:
            raise SpecError("speculative decoding needs the draft model path")
        argv += [
            f.speculative_model,
            draft_path,
            f.num_speculative_tokens,
            str(spec.speculative.num_speculative_tokens),
        ]
        if spec.speculative.max_model_len:
            argv += [f.speculative_max_model_len, str(spec.speculative.max_model_len)]
    return argv + list(serve_config.extra_args)


def serving_artifact_dir(contract: Contract, env: Mapping[str, str]) -> str:
    """Where the server will read the artifacts: the store itself, or the local copy of an S3 store. Pure."""
    if contract.store.startswith("s3://"):
        return os.path.join(local_artifacts_dir(env), contract.key)
    return os.path.join(contract.store, contract.key)


def version_drift(profile: NxdiStackProfile, recorded: Mapping[str, Optional[str]], installed: Mapping[str, Optional[str]]):
    """Pinned packages whose installed version differs from the one the artifacts were compiled with."""
    return [
        f"{name} compiled with {recorded.get(name)}, installed {installed.get(name)}"
        for name in profile.pinned_distributions
        if recorded.get(name) is not None and recorded.get(name) != installed.get(name)
    ]


@dataclass(frozen=True)
class LocalModels:
    model_path: str
    adapter_paths: Dict[str, str]
    draft_path: Optional[str]


def planned_models(spec: CompileSpec, env: Mapping[str, str]) -> LocalModels:
    """Where the model, adapters and draft will be on local disk (no I/O; for dry runs)."""
    cache = model_source.model_cache_dir(env)
    return LocalModels(
        model_path=model_source.local_model_path(spec.model_uri, spec.model_revision, model_cache=cache),
        adapter_paths={a.name: model_source.local_model_path(a.uri, model_cache=cache) for a in spec.lora_adapters},
        draft_path=(
            model_source.local_model_path(spec.speculative.model_uri, model_cache=cache) if spec.speculative else None
        ),
    )


def materialize_models(spec: CompileSpec, manifest: Mapping[str, Any], env: Mapping[str, str]) -> LocalModels:
    """Make the model's files, the adapters and the draft available locally for the artifact ``manifest``."""
    # Self-contained artifacts only need config + tokenizer; shard-on-load artifacts re-read the HF weights from
    # the same local path they were compiled from (NX3 application_base.load_weights).
    with_weights = not (manifest.get("neuron_config") or {}).get("save_sharded_checkpoint", False)
    return LocalModels(
        model_path=model_source.materialize(
            spec.model_uri, spec.model_revision, include_weights=with_weights, env=env
        ),
        adapter_paths={
            a.name: model_source.materialize(a.uri, None, include_weights=True, env=env) for a in sorted_adapters(spec)
        },
        draft_path=(
            model_source.materialize(spec.speculative.model_uri, None, include_weights=False, env=env)
            if spec.speculative
            else None
        ),
    )


def check_version_drift(profile: NxdiStackProfile, manifest: Mapping[str, Any], env: Mapping[str, str]) -> None:
    if env.get(constants.ENV_SKIP_STACK_CHECK) == "1":
        return
    drift = version_drift(
        profile, manifest.get("versions") or {}, installed_versions(list(profile.pinned_distributions))
    )
    if drift:
        raise ArtifactError("artifacts were compiled by another Neuron stack: " + "; ".join(drift))


def exit_code_from_status(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code  # killed by signal N -> 128+N, as a shell reports it


def run_and_forward(argv: List[str], env: Mapping[str, str]) -> int:
    """Run ``argv`` as a child, forward SIGTERM/SIGINT to it, reap it (and orphans), return its exit code."""
    try:
        # Own session: a terminal's Ctrl-C reaches the server once, through us, not twice.
        child = subprocess.Popen(argv, env=dict(env), start_new_session=True)
    except OSError as e:
        raise RuntimeFailure(f"cannot start the server {argv[:3]}: {e}") from None

    def forward(signum, _frame):
        try:
            child.send_signal(signum)
        except ProcessLookupError:
            pass

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED_SIGNALS}
    try:
        while True:
            try:
                pid, status = os.waitpid(-1, 0)  # any child: as PID 1 we also reap the server's orphans
            except ChildProcessError:
                return child.wait()
            if pid == child.pid:
                child.returncode = exit_code_from_status(status)
                return child.returncode
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_serve(
    contract: Contract,
    env: Mapping[str, str],
    *,
    dry_run: bool = False,
    out: TextIO = sys.stdout,
    s3_client=None,
    runner=run_and_forward,
) -> int:
    if contract.profile.engine == ENGINE_VLLM_NEURON:
        from neuron_runtime import vllm_neuron_run

        return vllm_neuron_run.run_serve(contract, env, dry_run=dry_run, out=out, s3_client=s3_client)
    spec, key, profile = contract.spec, contract.key, contract.profile
    if spec.world_size > 1:
        from neuron_runtime.multinode import run_multinode_serve

        return run_multinode_serve(contract, env, dry_run=dry_run, out=out, s3_client=s3_client)
    serve_config = read_serve_config(env)
    cache = model_source.model_cache_dir(env)
    artifact_dir = serving_artifact_dir(contract, env)

    if dry_run:
        models = planned_models(spec, env)
        server_env = build_serve_env(env, spec, profile, artifact_dir)
        plan = {
            "command": "serve",
            "key": key,
            "stack": profile.id,
            "artifact": artifact_dir,
            "argv": build_server_argv(
                spec, serve_config, profile, model_path=models.model_path, adapter_paths=models.adapter_paths,
                draft_path=models.draft_path, python=sys.executable,
            ),
            "env": env_diff(env, server_env),
            "neuron_config": build_neuron_config_kwargs(spec, profile, model_cache=cache),
        }  # fmt: skip
        return print_plan(plan, out)

    artifact_dir = artifacts.local_copy(artifacts.open_store(contract.store, local_artifacts_dir(env), s3_client),
                                        key, artifact_dir)
    manifest = artifacts.verify_artifact_dir(artifact_dir, key, spec, profile)
    check_version_drift(profile, manifest, env)
    models = materialize_models(spec, manifest, env)
    argv = build_server_argv(
        spec, serve_config, profile, model_path=models.model_path, adapter_paths=models.adapter_paths,
        draft_path=models.draft_path, python=sys.executable,
    )  # fmt: skip
    argv = engine_command(argv, env, "leader", "", serve_config.port)
    server_env = build_serve_env(env, spec, profile, artifact_dir)
    log.info("starting server: %s", " ".join(argv))
    log.info("server env changes: %s", json.dumps(env_diff(env, server_env)["set"], sort_keys=True))
    code = runner(argv, server_env)
    if code != 0:
        write_termination_message(f"vLLM server exited with code {code}", env)
    return code
