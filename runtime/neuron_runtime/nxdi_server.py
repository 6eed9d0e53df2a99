"""The 2.23 stack's OpenAI server, as pure builders: its environment, its command line, where its model files are.

:func:`build_serve_env` and :func:`build_server_argv` are golden-tested; single-node serve (serve.py) and every
node of a multi-node group (multinode.py, with the node's role) build the engine from them. :func:`planned_models` says
where the model, adapters and draft will be (dry runs); :func:`materialize_models` and :func:`check_version_drift`
are the two steps before the start that do I/O (downloads, installed versions).

Source labels (F23, NX3) are defined in stacks/neuron_2_23.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional

from neuron_runtime import constants, model_source
from neuron_runtime.compile_spec import CompileSpec
from neuron_runtime.contract import ServeConfig
from neuron_runtime.errors import ArtifactError, SpecError
from neuron_runtime.neuron_config import serve_override_neuron_config, sorted_adapters
from neuron_runtime.stacks import NxdiStackProfile, installed_versions, pin_matches
from neuron_runtime.topology import SINGLE_NODE, NodeRole


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


def owned_flags(profile: NxdiStackProfile) -> set:
    """Server flags the runtime derives from the spec; extra_args must not set them."""
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
    clashes = sorted({a.split("=", 1)[0] for a in serve_config.extra_args} & owned_flags(profile))
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


def version_drift(
    profile: NxdiStackProfile, recorded: Mapping[str, Optional[str]], installed: Mapping[str, Optional[str]]
) -> List[str]:
    """Pinned packages whose installed version differs from the one the artifacts were compiled with. Under a
    family pin ("4.48.*") another release of the same family is no drift: the stack accepts any of them."""
    return [
        f"{name} compiled with {recorded.get(name)}, installed {installed.get(name)}"
        for name, pin in profile.pinned_distributions.items()
        if recorded.get(name) is not None and recorded.get(name) != installed.get(name)
        and not (pin.endswith(".*") and installed.get(name) and pin_matches(installed[name], pin))
    ]


@dataclass(frozen=True)
class LocalModels:
    """Local paths of the model (config, tokenizer and, unless pre-sharded, weights), adapters and draft."""

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
    """ArtifactError when the installed stack is not the one that compiled the artifacts (skippable for tests)."""
    if env.get(constants.ENV_SKIP_STACK_CHECK) == "1":
        return
    drift = version_drift(
        profile, manifest.get("versions") or {}, installed_versions(list(profile.pinned_distributions))
    )
    if drift:
        raise ArtifactError("artifacts were compiled by another Neuron stack: " + "; ".join(drift))
