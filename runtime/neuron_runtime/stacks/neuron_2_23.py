"""The seed stack: Neuron SDK 2.23, NxD Inference 0.3 and the AWS vLLM fork 0.7.2 (vLLM V0), end-of-life.

The profile holds the env var names, server flags, module paths, dtype map, model-class map, artifact layout and
package pins of this stack; :mod:`neuron_runtime.neuron_config`, :mod:`neuron_runtime.compile`,
:mod:`neuron_runtime.nxdi_server`, :mod:`neuron_runtime.serve` and :mod:`neuron_runtime.multinode` implement it.
AWS ended vLLM V0 support with SDK 2.28
(aws-neuron-sdk@81ce03a about-neuron/announcements/neuron2.x/announcement-end-of-support-vllm-v0.rst) and put NxD
Inference in maintenance mode (announce-nxdi-maintenance-support-2-31.rst); the profile stays for trn1/inf2, which
the newer plugin does not support, and for services that already run on it.

Source labels used in comments:
  F23 = aws-neuron/upstreaming-to-vllm @ branch neuron-2.23-vllm-v0.7.2 (ad38d70fd7cafe9f60eb106339555e9e86483135)
  NX3 = aws-neuron/neuronx-distributed-inference @ tag v0.3.5591 (9b90cd02ffc3cc76bb3e81113a177f10d7a350a8)
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping, Optional, Tuple

from neuron_runtime.stacks.base import ENGINE_VLLM_V0_NXDI, STATUS_END_OF_LIFE, Stack, StackFeatures


@dataclass(frozen=True)
class ServerFlags:
    """Command-line flag names of the OpenAI-compatible server (F23 vllm/engine/arg_utils.py, cli_args.py)."""

    model: str
    port: str
    tensor_parallel_size: str
    max_num_seqs: str
    max_model_len: str
    dtype: str
    device: str
    served_model_name: str
    override_neuron_config: str
    enable_lora: str
    max_loras: str
    max_lora_rank: str
    lora_modules: str
    speculative_model: str
    num_speculative_tokens: str
    speculative_max_model_len: str
    # Other spellings of flags the runtime derives, also refused in extra_args (-tp is --tensor-parallel-size's
    # alias; --revision would pin a revision on the local model directory the runtime passes).
    reserved_aliases: Tuple[str, ...] = ()


@dataclass(frozen=True)
class MultiNodeSettings:
    """What one stack needs to run one NxDI model across several nodes (one process per node)."""

    # Env read by torch.distributed env:// (MASTER_ADDR/MASTER_PORT), by the Neuron runtime (root communicator)
    # and by whatever consumes the per-node TP size.
    env_master_addr: str
    env_master_port: str
    default_master_port: int
    env_root_comm_id: str
    default_root_comm_port: int
    env_local_tp: str
    # Set only when the pod does not set them already (a pod-level value wins).
    fabric_env: Tuple[Tuple[str, str], ...]
    # Prepended to LD_LIBRARY_PATH when missing (Neuron runtime and EFA libfabric).
    library_dirs: Tuple[str, ...]
    # The module that runs ranks > 0 (this package ships it: the fork's worker.py is not in the vllm package).
    worker_module: str
    # override_neuron_config keys that select a node's slice of the ranks at load time (NX3 load_weights).
    override_start_rank: str
    override_local_ranks: str


@dataclass(frozen=True)
class NxdiStackProfile(Stack):
    """A vLLM V0 + NxD Inference stack: compile with NxDI into NEURON_COMPILED_ARTIFACTS, serve with the fork."""

    # Selects the NeuronConfig default rules in neuron_config.py that this stack's vLLM applies.
    neuron_config_rules: str
    # --- environment ---
    env_framework: str
    framework_nxdi: str
    env_compiled_artifacts: str
    env_logical_nc_config: str
    env_rpc_timeout: str
    default_rpc_timeout_ms: str
    env_world_size: str
    env_multi_node: str
    env_rank_id: str
    # --- server ---
    server_module: str
    device: str
    flags: ServerFlags
    # --- model / NeuronConfig vocabulary ---
    dtype_to_neuron: Mapping[str, str]  # vLLM --dtype string -> NxDI torch_dtype string
    supported_models: Mapping[str, Tuple[str, str]]  # HF architecture -> (NxDI module, class)
    default_max_lora_rank: int
    allowed_max_lora_ranks: Tuple[int, ...]
    # NeuronConfig keys derived from first-class spec fields; an override may repeat them but not contradict them.
    spec_owned_keys: frozenset
    # override_neuron_config keys vLLM pops to build LoraServingConfig instead of passing them to NeuronConfig.
    lora_override_keys: Tuple[str, ...]
    # Model classes whose compiled directory must also hold the tokenizer (the fork saves it there for Mllama).
    models_with_tokenizer_in_artifacts: frozenset
    # --- compiled artifact layout written by NxDI compile() ---
    neuron_config_file: str
    compiled_model_file: str
    sharded_weights_file: str  # relative path, formatted with rank=
    # --- multi-node (None: this stack cannot serve one model across nodes) ---
    multi_node: Optional[MultiNodeSettings] = None


NEURON_2_23_VLLM_0_7_2 = NxdiStackProfile(
    id="neuron-2.23-vllm-0.7.2",
    engine=ENGINE_VLLM_V0_NXDI,
    sdk_version="2.23.0",
    status=STATUS_END_OF_LIFE,
    # NxDI 0.3 runs on Inf2, Trn1/Trn1n and Trn2 (SDK23 libraries/nxd-inference/nxdi-overview.rst).
    families=("inf2", "trn1", "trn2"),
    features=StackFeatures(
        # F23 examples/neuron/multi_node/; SDK23 nxdi-overview.rst: multi-node "will be supported in future
        # releases", i.e. experimental upstream.
        multi_node=True,
        multi_node_experimental=True,
        lora=True,  # F23 vllm/worker/neuronx_distributed_model_runner.py _get_nxdi_lora_config
        # F23 neuronx_distributed.py: NeuronSpeculationCausalLM (fused draft) and enable_eagle_speculation
        speculative_methods=("draft", "eagle"),
        cpu_compile=False,  # NxDI compiles on the target instance (its LNC and devices)
        cpu_compile_speculative=False,
        data_parallel=False,  # the fork's Neuron platform runs one engine per process (F23 platforms/neuron.py)
        max_num_batched_tokens=False,  # NxDI buckets are set in override_neuron_config instead
        # F23 vllm/worker/neuron_model_runner.py ModelInputForNeuron.as_broadcastable_tensor_dict leaves adapter_ids
        # out of what rank 0 broadcasts, so worker nodes would compute without the adapter.
        multi_node_lora=False,
        # SDK23 libraries/nxd-inference/developer_guides/migrate-from-tnx-to-nxdi.rst "Features currently not
        # supported in NxD Inference through vLLM": "concurrency > 1 support for speculation"; the fork's
        # neuronx_distributed.py _get_default_speculation_config builds it without continuous batching.
        speculative_batching=False,
    ),
    default_image="public.ecr.aws/neuron-operator/neuron-runtime:0.1.0-neuron2.23",
    dockerfile="Dockerfile.neuron",
    base_image="public.ecr.aws/neuron/pytorch-inference-neuronx:2.6.0-neuronx-py310-sdk2.23.0-ubuntu22.04",
    image_python="3.10",
    neuron_config_rules="vllm-0.7.2-nxdi",
    # Neuron 2.23 release manifest (aws-neuron-sdk v2.23.0 src/helperscripts/n2-manifest.json); NX3 tag v0.3.5591.
    # vLLM: the fork's setup.py takes its version from setuptools-scm; Dockerfile.neuron fixes it to 0.7.2
    # (SETUPTOOLS_SCM_PRETEND_VERSION) and setup.py appends "+neuron218" (get_vllm_version).
    # transformers: NX3 setup.py install_requires "transformers==4.48.*", a family pin (PEP 440 prefix, accepted by
    # stacks.pin_matches); the DLC installs NxDI with --no-deps, so nothing else enforces it. The fork asks for
    # "transformers >= 4.48.2" (F23 requirements-common.txt); Dockerfile.neuron pins 4.48.3, which satisfies both.
    pinned_distributions=MappingProxyType(
        {
            "neuronx-distributed-inference": "0.3.5591",
            "neuronx-cc": "2.18.121.0",
            "vllm": "0.7.2",
            "transformers": "4.48.*",
        }
    ),
    # torch-neuronx is 2.6.0.2.7.x in the DLC but the exact build differs between the SDK manifest and the DLC
    # Dockerfile, so only its presence is required.
    required_distributions=("torch-neuronx", "neuronx-distributed"),
    recorded_distributions=(
        "vllm",
        "neuronx-distributed-inference",
        "neuronx-distributed",
        "neuronx-cc",
        "torch-neuronx",
        "torch",
        "transformers",
    ),
    # F23 vllm/worker/utils.py get_neuron_framework_to_use
    env_framework="VLLM_NEURON_FRAMEWORK",
    framework_nxdi="neuronx-distributed-inference",
    # F23 vllm/model_executor/model_loader/neuronx_distributed.py NeuronCausalLM.load_weights
    env_compiled_artifacts="NEURON_COMPILED_ARTIFACTS",
    # NX3 src/neuronx_distributed_inference/models/config.py: the env var wins over the logical_nc_config kwarg
    env_logical_nc_config="NEURON_LOGICAL_NC_CONFIG",
    # F23 vllm/envs.py (milliseconds, default 10000); AWS tutorials use 100000 for slow Neuron engine start-up
    env_rpc_timeout="VLLM_RPC_TIMEOUT",
    default_rpc_timeout_ms="100000",
    # F23 vllm/worker/neuron_worker.py reads these even in single-node mode (WORLD_SIZE default "1")
    env_world_size="WORLD_SIZE",
    env_multi_node="ENABLE_NEURON_MULTI_NODE",
    env_rank_id="NEURON_RANK_ID",
    server_module="vllm.entrypoints.openai.api_server",
    device="neuron",  # F23 vllm/engine/arg_utils.py DEVICE_OPTIONS
    flags=ServerFlags(
        model="--model",
        port="--port",  # F23 vllm/entrypoints/openai/cli_args.py
        tensor_parallel_size="--tensor-parallel-size",
        max_num_seqs="--max-num-seqs",
        max_model_len="--max-model-len",
        dtype="--dtype",
        device="--device",
        served_model_name="--served-model-name",
        override_neuron_config="--override-neuron-config",  # type=json.loads
        enable_lora="--enable-lora",
        max_loras="--max-loras",
        max_lora_rank="--max-lora-rank",
        lora_modules="--lora-modules",  # LoRAParserAction: name=path or JSON {"name":..,"path":..}
        speculative_model="--speculative-model",
        num_speculative_tokens="--num-speculative-tokens",
        speculative_max_model_len="--speculative-max-model-len",
        reserved_aliases=("-tp", "--revision"),
    ),
    # F23 neuronx_distributed.py TORCH_DTYPE_TO_NEURON_AMP, string entries. "auto" is absent on purpose: vLLM's
    # ModelConfig resolves it to a torch dtype before the map is consulted (F23 vllm/config.py
    # _get_and_verify_dtype), see neuron_config.resolve_torch_dtype.
    dtype_to_neuron=MappingProxyType(
        {
            "half": "float16",
            "float16": "float16",
            "bfloat16": "bfloat16",
            "float": "float32",
            "float32": "float32",
        }
    ),
    # F23 neuronx_distributed.py _NEURON_SUPPORTED_MODELS (class names checked in NX3 models/*/modeling_*.py)
    supported_models=MappingProxyType(
        {
            "LlamaForCausalLM": ("neuronx_distributed_inference.models.llama.modeling_llama", "NeuronLlamaForCausalLM"),
            "MistralForCausalLM": (
                "neuronx_distributed_inference.models.llama.modeling_llama",
                "NeuronLlamaForCausalLM",
            ),
            "DbrxForCausalLM": ("neuronx_distributed_inference.models.dbrx.modeling_dbrx", "NeuronDbrxForCausalLM"),
            "MixtralForCausalLM": (
                "neuronx_distributed_inference.models.mixtral.modeling_mixtral",
                "NeuronMixtralForCausalLM",
            ),
            "MllamaForConditionalGeneration": (
                "neuronx_distributed_inference.models.mllama.modeling_mllama",
                "NeuronMllamaForCausalLM",
            ),
        }
    ),
    # F23 vllm/engine/arg_utils.py EngineArgs.max_lora_rank = 16; vllm/config.py LoRAConfig possible_max_ranks
    default_max_lora_rank=16,
    allowed_max_lora_ranks=(8, 16, 32, 64, 128, 256),
    spec_owned_keys=frozenset(
        {
            "tp_degree",
            "batch_size",
            "seq_len",
            "torch_dtype",
            "logical_nc_config",
            "world_size",
            "lora_config",
            "speculation_length",
        }
    ),
    # F23 vllm/worker/neuronx_distributed_model_runner.py _get_nxdi_lora_config
    lora_override_keys=("lora_modules", "target_modules"),
    models_with_tokenizer_in_artifacts=frozenset({"MllamaForConditionalGeneration"}),
    # NX3 models/config.py CONFIG_FILE; models/application_base.py COMPILED_MODEL_FILE_NAME and load_weights
    neuron_config_file="neuron_config.json",
    compiled_model_file="model.pt",
    sharded_weights_file="weights/tp{rank}_sharded_checkpoint.safetensors",
    multi_node=MultiNodeSettings(
        # F23 vllm/worker/neuron_worker.py: with ENABLE_NEURON_MULTI_NODE=true the worker takes its rank from
        # NEURON_RANK_ID, the gloo world size from WORLD_SIZE (nodes) and uses distributed_init_method "env://",
        # so torch.distributed reads MASTER_ADDR/MASTER_PORT. 29500 is torch's customary port (any free port works).
        env_master_addr="MASTER_ADDR",
        env_master_port="MASTER_PORT",
        default_master_port=29500,
        # F23 examples/neuron/multi_node/launch_script.py: NEURON_RT_ROOT_COMM_ID=<MASTER_ADDR>:63423 (the runtime
        # puts the leader's IP there, see multinode.root_comm_id) and NEURON_LOCAL_TP=<local_ranks_size>.
        # NEURON_LOCAL_TP is a transformers-neuronx variable: its NeuronConfig reads it (aws-neuron/transformers-neuronx
        # @1ade6d7 src/transformers_neuronx/config.py: self.local_tp = os.getenv("NEURON_LOCAL_TP")), documented as
        # "the local tensor parallel degree on each node" (aws-neuron-sdk v2.23.0
        # libraries/transformers-neuronx/transformers-neuronx-developer-guide.rst). The fork (beyond its launcher),
        # NxDI v0.3.5591 and neuronx-distributed e834945 do not read it: NxDI takes local_ranks_size from its
        # NeuronConfig. It is set because the fork's launcher sets it.
        env_root_comm_id="NEURON_RT_ROOT_COMM_ID",
        default_root_comm_port=63423,
        env_local_tp="NEURON_LOCAL_TP",
        # F23 examples/neuron/multi_node/multi_node_launcher.sh (mpirun -x ...); NX3
        # scripts/nxdi_distributed_launcher.py forces the same three.
        fabric_env=(("FI_PROVIDER", "efa"), ("FI_EFA_USE_DEVICE_RDMA", "1"), ("FI_EFA_FORK_SAFE", "1")),
        library_dirs=("/opt/aws/neuron/lib", "/opt/amazon/efa/lib"),  # multi_node_launcher.sh LD_LIBRARY_PATH
        worker_module="neuron_runtime.multinode_worker",
        override_start_rank="start_rank_id",
        override_local_ranks="local_ranks_size",
    ),
)
