"""``neuron-runtime compile``: compile the model with NxDI as the pinned vLLM would, then publish the artifacts.

The decisions (NeuronConfig kwargs, model class, paths) are pure functions; the I/O is a thin sequence: check the
image, look for a cached artifact, fetch the model, compile into a staging dir, publish. NxDI, torch and
transformers are imported only inside :func:`nxdi_compile`.

Multi-node (spec.world_size > 1): the operator runs an Indexed Job with one pod per node; pod r
(JOB_COMPLETION_INDEX=r) compiles node r's artifact into ``<store>/<key>/rank-<r>/`` and rank 0 then writes the
group manifest once every rank is published. This is NxDI's own manual multi-node flow (NX3 examples/multi_node.md:
each node runs with its own --start_rank_id and its own --compiled-model-path): NxDI compile() pre-shards only the
ranks start_rank_id .. start_rank_id+local_ranks_size-1 (NX3 application_base.shard_weights -> neuronx-distributed
0.12 ModelBuilder.shard_checkpoint), so every rank dir is self-contained and a serving node downloads only its
own slice of the weights.

Why not one compile on rank 0 for every node? model.pt records the node it was built for: neuronx-distributed 0.12
(aws-neuron/neuronx-distributed e834945 "Release 2.23.0") trace/model_builder.py build_nxd_model scripts
NxDModel(..., start_rank_id=...) into it and trace/spmd.py stores the start rank; at load, NX3
application_base.load_weights passes a start rank to initialize() again. Whether a rank-0 model.pt loads correctly
under another start rank is not something the sources promise, so every node compiles its own: the compiles run in
parallel (no extra wall time), the slow weight sharding is split across nodes, every rank dir is loadable on its
own, and it is the flow NxDI documents.
"""

from __future__ import annotations

import copy
import importlib
import json
import logging
import os
import sys
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, TextIO, Tuple

from neuron_runtime import artifacts, compile_memory, constants, model_source, testhooks
from neuron_runtime.compile_spec import CompileSpec
from neuron_runtime.dryrun import print_plan
from neuron_runtime.contract import Contract, local_artifacts_dir
from neuron_runtime.errors import CompileError, ModelSourceError, RuntimeFailure, SpecError
from neuron_runtime.neuron_config import build_neuron_config_kwargs, draft_neuron_config_updates, sorted_adapters
from neuron_runtime.stacks import ENGINE_VLLM_NEURON, NxdiStackProfile, check_installed_stack, installed_versions

log = logging.getLogger(__name__)

# (spec, profile, model_path, model_config, neuron_config_kwargs, draft_path, staging_dir) -> None
CompileFn = Callable[[CompileSpec, NxdiStackProfile, str, Mapping[str, Any], Dict[str, Any], Optional[str], str], None]


def select_model_class(architectures: Sequence[str], profile: NxdiStackProfile) -> Tuple[str, str, str]:
    """(architecture, NxDI module, class) for the first supported architecture, like F23
    neuronx_distributed.py _get_model_architecture."""
    for arch in architectures:
        if arch in profile.supported_models:
            module, cls = profile.supported_models[arch]
            return arch, module, cls
    raise SpecError(
        f"model architectures {list(architectures)} are not supported by stack {profile.id}; "
        f"supported: {sorted(profile.supported_models)}"
    )


def read_model_config(model_dir: str) -> Dict[str, Any]:
    path = os.path.join(model_dir, "config.json")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise ModelSourceError(f"cannot read the model's config.json at {path}: {e}") from None
    if not isinstance(data, dict):
        raise ModelSourceError(f"{path} is not a JSON object")
    return data


def compile_env(spec: CompileSpec, profile: NxdiStackProfile) -> Dict[str, str]:
    """Env the compile needs in-process: NxDI reads the LNC env var before the kwarg (NX3 models/config.py)."""
    return {profile.env_logical_nc_config: str(spec.lnc)}


def nxdi_compile(
    spec: CompileSpec,
    profile: NxdiStackProfile,
    model_path: str,
    model_config: Mapping[str, Any],
    neuron_config_kwargs: Dict[str, Any],
    draft_path: Optional[str],
    staging_dir: str,
) -> None:
    """Trace and compile with NxDI into ``staging_dir``, building the config objects as F23's loader does
    (F23 NeuronCausalLM.load_weights / NeuronSpeculationCausalLM.load_weights). Needs the Neuron stack."""
    arch, module_name, class_name = select_model_class(model_config.get("architectures") or [], profile)
    model_cls = getattr(importlib.import_module(module_name), class_name)
    from neuronx_distributed_inference.utils.hf_adapter import load_pretrained_config

    neuron_config = model_cls.get_neuron_config_cls()(**copy.deepcopy(neuron_config_kwargs))
    config = model_cls.get_config_cls()(neuron_config, load_config=load_pretrained_config(model_path))
    if spec.speculative:
        from neuronx_distributed_inference.models.config import FusedSpecNeuronConfig

        draft_neuron_config = copy.deepcopy(config.neuron_config)
        for name, value in draft_neuron_config_updates(neuron_config_kwargs).items():
            setattr(draft_neuron_config, name, value)
        draft_config = model_cls.get_config_cls()(draft_neuron_config, load_config=load_pretrained_config(draft_path))
        config.fused_spec_config = FusedSpecNeuronConfig(
            model_cls._model_cls, draft_config=draft_config, draft_model_path=draft_path
        )
    log.info("compiling %s (%s) into %s", model_path, class_name, staging_dir)
    # Multi-node: the kwargs carry this node's start_rank_id/local_ranks_size, so compile() pre-shards exactly the
    # ranks this node loads (see the module docstring).
    model_cls(model_path, config).compile(staging_dir)

    if arch in profile.models_with_tokenizer_in_artifacts:
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(model_path).save_pretrained(staging_dir)


def compile_rank(env: Mapping[str, str], spec: CompileSpec) -> int:
    """Which node this compile pod builds: JOB_COMPLETION_INDEX of the Indexed Job (0 for a single node)."""
    name = constants.ENV_JOB_COMPLETION_INDEX
    text = env.get(name, "").strip()
    if spec.world_size == 1:
        if text not in ("", "0"):
            raise SpecError(f"{name}={text} but the spec has world_size 1; a single-node compile is one pod")
        return 0
    if not text:
        raise SpecError(
            f"multi-node compile (world_size {spec.world_size}) needs {name}: run it as an Indexed Job with "
            f"completions = parallelism = {spec.world_size}"
        )
    try:
        rank = int(text)
    except ValueError:
        raise SpecError(f"{name} must be an integer, got {text!r}") from None
    if not 0 <= rank < spec.world_size:
        raise SpecError(f"{name}={rank} is outside 0..{spec.world_size - 1} (world_size {spec.world_size})")
    return rank


def compile_plan(
    contract: Contract, env: Mapping[str, str], model_config: Optional[Mapping[str, Any]], rank: int = 0
) -> dict:
    """What compile will do, as data (printed by --dry-run, logged otherwise). Pure."""
    spec, profile = contract.spec, contract.profile
    cache = model_source.model_cache_dir(env)
    kwargs = build_neuron_config_kwargs(spec, profile, model_config=model_config, model_cache=cache, rank=rank)
    parts = [contract.key] + ([artifacts.rank_dir_name(rank)] if spec.world_size > 1 else [])
    if contract.store.startswith("s3://"):
        artifact = "/".join([contract.store] + parts) + "/"
    else:
        artifact = os.path.join(contract.store, *parts)
    plan = {
        "command": "compile",
        "key": contract.key,
        "stack": profile.id,
        "artifact": artifact,
        "model_path": model_source.local_model_path(spec.model_uri, spec.model_revision, model_cache=cache),
        "lora_adapters": {
            a.name: model_source.local_model_path(a.uri, model_cache=cache) for a in sorted_adapters(spec)
        },
        "draft_model_path": (
            model_source.local_model_path(spec.speculative.model_uri, model_cache=cache) if spec.speculative else None
        ),
        "env": {"set": compile_env(spec, profile), "unset": []},
        "neuron_config": kwargs,
    }
    if kwargs.get("torch_dtype") is None:
        plan["notes"] = ["torch_dtype is resolved from the model's config.json at compile time (dtype auto)"]
    if spec.world_size > 1:
        plan["rank"] = rank
        plan["world_size"] = spec.world_size
        plan["group_manifest"] = "written by this pod once every rank is published" if rank == 0 else "rank 0"
    return plan


def _local_model_config(spec: CompileSpec, env: Mapping[str, str]) -> Optional[Dict[str, Any]]:
    """config.json when the model is already on local disk (pvc://, paths); None otherwise. For dry runs."""
    path = model_source.local_model_path(
        spec.model_uri, spec.model_revision, model_cache=model_source.model_cache_dir(env)
    )
    try:
        return read_model_config(path)
    except ModelSourceError:
        return None


def run_compile(
    contract: Contract,
    env: Mapping[str, str],
    *,
    dry_run: bool = False,
    out: TextIO = sys.stdout,
    compile_fn: CompileFn = nxdi_compile,
    s3_client: Any = None,
) -> int:
    if contract.profile.engine == ENGINE_VLLM_NEURON:
        from neuron_runtime import vllm_neuron_run

        return vllm_neuron_run.run_compile(contract, env, dry_run=dry_run, out=out, s3_client=s3_client)
    spec, key, profile = contract.spec, contract.key, contract.profile
    rank = compile_rank(env, spec)
    if dry_run:
        return print_plan(compile_plan(contract, env, _local_model_config(spec, env), rank), out)

    check_installed_stack(profile, env)
    store = artifacts.open_store(contract.store, local_artifacts_dir(env), s3_client)
    if store.lookup(key):
        log.info("artifact cache hit: %s already holds key %s; nothing to compile", store.location, key)
        return 0
    if spec.world_size > 1:
        return _run_rank_compile(contract, env, store, rank, compile_fn)

    versions = installed_versions(profile.recorded_distributions)
    build, kwargs = _prepare_build(contract, env, 0, compile_fn)
    result = store.publish(key, build, lambda: artifacts.build_manifest(key, spec, versions, kwargs), profile)
    if result == artifacts.CACHE_HIT:
        log.info("artifact cache hit: %s already holds key %s; nothing to compile", store.location, key)
    else:
        log.info("artifacts for key %s %s at %s", key, result, store.location)
    return 0


def _run_rank_compile(contract: Contract, env: Mapping[str, str], store: Any, rank: int, compile_fn: CompileFn) -> int:
    """One node of a multi-node compile: publish rank-<r>/, and on rank 0 also the group manifest."""
    spec, key, profile = contract.spec, contract.key, contract.profile
    if store.lookup_rank(key, rank):
        log.info("rank %d of key %s is already published at %s; not compiling it again", rank, key, store.location)
    else:
        versions = installed_versions(profile.recorded_distributions)
        build, kwargs = _prepare_build(contract, env, rank, compile_fn)
        result = store.publish_rank(
            key, rank, build, lambda: artifacts.build_rank_manifest(key, spec, versions, kwargs, rank), profile
        )
        log.info("rank %d of key %s %s at %s", rank, key, result, store.location)
    if rank != 0:
        return 0
    timeout = _float_env(env, constants.ENV_COMPILE_GROUP_TIMEOUT, constants.DEFAULT_COMPILE_GROUP_TIMEOUT_SECONDS)
    manifests = artifacts.wait_for_ranks(store, key, spec.world_size, timeout)
    store.publish_group(key, artifacts.build_group_manifest(key, spec, manifests))
    log.info("all %d ranks of key %s are published; group manifest written at %s", spec.world_size, key, store.location)
    return 0


def _float_env(env: Mapping[str, str], name: str, default: float) -> float:
    text = env.get(name, "").strip()
    if not text:
        return float(default)
    try:
        value = float(text)
    except ValueError:
        raise SpecError(f"{name} must be a number of seconds, got {text!r}") from None
    if value <= 0:
        raise SpecError(f"{name} must be positive, got {text!r}")
    return value


def _prepare_build(contract: Contract, env: Mapping[str, str], rank: int, compile_fn: CompileFn):
    """Fetch the model, adapters and draft, compute the NeuronConfig for ``rank``; returns (build, kwargs)."""
    spec, profile = contract.spec, contract.profile
    model_path = model_source.materialize(spec.model_uri, spec.model_revision, include_weights=True, env=env)
    for adapter in sorted_adapters(spec):
        # NxDI reads adapter_config.json and weights while building LoraServingConfig (NX3 lora_serving/config.py).
        model_source.materialize(adapter.uri, None, include_weights=True, env=env)
    draft_path = (
        model_source.materialize(spec.speculative.model_uri, None, include_weights=True, env=env)
        if spec.speculative
        else None
    )
    # Before NxDI loads anything: a checkpoint that cannot fit fails now, naming the field to raise.
    compile_memory.check_fits(compile_memory.checkpoint_bytes([model_path, draft_path]),
                              compile_memory.cgroup_memory_limit(testhooks.cgroup_root(env)), nodes=spec.world_size)
    model_config = read_model_config(model_path)
    plan = compile_plan(contract, env, model_config, rank)
    kwargs = plan["neuron_config"]
    log.info("NeuronConfig kwargs: %s", json.dumps(kwargs, sort_keys=True))
    os.environ.update(compile_env(spec, profile))  # NxDI reads os.environ, not our env mapping

    def build(staging: str) -> None:
        try:
            compile_fn(spec, profile, model_path, model_config, kwargs, draft_path, staging)
        except RuntimeFailure:
            raise
        except Exception as e:  # NxDI/compiler errors of any type: report them as a compile failure
            log.exception("NxDI compile failed")
            raise CompileError(f"NxDI compile failed: {type(e).__name__}: {e}") from e

    return build, kwargs
