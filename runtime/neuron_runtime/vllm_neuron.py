"""The vllm-neuron stack's pure builders: engine command line, compile and serve environments, the neuron_config
check, and how to read the plugin's cache. No I/O here; :mod:`neuron_runtime.vllm_neuron_run` does it.

One command line for both phases: the compile Job runs exactly the serving argv under the plugin's CPU-compile
environment (SDK32 model-dev/cpu-development.md "Use CPU compilation mode" launches the OpenAI server that way), so
the graphs it compiles are the graphs serving asks for and every lookup is a cache hit. The operator builds the pod
env of both phases with the functions below (one definition of each variable); the runtime applies the same
values, overriding any pod-level value that would contradict them.

Labels SDK32 / DLC24 are defined in stacks/neuron_2_32.py.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from neuron_runtime import constants, model_source
from neuron_runtime.compile_spec import CompileSpec
from neuron_runtime.contract import ServeConfig
from neuron_runtime.errors import SpecError
from neuron_runtime.stacks.neuron_2_32 import PluginStackProfile

# kv_segment_size_buckets values the segmented attention kernel accepts (SDK32 guides/reference-configuration.md).
KV_SEGMENT_SIZES = (512, 1024, 2048, 4096, 8192)
DECODE_CONTEXT_MULTIPLE = 128  # P_MAX of the NKI attention tile (SDK32 design/vllm/additional-config.md)
# on_device_sampling_config sub-keys: the documented ones (reference-configuration.md "Sampling options") and the
# ones the 0.24-based plugin code reads (vllm_neuron NeuronConfig/OnDeviceSamplingConfig, UNVERIFIED against the
# release branch: no copy of it could be read). Anything else is a typo.
SAMPLING_KEYS = ("temperature", "top_k", "top_p", "all_greedy", "max_top_k", "deterministic", "sampling_dp_degree",
                 "capture_topk")
MXFP4_FAMILIES = ("trn3",)  # "The worker rejects mxfp4 on Trn2" (guides/features-guide.md "MXFP4")
SPECULATIVE_METHOD_NAMES = {"eagle3": "eagle3"}  # spec method -> --speculative-config "method"


# --- configuration check (shared with the operator's validation) ---------------------------------------------------


def neuron_config_problems(
    profile: PluginStackProfile,
    overrides: Mapping[str, Any],
    *,
    family: str,
    max_num_seqs: int,
    max_model_len: int,
    max_num_batched_tokens: Optional[int],
) -> List[Tuple[str, str]]:
    """(key, what to change) for every neuron_config entry this stack would reject or misread; empty when fine.

    Unknown keys are errors, not passed through: the plugin ignores keys it does not know (a nested
    mm_language_model_only "is silently ignored", reference-configuration.md), which would make the artifact
    differ from what the user asked for without a word. NxD Inference keys get the name to use instead.
    """
    problems: List[Tuple[str, str]] = []
    for key in sorted(overrides):
        value = overrides[key]
        rule = profile.neuron_config_keys.get(key)
        if rule is None:
            if key in profile.nxdi_key_replacements:
                problems.append((key, f"{key} is an NxD Inference key; on stack {profile.id} use "
                                      f"{profile.nxdi_key_replacements[key]}"))
            else:
                problems.append((key, f"{key} is not a neuron_config key of stack {profile.id}; known keys: "
                                      f"{', '.join(sorted(profile.neuron_config_keys))}"))
            continue
        message = _value_problem(rule.kind, value, rule.choices)
        if message:
            problems.append((key, f"{key} {message}"))
    if problems:
        return problems
    problems += _bucket_relations(overrides, max_num_seqs, max_model_len, max_num_batched_tokens)
    quantization = overrides.get("quantization")
    if quantization == "mxfp4" and family not in MXFP4_FAMILIES:
        problems.append(("quantization", f"quantization mxfp4 is supported on {', '.join(MXFP4_FAMILIES)} only, not "
                                         f"{family}; use mxfp8 or an FP8 checkpoint"))
    return problems


def _value_problem(kind: str, value: Any, choices: Tuple[str, ...]) -> Optional[str]:
    if kind == "buckets":
        ints = isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        if not ints or any(v < 1 for v in value):
            return "must be a non-empty list of positive integers"
        if any(a >= b for a, b in zip(value, value[1:])):
            return f"must be strictly ascending, e.g. {sorted(set(value))}"
        return None
    if kind == "dict":
        if not isinstance(value, dict):
            return "must be an object"
        unknown = sorted(set(value) - set(SAMPLING_KEYS))
        return f"has unknown keys {unknown}; supported: {', '.join(SAMPLING_KEYS)}" if unknown else None
    if kind == "str":
        return None if value in choices else f"must be one of {', '.join(choices)}"
    if kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
        return None if ok else "must be a positive integer"
    if kind == "bool":
        return None if isinstance(value, bool) else "must be true or false"
    return f"has an unsupported rule kind {kind!r}"  # a profile bug, reported rather than ignored


def _bucket_relations(overrides: Mapping[str, Any], max_num_seqs: int, max_model_len: int,
                      max_num_batched_tokens: Optional[int]) -> List[Tuple[str, str]]:
    """The cross-field rules of reference-configuration.md "Compilation options"."""
    problems: List[Tuple[str, str]] = []
    prefill = overrides.get("num_batched_tokens_buckets")
    if prefill is not None:
        if max_num_batched_tokens is None:
            problems.append(("num_batched_tokens_buckets",
                             "num_batched_tokens_buckets needs spec.engine.maxNumBatchedTokens (the largest bucket "
                             f"must equal it): set maxNumBatchedTokens: {prefill[-1]}"))
        elif prefill[-1] != max_num_batched_tokens:
            problems.append(("num_batched_tokens_buckets",
                             f"num_batched_tokens_buckets: the largest bucket ({prefill[-1]}) must equal "
                             f"spec.engine.maxNumBatchedTokens ({max_num_batched_tokens})"))
    decode = overrides.get("num_seqs_buckets")
    if decode is not None and decode[-1] != max_num_seqs:
        problems.append(("num_seqs_buckets", f"num_seqs_buckets: the largest bucket ({decode[-1]}) must equal "
                                             f"spec.engine.maxNumSeqs ({max_num_seqs})"))
    segments = overrides.get("kv_segment_size_buckets")
    if segments is not None:
        bad = [v for v in segments if v not in KV_SEGMENT_SIZES]
        if bad:
            problems.append(("kv_segment_size_buckets", f"kv_segment_size_buckets: {bad} not in "
                                                        f"{', '.join(map(str, KV_SEGMENT_SIZES))}"))
        elif prefill is not None and list(segments) != list(prefill):
            problems.append(("kv_segment_size_buckets", "kv_segment_size_buckets must currently equal "
                                                        "num_batched_tokens_buckets (kernel constraint)"))
    contexts = overrides.get("decode_context_length_buckets")
    if contexts is not None:
        bad = [v for v in contexts if v >= max_model_len or v % DECODE_CONTEXT_MULTIPLE]
        if bad:
            problems.append(("decode_context_length_buckets",
                             f"decode_context_length_buckets: {bad} must be below spec.engine.maxModelLen "
                             f"({max_model_len}) and multiples of {DECODE_CONTEXT_MULTIPLE}"))
    return problems


def validate_spec(spec: CompileSpec, profile: PluginStackProfile) -> None:
    """Reject what this stack cannot compile or serve (the operator reports the same as Stalled first)."""
    if spec.world_size != 1:
        raise SpecError(f"stack {profile.id} serves one model per node: world_size must be 1, got {spec.world_size}")
    if spec.lora_adapters:
        raise SpecError(f"stack {profile.id} does not support LoRA adapters")
    if spec.instance_family not in profile.platform_targets:
        raise SpecError(f"stack {profile.id} does not support instance family {spec.instance_family!r}; "
                        f"supported: {', '.join(profile.families)}")
    if spec.dtype not in profile.dtypes:
        raise SpecError(f"dtype {spec.dtype!r} is not one of {', '.join(profile.dtypes)}")
    if spec.speculative is not None and spec.speculative.method not in profile.features.speculative_methods:
        raise SpecError(f"speculative method {spec.speculative.method!r} is not supported by stack {profile.id}; "
                        f"use one of {', '.join(profile.features.speculative_methods)}")
    if spec.speculative is not None and spec.speculative.max_model_len is not None:
        raise SpecError(f"stack {profile.id} takes no separate draft maxModelLen")
    problems = neuron_config_problems(
        profile, spec.override_neuron_config, family=spec.instance_family, max_num_seqs=spec.max_num_seqs,
        max_model_len=spec.max_model_len, max_num_batched_tokens=spec.max_num_batched_tokens,
    )  # fmt: skip
    if problems:
        raise SpecError("neuron_config: " + "; ".join(message for _, message in problems))
    clashes = sorted({flag for flag, _ in flag_groups(spec.engine_args)} & owned_flags(profile))
    if clashes:
        raise SpecError(f"engine_args must not set {clashes}: they are derived from the spec")


# --- the engine command line -----------------------------------------------------------------------------------------


def additional_config(spec: CompileSpec) -> Dict[str, Any]:
    """--additional-config: the spec's neuron_config, nested as the plugin reads it (design/vllm/additional-config.md).
    Every key is a compile input, so the document is the same at compile and at serve time."""
    return {"neuron_config": dict(spec.override_neuron_config)} if spec.override_neuron_config else {}


def speculative_config(spec: CompileSpec, draft_path: Optional[str]) -> Optional[Dict[str, Any]]:
    """--speculative-config for EAGLE3 (guides/features-guide.md "Enable speculative decoding (CLI)")."""
    if spec.speculative is None:
        return None
    if not draft_path:
        raise SpecError("speculative decoding needs the draft model path")
    return {
        "method": SPECULATIVE_METHOD_NAMES[spec.speculative.method],
        "model": draft_path,
        "num_speculative_tokens": spec.speculative.num_speculative_tokens,
    }


def owned_flags(profile: PluginStackProfile) -> set:
    f = profile.flags
    return {
        f.model, f.port, f.tensor_parallel_size, f.data_parallel_size, f.max_num_seqs, f.max_model_len,
        f.max_num_batched_tokens, f.dtype, f.served_model_name, f.host, f.additional_config, f.speculative_config,
        *f.reserved_aliases,
    }  # fmt: skip


def flag_groups(args: Iterable[str]) -> List[Tuple[str, List[str]]]:
    """``args`` as (flag, its tokens) groups: ``--flag=v``, ``--flag v ...`` and bare values after a flag stay with it.
    ``--no-x`` (argparse BooleanOptionalAction) is reported as ``--x``."""
    groups: List[Tuple[str, List[str]]] = []
    for arg in args:
        if arg.startswith("-") and len(arg) > 1 and not _is_number(arg):
            flag = arg.split("=", 1)[0]
            if flag.startswith("--no-"):
                flag = "--" + flag[len("--no-"):]
            groups.append((flag, [arg]))
        elif groups:
            groups[-1][1].append(arg)
        else:
            groups.append(("", [arg]))  # a stray value: kept, and counted as an engine argument
    return groups


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def split_extra_args(profile: PluginStackProfile, args: Iterable[str]) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
    """(engine args: compile inputs, server-only args: not) in their original order within each part."""
    engine: List[str] = []
    server: List[str] = []
    for flag, tokens in flag_groups(args):
        (server if flag in profile.server_only_flags else engine).extend(tokens)
    return tuple(engine), tuple(server)


def _json_arg(value: Mapping[str, Any]) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def server_argv(
    spec: CompileSpec,
    serve_config: ServeConfig,
    profile: PluginStackProfile,
    *,
    model_path: str,
    draft_path: Optional[str] = None,
    python: str = "python",
    compile_host: Optional[str] = None,
) -> List[str]:
    """vLLM's OpenAI server for ``spec`` with the plugin: the serving command, and (under the compile env, with
    ``compile_host``) the compile command. The engine arguments (``spec.engine_args``, compile inputs) come before
    the server-only ones (``serve_config.extra_args``). Pure."""
    validate_spec(spec, profile)
    f = profile.flags
    clashes = sorted({flag for flag, _ in flag_groups(serve_config.extra_args)} & owned_flags(profile))
    if clashes:
        raise SpecError(f"extra_args must not set {clashes}: they are derived from the spec and the compiled model")
    argv = [
        python, "-m", profile.server_module,
        f.model, model_path,
        f.port, str(serve_config.port),
        f.tensor_parallel_size, str(spec.tp_degree),
        f.max_num_seqs, str(spec.max_num_seqs),
        f.max_model_len, str(spec.max_model_len),
        f.dtype, spec.dtype,
        f.served_model_name, serve_config.served_model_name or model_source.display_name(spec.model_uri),
    ]  # fmt: skip
    if spec.data_parallel_size > 1:
        argv += [f.data_parallel_size, str(spec.data_parallel_size)]
    if spec.max_num_batched_tokens is not None:
        argv += [f.max_num_batched_tokens, str(spec.max_num_batched_tokens)]
    extra = additional_config(spec)
    if extra:
        argv += [f.additional_config, _json_arg(extra)]
    speculative = speculative_config(spec, draft_path)
    if speculative is not None:
        argv += [f.speculative_config, _json_arg(speculative)]
    if compile_host is not None:
        argv += [f.host, compile_host]
    return argv + list(spec.engine_args) + list(serve_config.extra_args)


# --- environments ----------------------------------------------------------------------------------------------------


def compile_env(
    profile: PluginStackProfile,
    spec: CompileSpec,
    *,
    on_cpu: bool,
    remote_cache: Optional[str],
    cache_root: str,
    workers: int,
    timeout_seconds: int,
) -> Dict[str, str]:
    """What the compile pod's engine needs: CPU-compile mode for the instance family (cpu_compilation.md
    "Workflow" step 1), the remote cache to fill (the runtime's staging directory: None where it is not known
    yet, e.g. in the pod spec), and compile timeouts as long as the Job's own deadline (large models exceed the
    600 s defaults: tutorials/tutorial-gpt-oss.md "Compilation hits the timeout"; the tutorials set
    VLLM_NEURON_COMPILATION_TIMEOUT, the reference NEURON_LIBTORCH_COMPILATION_TIMEOUT: both are set)."""
    env = {
        profile.env_cache_root: cache_root,
        profile.env_parallel_compile_workers: str(max(1, workers)),
        profile.env_compilation_timeout: str(timeout_seconds),
        profile.env_cache_lock_timeout: str(timeout_seconds),
        profile.env_logical_nc_config: str(spec.lnc),
    }
    if remote_cache is not None:
        env[profile.env_remote_cache] = remote_cache
    if on_cpu:
        env[profile.env_cpu_compile] = "1"
        env[profile.env_platform_target] = profile.platform_targets[spec.instance_family]
    return env


def workers_for_cpu(cpu: str) -> int:
    """Parallel compile workers for a pod's CPU request (a Kubernetes quantity: "16", "15500m"): one neuronx-cc per
    whole CPU; the plugin's default is 8 (cpu_compilation.md "Parallel Compilation Workers")."""
    text = str(cpu).strip()
    try:
        cores = float(text[:-1]) / 1000 if text.endswith("m") else float(text)
    except ValueError:
        return 8
    return max(1, int(cores))


def prometheus_dir(cache_root: str) -> str:
    """PROMETHEUS_MULTIPROC_DIR under the engine cache (an emptyDir): the runtime empties it at every start."""
    return os.path.join(cache_root, constants.PROMETHEUS_DIR_NAME)


def serve_env(
    profile: PluginStackProfile,
    spec: CompileSpec,
    *,
    remote_cache: str,
    cache_root: str,
    prometheus_dir: str,
    startup_timeout_seconds: int,
) -> Dict[str, str]:
    """Cache-hit-only serving from the published artifact (cpu_compilation.md "Preventing Compilation on Production
    Instances"): a miss raises instead of compiling on the Neuron node. The engine-ready and cache-lock waits follow
    the service's start-up budget (spec.runtime.startupTimeoutSeconds)."""
    return {
        profile.env_remote_cache: remote_cache,
        profile.env_cache_root: cache_root,
        profile.env_disable_warmup_compile: "1",
        profile.env_disable_graph_capture: "1",
        profile.env_engine_ready_timeout: str(startup_timeout_seconds),
        profile.env_cache_lock_timeout: str(startup_timeout_seconds),
        profile.env_prometheus_dir: prometheus_dir,
        profile.env_logical_nc_config: str(spec.lnc),  # must equal the compile's
    }


def engine_env(base_env: Mapping[str, str], forced: Mapping[str, str], profile: PluginStackProfile) -> Dict[str, str]:
    """``base_env`` with the stack's values forced and the variables it must not see removed. Pure."""
    env = {k: v for k, v in base_env.items() if k not in profile.removed_env}
    env.update(forced)
    return env


# --- the artifact: the plugin's remote cache ----------------------------------------------------------------------


_HEX = re.compile(r"^[0-9a-f]+$")


def cache_entry_names(names: Iterable[str], profile: PluginStackProfile) -> List[str]:
    """The names among ``names`` that are plugin cache entries (32 lowercase hex characters), sorted."""
    return sorted(n for n in names if len(n) == profile.cache_entry_chars and _HEX.match(n))


def local_cache_dir(cache_root: str, profile: PluginStackProfile) -> str:
    return os.path.join(cache_root, *profile.local_cache_subdir.split("/"))


def is_cache_miss(lines: Iterable[str], profile: PluginStackProfile) -> Optional[str]:
    """The first engine output line that reports a compile-cache miss, if any."""
    patterns = [re.compile(p, re.IGNORECASE) for p in profile.cache_miss_patterns]
    for line in lines:
        if any(p.search(line) for p in patterns):
            return line.strip()
    return None
