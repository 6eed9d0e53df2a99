"""The current stack for Trn2/Trn3: Neuron SDK 2.32, vLLM 0.24.0 (V1 engine) with the vllm-neuron plugin
0.24.0.1.1.0 (torch.compile through libtorch-neuronx-lite; no NxD Inference).

Its compiled artifact is the plugin's own NEFF cache: a CPU node compiles with ``VLLM_NEURON_CPU_COMPILE=1`` into
a remote cache directory (``NEURON_LIBTORCH_REMOTE_CACHE``), which the runtime publishes as ``<store>/<key>/`` with
our manifest; serving pods point the remote cache at that directory and run cache-hit-only, so a miss ends the pod
instead of compiling on a Trainium node. :mod:`neuron_runtime.vllm_neuron` implements the profile.

Source labels used in comments:
  SDK32 = aws-neuron/aws-neuron-sdk @ 81ce03a (2026-08-21, SDK 2.32 docs), paths under vllm-neuron/docs/ unless
          another path is given
  DLC24 = aws-neuron/deep-learning-containers @ 2be9ed1, vllm/inference/0.24.0.1.1.0/Dockerfile.neuronx
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping, Tuple

from neuron_runtime.stacks.base import ENGINE_VLLM_NEURON, STATUS_BETA, Stack, StackFeatures


@dataclass(frozen=True)
class PluginServerFlags:
    """vLLM 0.24 OpenAI server flags the runtime derives from the spec (upstream vllm/engine/arg_utils.py: one flag
    per EngineArgs field, ``_`` spelled ``-``)."""

    model: str
    port: str
    tensor_parallel_size: str
    data_parallel_size: str
    max_num_seqs: str
    max_model_len: str
    max_num_batched_tokens: str
    dtype: str
    served_model_name: str
    host: str  # only set for the compile run, which must not listen beyond the pod
    additional_config: str  # JSON; Neuron settings nested under "neuron_config" (SDK32 design/vllm/additional-config.md)
    speculative_config: str  # JSON {"method", "model", "num_speculative_tokens"} (SDK32 guides/features-guide.md)
    # Spellings that would set what the runtime derives, or flags of the previous stack that this one lacks; all are
    # refused in extra_args.
    reserved_aliases: Tuple[str, ...] = ()


@dataclass(frozen=True)
class NeuronConfigKey:
    """One key of the plugin's ``neuron_config`` and how the operator checks its value."""

    kind: str  # "buckets" (strictly ascending positive ints), "dict", "str", "int", "bool"
    compile_input: bool = True  # False: load/run-time only, kept out of the compile key
    choices: Tuple[str, ...] = ()  # allowed values for kind "str"
    note: str = ""


@dataclass(frozen=True)
class PluginStackProfile(Stack):
    """A vLLM V1 + vllm-neuron plugin stack."""

    server_module: str
    flags: PluginServerFlags
    dtypes: Tuple[str, ...]  # accepted --dtype values
    # Flags of the API server and of logging, which never change a compiled graph: extra_args made of these stay
    # out of the compile key. Every other extra flag reaches the engine, so it is a compile input on this stack
    # (the compile runs the same command line).
    server_only_flags: Tuple[str, ...]
    # --- environment (SDK32 guides/reference-configuration.md "Environment variables",
    #     design/compilation/compilation_cache.md, design/compilation/cpu_compilation.md) ---
    env_cpu_compile: str
    env_platform_target: str
    env_parallel_compile_workers: str
    env_remote_cache: str
    env_disable_warmup_compile: str
    env_disable_graph_capture: str
    env_cache_root: str
    env_cache_lock_timeout: str
    env_compilation_timeout: str
    env_engine_ready_timeout: str
    env_prometheus_dir: str
    env_logical_nc_config: str
    # Variables the runtime removes from the engine's environment: they belong to the previous stack, or would let
    # the engine compile or bypass the cache we verified.
    removed_env: Tuple[str, ...]
    # NEURON_PLATFORM_TARGET_OVERRIDE value per instance family.
    platform_targets: Mapping[str, str]
    # --- the neuron_config vocabulary and the previous stack's names for the same things ---
    neuron_config_keys: Mapping[str, NeuronConfigKey]
    # NxD Inference override_neuron_config key -> what to use on this stack instead (a key, or advice).
    nxdi_key_replacements: Mapping[str, str]
    # --- compiled artifact layout: the plugin's remote cache, one directory per 32-character cache key ---
    cache_entry_chars: int
    # Python API that promotes a local cache entry to the remote cache (SDK32 design/compilation/compilation_cache.md
    # "API Reference"): module, function; and where the plugin keeps its local cache.
    save_cache_api: Tuple[str, str]
    local_cache_api: Tuple[str, str]
    local_cache_subdir: str  # under VLLM_CACHE_ROOT
    # Lines of the engine's output that mean "a graph was not in the cache" under cache-hit-only serving. The
    # plugin raises RuntimeError on a miss with VLLM_NEURON_DISABLE_WARMUP_COMPILE=1 (cpu_compilation.md); the
    # exact wording is not documented, so these match loosely. UNVERIFIED without hardware.
    cache_miss_patterns: Tuple[str, ...]
    # Prometheus series the plugin exports at the server's /metrics (SDK32 design/vllm/metrics.md).
    startup_metrics: Tuple[str, ...]


NEURON_2_32_VLLM_NEURON_0_24 = PluginStackProfile(
    id="neuron-2.32-vllm-neuron-0.24",
    engine=ENGINE_VLLM_NEURON,
    sdk_version="2.32.0",
    # vllm-neuron is "Beta" in the SDK 2.32 component list (SDK32 release-notes/components/index.rst).
    status=STATUS_BETA,
    # "for Trn2 and Trn3" (SDK32 about-neuron/announcements/neuron2.x/announce-nxdi-maintenance-support-2-31.rst);
    # the setup guide lists Trn2/Trn3 instances only (getting-started/setup-guide.md).
    families=("trn2", "trn3"),
    features=StackFeatures(
        # No recipe runs one tensor-parallel engine across nodes; multi-instance serving is disaggregated
        # prefill/decode only (tutorials/tutorial-di-1p1d-xpyd.md).
        multi_node=False,
        multi_node_experimental=False,
        # Not in the 2.32 features guide (guides/features-guide.md); multi-LoRA appears only in later docs.
        lora=False,
        # "EAGLE3 only, via --speculative-config; vanilla draft-model speculative decoding is not supported"
        # (getting-started/migration-nxdi-to-vllm-neuron.md).
        speculative_methods=("eagle3",),
        cpu_compile=True,  # design/compilation/cpu_compilation.md
        # "Speculative decoding is not supported with VLLM_NEURON_CPU_COMPILE mode" (cpu_compilation.md
        # Limitations): such services compile on the target instance type instead.
        cpu_compile_speculative=False,
        data_parallel=True,  # guides/features-guide.md "Tensor, data, and expert parallelism"
        max_num_batched_tokens=True,  # tutorials/tutorial-llama3-70b.md --max-num-batched-tokens
        multi_node_lora=False,  # neither LoRA nor multi-node here
        # tutorials/tutorial-eagle3-speculative-decoding-llama-3-1.md serves EAGLE3 with --max-num-seqs 2;
        # design/speculation/speculative_decoding_design.md's example uses max_num_seqs=4.
        speculative_batching=True,
    ),
    default_image="public.ecr.aws/neuron-operator/neuron-runtime:0.1.0-neuron2.32-vllm-neuron0.24",
    dockerfile="Dockerfile.vllm-neuron",
    # DLC24 and the containers release notes (SDK32 release-notes/components/containers.rst).
    base_image="public.ecr.aws/neuron/pytorch-inference-vllm-neuronx:0.24.0.1.1.0-neuronx-py313-sdk2.32.0-ubuntu24.04",
    image_python="3.13",  # DLC24 ARG PYTHON=python3.13
    # DLC24 ARGs (NEURONX_CC_VERSION, NKI_VERSION, LIBTORCH_NEURONX_LITE_VERSION, GITHUB_REPO_BRANCH
    # release-0.24.0.1.1.0); vLLM 0.24.0 is the version vllm-neuron 0.24.0.1.1.0 is built for (the first three
    # components of its version, SDK32 release-notes/components/containers.rst).
    pinned_distributions=MappingProxyType(
        {
            "vllm-neuron": "0.24.0.1.1.0",
            "vllm": "0.24.0",
            "neuronx-cc": "2.27.5334.0",
            "nki": "0.6.0",
            "libtorch-neuronx-lite": "2.11.0.1.0.1284",
        }
    ),
    required_distributions=(),
    recorded_distributions=("vllm-neuron", "vllm", "neuronx-cc", "nki", "libtorch-neuronx-lite", "torch",
                            "transformers"),
    server_module="vllm.entrypoints.openai.api_server",  # the module every SDK32 tutorial launches
    flags=PluginServerFlags(
        model="--model",
        port="--port",
        tensor_parallel_size="--tensor-parallel-size",
        data_parallel_size="--data-parallel-size",
        max_num_seqs="--max-num-seqs",
        max_model_len="--max-model-len",
        max_num_batched_tokens="--max-num-batched-tokens",
        dtype="--dtype",
        served_model_name="--served-model-name",
        host="--host",
        additional_config="--additional-config",
        speculative_config="--speculative-config",
        reserved_aliases=(
            "-tp", "-dp", "--revision", "--device", "--override-neuron-config", "--enable-lora", "--lora-modules",
            "--max-loras", "--max-lora-rank", "--speculative-model", "--num-speculative-tokens",
            "--speculative-max-model-len",
        ),
    ),
    dtypes=("bfloat16", "float16", "float32"),
    # vLLM 0.24.0 vllm/entrypoints/openai/cli_args.py BaseFrontendArgs/FrontendArgs fields (less lora_modules, host
    # and port, which the runtime owns) plus the logging switches of vllm/engine/arg_utils.py (disable_log_stats,
    # aggregate_engine_logging, enable_log_requests and its --disable- spelling); read from the vllm 0.24.0 wheel.
    server_only_flags=tuple("--" + name.replace("_", "-") for name in (
        "chat_template", "chat_template_content_format", "trust_request_chat_template",
        "default_chat_template_kwargs", "response_role", "return_tokens_as_token_ids", "enable_auto_tool_choice",
        "exclude_tools_when_tool_choice_none", "tool_call_parser", "tool_parser_plugin", "tool_server",
        "log_config_file", "max_log_len", "enable_prompt_tokens_details", "enable_server_load_tracking",
        "enable_force_include_usage", "enable_tokenizer_info_endpoint", "enable_log_outputs", "enable_log_deltas",
        "log_error_stack", "tokens_only", "fingerprint_mode", "fingerprint_value", "data_parallel_supervisor_port",
        "dp_supervisor_probe_interval_s", "dp_supervisor_probe_timeout_s", "dp_supervisor_probe_failure_threshold",
        "uds", "uvicorn_log_level", "disable_uvicorn_access_log", "disable_access_log_for_endpoints",
        "allow_credentials", "allowed_origins", "allowed_methods", "allowed_headers", "api_key", "ssl_keyfile",
        "ssl_certfile", "ssl_ca_certs", "enable_ssl_refresh", "ssl_cert_reqs", "ssl_ciphers", "root_path",
        "middleware", "enable_request_id_headers", "disable_fastapi_docs", "enable_offline_docs",
        "enable_flash_late_interaction", "disable_log_stats", "aggregate_engine_logging", "enable_log_requests",
        "disable_log_requests",
    )),
    env_cpu_compile="VLLM_NEURON_CPU_COMPILE",
    env_platform_target="NEURON_PLATFORM_TARGET_OVERRIDE",
    env_parallel_compile_workers="NEURON_LIBTORCH_PARALLEL_COMPILE_WORKERS",
    env_remote_cache="NEURON_LIBTORCH_REMOTE_CACHE",
    env_disable_warmup_compile="VLLM_NEURON_DISABLE_WARMUP_COMPILE",
    env_disable_graph_capture="NEURON_LIBTORCH_DISABLE_GRAPH_CAPTURE_BACKEND",
    env_cache_root="VLLM_CACHE_ROOT",
    env_cache_lock_timeout="NEURON_LIBTORCH_COMPILATION_TIMEOUT",
    env_compilation_timeout="VLLM_NEURON_COMPILATION_TIMEOUT",  # tutorials/tutorial-gpt-oss.md
    env_engine_ready_timeout="VLLM_ENGINE_READY_TIMEOUT_S",  # tutorials/tutorial-di-1p1d-xpyd.md
    env_prometheus_dir="PROMETHEUS_MULTIPROC_DIR",  # design/vllm/metrics.md: wipe between restarts
    # about-neuron/arch/neuron-features/logical-neuroncore-config.rst "Compiler and runtime settings": the runtime
    # env var sets the LNC and compiled graphs must match it. Set on compile and serve so a node's own
    # /opt/aws/neuron/logical_nc_config never disagrees with the compiled artifact.
    env_logical_nc_config="NEURON_LOGICAL_NC_CONFIG",
    removed_env=(
        "VLLM_NEURON_FRAMEWORK",  # migration guide: "No VLLM_NEURON_FRAMEWORK environment variable needed"
        # features-guide.md: an empty NEURON_COMPILED_ARTIFACTS path "is compiled and saved there": a compile path
        # that bypasses the verified cache.
        "NEURON_COMPILED_ARTIFACTS",
        "NEURON_LIBTORCH_DISABLE_COMPILE_CACHE",  # incompatible with VLLM_NEURON_DISABLE_WARMUP_COMPILE
        "VLLM_NEURON_CPU_MODE",  # cannot be combined with CPU compile (cpu_compilation.md); never wanted on Neuron
    ),
    platform_targets=MappingProxyType({"trn2": "trn2", "trn3": "trn3"}),
    # guides/reference-configuration.md "Compilation options", "Sampling options", "Quantization options";
    # features-guide.md "Tensor, data, and expert parallelism" (ep_degree).
    neuron_config_keys=MappingProxyType(
        {
            "num_batched_tokens_buckets": NeuronConfigKey("buckets", note="largest == maxNumBatchedTokens"),
            "num_seqs_buckets": NeuronConfigKey("buckets", note="largest == maxNumSeqs"),
            "kv_segment_size_buckets": NeuronConfigKey("buckets", note="values in 512..8192"),
            "decode_context_length_buckets": NeuronConfigKey("buckets", note="< maxModelLen, multiples of 128"),
            "on_device_sampling_config": NeuronConfigKey("dict"),
            "quantization": NeuronConfigKey("str", choices=("mxfp4", "mxfp8")),
            "ep_degree": NeuronConfigKey("int"),
            "fp8_packed_kv": NeuronConfigKey("bool", note="tutorials/tutorial-llama3-70b.md"),
        }
    ),
    nxdi_key_replacements=MappingProxyType(
        {
            # NeuronConfig keys the 2.23 stack derives from spec fields: vLLM's own flags carry them here
            "tp_degree": "spec.tensorParallelSize",
            "world_size": "spec.tensorParallelSize (one node per replica on this stack)",
            "batch_size": "spec.engine.maxNumSeqs",
            "ctx_batch_size": "nothing: prefill batching follows spec.engine.maxNumBatchedTokens",
            "seq_len": "spec.engine.maxModelLen",
            "max_context_length": "spec.engine.maxModelLen",
            "torch_dtype": "spec.engine.dtype",
            "logical_nc_config": "spec.logicalNeuronCoreConfig",
            "lora_modules": "nothing: this stack has no LoRA",
            "speculation_length": "spec.speculativeDecoding.numSpeculativeTokens",
            # migration-nxdi-to-vllm-neuron.md step 2: "context_encoding_buckets maps to num_batched_tokens_buckets"
            "context_encoding_buckets": "num_batched_tokens_buckets",
            # migration table: decode is bucketed by num_seqs; context-length bucketing via
            # decode_context_length_buckets
            "token_generation_buckets": "decode_context_length_buckets",
            # migration table: continuous batching, sequence parallelism and bucketing are on by default
            "is_continuous_batching": "nothing: continuous batching is always on",
            "sequence_parallel_enabled": "nothing: sequence parallelism is always on",
            "enable_bucketing": "nothing: bucketing is always on; list buckets in num_batched_tokens_buckets",
            # reference-configuration.md "Quantization options": FP8 comes from the checkpoint's
            # quantization_config, mxfp4/mxfp8 from neuron_config.quantization
            "quantized": "quantization (mxfp4 or mxfp8), or an FP8 checkpoint",
            "quantization_dtype": "quantization (mxfp4 or mxfp8), or an FP8 checkpoint",
            "quantization_type": "quantization (mxfp4 or mxfp8), or an FP8 checkpoint",
            "quantized_checkpoints_path": "a quantized checkpoint as spec.model.uri",
            "kv_cache_quant": "spec.engine.extraArgs --kv-cache-dtype=fp8",
            "skip_warmup": "nothing: serving is cache-hit-only, warm-up never compiles",
            "save_sharded_checkpoint": "nothing: the plugin loads weights itself",
            "fused_qkv": "nothing: the plugin selects its kernels (VLLM_NEURON_DISABLE_NKI_KERNELS turns them off)",
            "qkv_kernel_enabled": "nothing: the plugin selects its kernels",
            "attn_kernel_enabled": "nothing: the plugin selects its kernels",
            "mlp_kernel_enabled": "nothing: the plugin selects its kernels",
            "flash_decoding_enabled": "nothing: the plugin selects its kernels",
            "async_mode": "nothing: async scheduling is on by default (--no-async-scheduling turns it off)",
            "enable_eagle_speculation": "spec.speculativeDecoding.method: eagle3",
            "enable_fused_speculation": "spec.speculativeDecoding.method: eagle3",
        }
    ),
    cache_entry_chars=32,  # compilation_cache.md "Cache Key": a 32-character MD5 key per graph
    save_cache_api=("libtorch_neuronx_lite.compile", "save_cache"),
    local_cache_api=("vllm_neuron.envs", "get_neuron_compile_cache_dir"),
    local_cache_subdir="neuron/compile_cache",  # compilation_cache.md: $VLLM_CACHE_ROOT/neuron/compile_cache/<hash>/
    cache_miss_patterns=(r"cache miss", r"not found in (the )?(compil\w* )?cache", r"warmup compil\w* (is )?disabled"),
    startup_metrics=(
        "vllm_neuron:startup_time_seconds",
        "vllm_neuron:compilation_time_seconds",
        "vllm_neuron:model_load_time_seconds",
        "vllm_neuron:model_load_size_bytes",
    ),
)
