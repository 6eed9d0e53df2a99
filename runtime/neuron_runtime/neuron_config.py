"""NeuronConfig keyword arguments, built exactly as the pinned vLLM would build them for the same engine settings.

The compile Job must produce artifacts that the serving vLLM accepts as its own: vLLM never recompiles when
NEURON_COMPILED_ARTIFACTS points at a loadable model, so any difference here (batch size, continuous batching,
on-device sampling, sequence parallelism, LoRA slots) would silently become the served behaviour. The rules below
mirror F23 ``vllm/model_executor/model_loader/neuronx_distributed.py`` (``_get_default_neuron_config``,
``_get_default_speculation_config``, ``_get_neuron_config_after_override``, ``NeuronSpeculationCausalLM
.load_weights``) and ``vllm/worker/neuronx_distributed_model_runner.py`` (``_get_nxdi_lora_config``).
Labels F23 / NX3 are defined in stacks/neuron_2_23.py.

Everything here is pure and returns JSON-serialisable data: ``NeuronConfig(**kwargs)`` accepts the plain dicts
(NX3 ``models/config.py`` turns ``on_device_sampling_config`` and ``lora_config`` dicts into their classes).
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Tuple

from neuron_runtime import constants
from neuron_runtime.compile_spec import LOAD_ONLY_OVERRIDE_KEYS, CompileSpec, LoraAdapter
from neuron_runtime.errors import SpecError
from neuron_runtime.model_source import local_model_path
from neuron_runtime.stacks import NxdiStackProfile
from neuron_runtime.topology import SINGLE_NODE, NodeRole

RULES_VLLM_0_7_2 = "vllm-0.7.2-nxdi"
SPECULATION_METHODS = ("draft", "eagle")
SUPPORTED_LNC = (1, 2)  # LNC=2 only exists on trn2 (reference §5)
# Load-only keys a user may set; the rank keys (start_rank_id, local_ranks_size) come from the node role only.
USER_LOAD_TIME_KEYS = LOAD_ONLY_OVERRIDE_KEYS - {"start_rank_id", "local_ranks_size"}


def sorted_adapters(spec: CompileSpec) -> Tuple[LoraAdapter, ...]:
    """Adapters in one canonical order. NxDI maps adapter names to slot indices in lora_ckpt_paths order
    (NX3 modules/lora_serving/lora_checkpoint.py), so compile and serve must list them identically; the key
    already ignores order (compile_spec.canonical_key_material)."""
    return tuple(sorted(spec.lora_adapters, key=lambda a: a.name))


def resolve_torch_dtype(
    requested: str, profile: NxdiStackProfile, model_config: Optional[Mapping[str, Any]] = None
) -> Optional[str]:
    """The NxDI torch_dtype vLLM ends up with for ``--dtype requested``.

    vLLM resolves the dtype *before* looking it up in TORCH_DTYPE_TO_NEURON_AMP (F23 vllm/config.py
    ModelConfig.__init__ -> _get_and_verify_dtype), so "auto" becomes the HF config's torch_dtype, with float32
    (or a missing dtype) downcast to float16 (bfloat16 for gemma2). The map's own "auto" -> "float32" entry is never
    reached on this path. Returns None for "auto" when the model's config.json is not at hand (dry runs).
    """
    name = requested.lower()
    if name != "auto":
        try:
            return profile.dtype_to_neuron[name]
        except KeyError:
            choices = ["auto"] + sorted(profile.dtype_to_neuron)
            raise SpecError(f"unsupported dtype {requested!r}; choose one of {choices}") from None
    if model_config is None:
        return None
    text_config = model_config.get("text_config")
    source = text_config if isinstance(text_config, dict) else model_config  # vLLM uses hf_text_config
    config_dtype = source.get("torch_dtype") or "float32"
    if config_dtype == "float32":
        return "bfloat16" if source.get("model_type") == "gemma2" else "float16"
    try:
        return profile.dtype_to_neuron[config_dtype]
    except KeyError:
        raise SpecError(f"dtype auto: the model's config.json has unsupported torch_dtype {config_dtype!r}") from None


def validate_spec(spec: CompileSpec, profile: NxdiStackProfile) -> None:
    """Reject combinations the pinned stack cannot compile or serve, with a message saying what to change."""

    def positive_int(name: str, value: Any) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise SpecError(f"{name} must be a positive integer, got {value!r}")

    positive_int("tp_degree", spec.tp_degree)
    positive_int("world_size", spec.world_size)
    positive_int("max_num_seqs", spec.max_num_seqs)
    positive_int("max_model_len", spec.max_model_len)
    if spec.lnc not in SUPPORTED_LNC:
        raise SpecError(f"lnc must be one of {list(SUPPORTED_LNC)}, got {spec.lnc!r}")
    if spec.tp_degree % spec.world_size:
        raise SpecError(f"tp_degree {spec.tp_degree} is not divisible by world_size (nodes) {spec.world_size}")
    resolve_torch_dtype(spec.dtype, profile)  # validates the name; "auto" is resolved later
    if spec.lora_adapters and spec.speculative:
        # F23 vllm/worker/neuron_worker.py: assert lora_config is None for speculative decoding
        raise SpecError("LoRA adapters and speculative decoding cannot be combined on this stack")
    names = [a.name for a in spec.lora_adapters]
    if len(set(names)) != len(names) or not all(names):
        raise SpecError(f"LoRA adapter names must be unique and non-empty, got {names}")
    if spec.max_lora_rank is not None and spec.max_lora_rank not in profile.allowed_max_lora_ranks:
        # F23 vllm/config.py LoRAConfig.__post_init__
        raise SpecError(
            f"max_lora_rank must be one of {list(profile.allowed_max_lora_ranks)}, got {spec.max_lora_rank}"
        )
    if spec.speculative:
        if spec.speculative.method not in SPECULATION_METHODS:
            raise SpecError(f"speculative.method must be one of {list(SPECULATION_METHODS)}")
        positive_int("speculative.num_speculative_tokens", spec.speculative.num_speculative_tokens)
    if "lora_modules" in spec.override_neuron_config:
        raise SpecError("override_neuron_config.lora_modules is not allowed: list adapters in the LoRA spec instead")


def speculation_flags(spec: CompileSpec) -> Dict[str, bool]:
    """What F23 users put in --override-neuron-config for speculation (SDK 2.23 trn2-llama3.3-70b tutorial;
    F23 examples/offline_inference/neuron_eagle.py)."""
    if not spec.speculative:
        return {}
    flags = {"enable_fused_speculation": True}
    if spec.speculative.method == "eagle":
        flags["enable_eagle_speculation"] = True
    return flags


def lora_serving_config(
    spec: CompileSpec,
    profile: NxdiStackProfile,
    target_modules: Optional[List[str]],
    *,
    model_cache: str,
    pvc_root: str,
) -> Optional[Dict[str, Any]]:
    """LoraServingConfig kwargs as F23's runner builds them (max_loras, max_lora_rank, target_modules,
    lora_ckpt_paths {name: path}); None without adapters, as vLLM passes lora_config=None.

    max_loras: the spec has no slot count, and F23 raises unless vLLM's --max-loras >= the number of adapters;
    every adapter is loaded at start-up (no dynamic loading on this stack), so one slot per adapter.
    """
    if not spec.lora_adapters:
        return None
    return {
        "max_loras": len(spec.lora_adapters),
        "max_lora_rank": spec.max_lora_rank or profile.default_max_lora_rank,
        "target_modules": target_modules,
        "lora_ckpt_paths": {
            a.name: local_model_path(a.uri, model_cache=model_cache, pvc_root=pvc_root) for a in sorted_adapters(spec)
        },
    }


def _vllm_defaults(
    spec: CompileSpec, torch_dtype: Optional[str], lora_config: Optional[Dict[str, Any]]
) -> Dict[str, Any]:
    # F23 neuronx_distributed.py _get_default_neuron_config, key for key and in the same order. At F23's head
    # (ad38d70 "Revert 'Remove sequence_parallel_enabled flag…'") sequence_parallel_enabled is True.
    batch_size = spec.max_num_seqs
    return {
        "tp_degree": spec.tp_degree,
        "ctx_batch_size": 1,
        "batch_size": batch_size,
        "max_context_length": spec.max_model_len,
        "seq_len": spec.max_model_len,
        "enable_bucketing": True,
        "is_continuous_batching": batch_size > 1,
        "quantized": False,
        "torch_dtype": torch_dtype,
        "padding_side": "right",
        "on_device_sampling_config": {"dynamic": True, "deterministic": False},
        "sequence_parallel_enabled": True,
        "lora_config": lora_config,
    }


def _speculation_defaults(spec: CompileSpec, torch_dtype: Optional[str]) -> Dict[str, Any]:
    # F23 neuronx_distributed.py _get_default_speculation_config: note there is no ctx_batch_size,
    # is_continuous_batching, padding_side or sequence_parallel_enabled here, and greedy on-device sampling.
    assert spec.speculative is not None
    return {
        "tp_degree": spec.tp_degree,
        "batch_size": spec.max_num_seqs,
        "max_context_length": spec.max_model_len,
        "seq_len": spec.max_model_len,
        "speculation_length": spec.speculative.num_speculative_tokens,
        "trace_tokengen_model": False,
        "enable_fused_speculation": True,
        "enable_bucketing": True,
        "quantized": False,
        "torch_dtype": torch_dtype,
        "on_device_sampling_config": {"top_k": 1, "do_sample": False},
    }


def build_neuron_config_kwargs(
    spec: CompileSpec,
    profile: NxdiStackProfile,
    *,
    model_config: Optional[Mapping[str, Any]] = None,
    model_cache: str = constants.DEFAULT_MODEL_CACHE,
    pvc_root: str = constants.PVC_MOUNT_ROOT,
    rank: int = 0,
) -> Dict[str, Any]:
    """NeuronConfig kwargs for ``spec``: vLLM's defaults, our artifact settings, then the user's overrides.

    ``model_config`` is the model's HF config.json (only needed to resolve dtype "auto"; without it torch_dtype
    is None). ``model_cache``/``pvc_root`` locate LoRA adapters exactly where serve will find them. ``rank`` is the
    node a multi-node compile is for (0 for single node): it only moves ``start_rank_id``.
    """
    if profile.neuron_config_rules != RULES_VLLM_0_7_2:
        raise SpecError(f"stack {profile.id} uses NeuronConfig rules {profile.neuron_config_rules!r}, not implemented")
    validate_spec(spec, profile)
    overrides = dict(spec.compile_overrides())  # load-only keys (skip_warmup, rank keys) are applied at serve
    torch_dtype = resolve_torch_dtype(spec.dtype, profile, model_config)

    if spec.speculative:
        kwargs = _speculation_defaults(spec, torch_dtype)
    else:
        target_modules = overrides.pop("target_modules", None) if spec.lora_adapters else None
        lora = lora_serving_config(spec, profile, target_modules, model_cache=model_cache, pvc_root=pvc_root)
        kwargs = _vllm_defaults(spec, torch_dtype, lora)

    # Self-contained artifacts: NxDI 0.3 defaults to shard-on-load (NX3 models/config.py
    # save_sharded_checkpoint=False), which would make every serving pod re-read the HF weights from the exact
    # compile-time path. A user override can still turn it off.
    kwargs["save_sharded_checkpoint"] = True
    # NX3 models/config.py: the NEURON_LOGICAL_NC_CONFIG env var wins over this kwarg; compile sets both.
    kwargs["logical_nc_config"] = spec.lnc
    if not isinstance(rank, int) or isinstance(rank, bool) or not 0 <= rank < spec.world_size:
        raise SpecError(f"rank {rank!r} is outside 0..{spec.world_size - 1} (world_size {spec.world_size})")
    if spec.world_size > 1:
        kwargs.update(multi_node_rank_keys(spec, rank))

    flags = speculation_flags(spec)
    owned_keys = set(profile.spec_owned_keys) | set(flags)
    owned = {**kwargs, **flags}
    # An override may repeat a spec-derived value but not change it, nor set one the spec leaves unset (e.g.
    # speculation_length without a speculative spec): the serving flags are derived from the spec, not from it.
    conflicts = sorted(k for k in overrides if k in owned_keys and (k not in owned or overrides[k] != owned[k]))
    if conflicts:
        detail = ", ".join(f"{k}={overrides[k]!r} (spec gives {owned.get(k, 'nothing')!r})" for k in conflicts)
        raise SpecError(f"override_neuron_config contradicts the spec: {detail}; change the spec field instead")

    # F23 _get_neuron_config_after_override: default.update(override). The speculation flags are part of the
    # user's override on F23's command line, so they are applied in the same step.
    kwargs.update(flags)
    kwargs.update(overrides)
    return kwargs


def multi_node_rank_keys(spec: CompileSpec, rank: int) -> Dict[str, int]:
    """NeuronConfig keys that place node ``rank`` in a model spread over ``spec.world_size`` nodes.

    NxDI semantics, which this runtime follows: ``tp_degree`` and ``world_size`` count NeuronCore ranks across
    ALL nodes, ``local_ranks_size`` the ranks of one node, ``start_rank_id`` the node's first global rank:
      - NX3 examples/multi_node.md: two trn1 nodes run ``--tp-degree 64 --local_ranks_size 32`` with
        ``--start_rank_id 0`` / ``32`` ("start_rank_id ... multiple of local_ranks_size"), each node compiling into
        its own --compiled-model-path;
      - NX3 src/neuronx_distributed_inference/models/config.py: world_size defaults to tp*pp*ep, local_ranks_size to
        world_size, start_rank_id to 0; inference_demo.py sets start_rank_id = node_rank * local_ranks_size;
      - NX3 models/application_base.py: get_builder passes all four to neuronx-distributed's ModelBuilder,
        load_weights reads weights/tp{r}_sharded_checkpoint for r in start_rank_id .. +local_ranks_size-1;
      - neuronx-distributed 0.12 (aws-neuron/neuronx-distributed e834945, "Release 2.23.0")
        trace/model_builder.py: tracing runs parallel_state.initialize_model_parallel(tp_degree) inside a mock
        world of world_size ranks, and shard_checkpoint writes only the local ranks' shards.
    DISAGREEMENT: the fork's launcher (F23 examples/neuron/multi_node/launch_script.py make_override_config)
    passes ``tp_degree=local_ranks_size`` plus a separate ``world_size=--world-size``. Under the ModelBuilder above
    that is tensor parallelism of one node's size inside a larger world (i.e. the model replicated per node, not
    split across nodes), which cannot be what a 405B model on two trn1 nodes needs; we follow NxDI. UNVERIFIED
    without hardware: which of the two the Neuron 2.23 runtime really executes correctly across nodes.
    """
    local = spec.local_tp
    return {"world_size": spec.tp_degree, "local_ranks_size": local, "start_rank_id": rank * local}


def draft_neuron_config_updates(target_kwargs: Mapping[str, Any]) -> Dict[str, Any]:
    """Attributes F23 changes on a deep copy of the target NeuronConfig to get the draft model's config
    (F23 NeuronSpeculationCausalLM.load_weights; same steps in NX3 inference_demo.py), in F23's order."""
    eagle = bool(target_kwargs.get("enable_eagle_speculation"))
    updates: Dict[str, Any] = {}
    if not eagle:
        updates["speculation_length"] = 0
    updates["trace_tokengen_model"] = True
    updates["enable_fused_speculation"] = False
    if target_kwargs.get("draft_model_modules_to_not_convert"):
        updates["modules_to_not_convert"] = target_kwargs["draft_model_modules_to_not_convert"]
    if eagle:
        updates["is_eagle_draft"] = True
        updates["sequence_parallel_enabled"] = False
    return updates


def serve_override_neuron_config(spec: CompileSpec, role: NodeRole = SINGLE_NODE) -> Dict[str, Any]:
    """The --override-neuron-config for serving: load-time keys only.

    F23 setattr()s every override key on the neuron_config loaded from the artifacts before load(), so a
    compile-time key here could make the runtime disagree with the compiled graph. Speculation flags are repeated
    because F23 builds its draft config from them (they equal the compiled values).
    """
    out: Dict[str, Any] = {k: v for k, v in spec.override_neuron_config.items() if k in USER_LOAD_TIME_KEYS}
    out.update(speculation_flags(spec))
    if role.is_multi_node:
        # Each node loads its own slice of the ranks: F23 setattr()s these on the loaded neuron_config before
        # model.load() (F23 neuronx_distributed.py NeuronCausalLM.load_weights), and NX3 load_weights falls back to
        # neuron_config.start_rank_id/local_ranks_size (application_base.py). tp_degree and world_size are NOT
        # overridden, unlike the fork's launcher: they come from the compiled artifact (see multi_node_rank_keys).
        keys = multi_node_rank_keys(spec, role.rank)
        out["local_ranks_size"] = keys["local_ranks_size"]
        out["start_rank_id"] = keys["start_rank_id"]
    return out
