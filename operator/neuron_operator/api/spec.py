"""The NeuronInferenceService spec: the typed source of truth for what users may write.

Every field carries a description and a constraint; ``api/crd.py`` turns these models into the CRD's
OpenAPI schema, so ``kubectl explain nis.spec...`` prints the descriptions below. Rules the schema cannot
express field by field (cross-field, catalog-derived) are attached as CEL ``x-kubernetes-validations`` here,
next to the fields they guard; ``validation.py`` repeats them in Python (plus the checks CEL cannot do) so
``neuron-operator render`` and a cluster without the CRD's rules get the same answers.

Attribute names are snake_case; the wire format is camelCase (aliases). Defaults live here and are applied
when reading; the few that are pure constants also appear as CRD schema defaults.
"""

from __future__ import annotations

import re
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from neuron_runtime.stacks import PROFILES, StackFeatures

from neuron_operator.catalog import (
    EFA_RESOURCE,
    NEURON_CORE_RESOURCE,
    NEURON_DEVICE_RESOURCE,
    InstanceType,
    load_catalog,
)

# --- patterns (RE2- and Rust-regex compatible: no look-around) -------------------------------------------

MODEL_URI_PATTERN = r"^(hf|s3|pvc)://.+"
S3_URI_PATTERN = r"^s3://[^/]+(/.*)?$"
DNS1123_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS1123_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SECRET_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"
ENV_VAR_NAME_PATTERN = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
REVISION_PATTERN = r"^[^\s]+$"
RELATIVE_PATH_PATTERN = r"^[^/].*$"
LABEL_KEY_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
# The apimachinery resource.Quantity grammar, as controller-gen emits it for int-or-string quantities.
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)"
    r"|(\.[0-9]+))))?$"
)

# --- bounds that keep CEL cost estimates small (the API server rejects rules whose worst case is too big) -

MAX_EXTRA_ARGS = 64
MAX_ARG_LENGTH = 1024
MAX_LORA_ADAPTERS = 32
MAX_RESOURCE_ENTRIES = 16
MAX_URI_LENGTH = 2048

# --- what the operator derives, so users cannot set it -------------------------------------------------

# vLLM server flags the operator sets from the spec (F23 `vllm/engine/arg_utils.py`; vLLM 0.24 the same file for the
# vllm-neuron stack), with the field to use. Several are compile inputs: passing them as extraArgs would serve a model
# different from the compiled one. One list for every stack: a flag one stack derives is never the user's to set.
OPERATOR_OWNED_ARGS: dict[str, str] = {
    "--model": "spec.model.uri",
    "--revision": "spec.model.revision",
    "--tensor-parallel-size": "spec.tensorParallelSize",
    "-tp": "spec.tensorParallelSize",
    "--max-num-seqs": "spec.engine.maxNumSeqs",
    "--max-model-len": "spec.engine.maxModelLen",
    "--dtype": "spec.engine.dtype",
    "--override-neuron-config": "spec.engine.overrideNeuronConfig",
    "--port": "nothing: the operator fixes the serving port",
    "--device": "nothing: always neuron",
    "--served-model-name": "spec.engine.servedModelName",
    "--enable-lora": "spec.loraAdapters",
    "--lora-modules": "spec.loraAdapters",
    "--max-loras": "spec.loraAdapters",
    "--max-lora-rank": "spec.engine.maxLoraRank",
    "--speculative-model": "spec.speculativeDecoding.draftModel",
    "--speculative-config": "spec.speculativeDecoding",
    "--num-speculative-tokens": "spec.speculativeDecoding.numSpeculativeTokens",
    "--speculative-max-model-len": "spec.speculativeDecoding.maxModelLen",
    "--data-parallel-size": "spec.dataParallelSize",
    "-dp": "spec.dataParallelSize",
    "--max-num-batched-tokens": "spec.engine.maxNumBatchedTokens",
    "--additional-config": "spec.engine.overrideNeuronConfig",
    "--additional_config": "spec.engine.overrideNeuronConfig",
}

# NxDI NeuronConfig keys the operator derives (vLLM's `_get_default_neuron_config` and the multi-node
# per-rank overrides), with the spec field that sets them instead.
OPERATOR_OWNED_OVERRIDE_KEYS: dict[str, str] = {
    "tp_degree": "spec.tensorParallelSize",
    "world_size": "spec.nodesPerReplica",
    "start_rank_id": "spec.nodesPerReplica (set per rank by the operator)",
    "local_ranks_size": "spec.nodesPerReplica (set per rank by the operator)",
    "batch_size": "spec.engine.maxNumSeqs",
    "seq_len": "spec.engine.maxModelLen",
    "max_context_length": "spec.engine.maxModelLen",
    "torch_dtype": "spec.engine.dtype",
    "logical_nc_config": "spec.instanceType (LNC comes from the instance catalog)",
    "lora_modules": "spec.loraAdapters",
    "speculation_length": "spec.speculativeDecoding.numSpeculativeTokens",
    "enable_eagle_speculation": "spec.speculativeDecoding.method",
}

# Device-plugin resources the operator requests itself, derived from instanceType and tensorParallelSize.
OPERATOR_OWNED_RESOURCES: tuple[str, ...] = (
    NEURON_DEVICE_RESOURCE,
    NEURON_CORE_RESOURCE,
    "aws.amazon.com/neurondevice",
    EFA_RESOURCE,
)

# The pinned AWS fork (vLLM 0.7.2, vllm/config.py LoRAConfig) accepts only these ranks; later upstream
# versions added 320 and 512, which the runtime would reject with exit code 2.
LORA_RANKS = (8, 16, 32, 64, 128, 256)

# Every stack profile's id, in registry order (neuron_runtime.stacks.PROFILES is the one list).
STACK_IDS = tuple(PROFILES)
SPECULATIVE_METHODS = tuple(dict.fromkeys(m for p in PROFILES.values() for m in p.features.speculative_methods))


def per_node_tp_choices(instance: InstanceType) -> tuple[int, ...]:
    """Per-node tensor-parallel degrees valid on ``instance``: the family's NxDI degrees that fit its NeuronCores."""
    choices = []
    for degree in instance.tp_degrees:
        try:
            instance.devices_for_tp(degree)
        except ValueError:
            continue
        choices.append(degree)
    return tuple(choices)


def _cel_str_list(values) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


def _cel_int_list(values) -> str:
    return "[" + ", ".join(str(v) for v in values) + "]"


def _join(values) -> str:
    return ", ".join(str(v) for v in values)


# --- shared types --------------------------------------------------------------------------------------


def _validate_quantity(value: Any) -> int | str:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        # pydantic turns ValueError (not TypeError) into a validation error
        raise ValueError("must be a Kubernetes quantity (an integer or a string such as '4', '500m', '16Gi')")  # noqa: TRY004
    if isinstance(value, str) and not re.fullmatch(QUANTITY_PATTERN, value):
        raise ValueError(f"{value!r} is not a Kubernetes quantity (e.g. '4', '500m', '16Gi')")
    return value


Quantity = Annotated[
    int | str,
    PlainValidator(_validate_quantity),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
            "x-kubernetes-int-or-string": True,
        }
    ),
]

ExtraArg = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ARG_LENGTH)]

_catalog = load_catalog()
InstanceTypeName = Literal[tuple(_catalog.instance_types)]  # type: ignore[valid-type]


class SpecModel(BaseModel):
    """Base for spec models: camelCase on the wire, unknown fields are errors, immutable once parsed."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


# --- model sources -------------------------------------------------------------------------------------


class SecretKeyRef(SpecModel):
    """A key in a Secret in the same namespace."""

    name: str = Field(
        description="Name of the Secret in the resource's namespace.",
        min_length=1,
        max_length=253,
        pattern=DNS1123_SUBDOMAIN_PATTERN,
    )
    key: str = Field(
        "token",
        description="Key within the Secret whose value is the token.",
        min_length=1,
        max_length=253,
        pattern=SECRET_KEY_PATTERN,
    )


class ModelSource(SpecModel):
    """Where the model weights come from. A compile input: changing it compiles new artifacts."""

    uri: str = Field(
        description=(
            "Model location: hf://<org>/<name> (Hugging Face Hub), s3://<bucket>/<prefix> (a prefix holding the "
            "Hugging Face checkpoint files), or pvc://<claim>/<path> (a PersistentVolumeClaim in the same "
            "namespace and the checkpoint directory inside it)."
        ),
        max_length=MAX_URI_LENGTH,
        pattern=MODEL_URI_PATTERN,
    )
    revision: str = Field(
        "main",
        description=(
            "For hf:// models, the branch, tag or commit to download; pin a commit for reproducible compiles. "
            "Part of the compile key. Ignored for s3:// and pvc:// sources."
        ),
        min_length=1,
        max_length=255,
        pattern=REVISION_PATTERN,
    )
    token_secret_ref: SecretKeyRef | None = Field(
        None,
        description=(
            "Secret holding a Hugging Face access token for gated or private models (exposed to the compile "
            "and serving pods as HF_TOKEN). Not a compile input."
        ),
    )


class DraftModelSource(SpecModel):
    """The draft model for speculative decoding."""

    uri: str = Field(
        description="Draft model location, same schemes as spec.model.uri (hf://, s3://, pvc://).",
        max_length=MAX_URI_LENGTH,
        pattern=MODEL_URI_PATTERN,
    )
    revision: str = Field(
        "main",
        description="For hf:// draft models, the branch, tag or commit. Part of the compile key.",
        min_length=1,
        max_length=255,
        pattern=REVISION_PATTERN,
    )


# --- engine --------------------------------------------------------------------------------------------


class EngineSpec(SpecModel):
    """vLLM / NxD Inference settings. Everything here except extraArgs is a compile input."""

    max_num_seqs: int = Field(
        8,
        description=(
            "Maximum concurrent sequences (vLLM --max-num-seqs; NxDI batch_size). The model is compiled for this "
            "batch size, so changing it recompiles."
        ),
        ge=1,
        le=1024,
    )
    max_model_len: int = Field(
        4096,
        description=(
            "Maximum tokens per sequence, prompt plus output (vLLM --max-model-len; NxDI seq_len and "
            "max_context_length). Must be at least 128, the smallest Neuron bucket. Changing it recompiles."
        ),
        ge=1,
        le=1048576,
    )
    max_num_batched_tokens: int | None = Field(
        None,
        description=(
            "Largest number of tokens one prefill step processes (vLLM --max-num-batched-tokens): prompts longer "
            "than this are prefilled in segments. Sizes the compiled prefill graphs, so changing it recompiles; "
            "the largest of overrideNeuronConfig.num_batched_tokens_buckets must equal it. vllm-neuron stacks only; "
            "unset: vLLM's default."
        ),
        ge=128,
        le=1048576,
    )
    dtype: Literal["bfloat16", "float16", "float32"] = Field(
        "bfloat16",
        description=(
            "Weight and activation dtype (vLLM --dtype; NxDI torch_dtype). There is no 'auto': vLLM would pick it "
            "from the checkpoint's config (float16 for float32 checkpoints), making the compiled artifact depend on "
            "files outside the spec, so the dtype is always explicit. Changing it recompiles."
        ),
    )
    override_neuron_config: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "Neuron settings in the vocabulary of the service's stack. neuron-2.23-vllm-0.7.2: NxD Inference "
            "NeuronConfig keys merged over the defaults vLLM derives (vLLM --override-neuron-config), e.g. "
            "context_encoding_buckets, token_generation_buckets, on_device_sampling_config, "
            "sequence_parallel_enabled, fused_qkv; keys the operator derives from other fields (tp_degree, "
            "batch_size, seq_len, max_context_length, torch_dtype, logical_nc_config, world_size, ...) are "
            "rejected. neuron-2.32-vllm-neuron-0.24: the plugin's neuron_config (passed as "
            "--additional-config {\"neuron_config\": ...}), e.g. num_batched_tokens_buckets, num_seqs_buckets, "
            "kv_segment_size_buckets, decode_context_length_buckets, on_device_sampling_config, quantization, "
            "ep_degree; an NxD Inference key is reported with its new name. Every key is a compile input except "
            "the 2.23 stack's load-only keys (skip_warmup)."
        ),
    )
    served_model_name: Union[str, None] = Field(
        None,
        description=(
            "The model name clients send in OpenAI requests (vLLM --served-model-name). Default: the Hugging Face "
            "id for hf:// models (e.g. meta-llama/Llama-3.1-8B-Instruct), else the service's name. Not a compile "
            "input."
        ),
        min_length=1,
        max_length=253,
        pattern=r"^[^\s]+$",
    )
    extra_args: list[ExtraArg] = Field(
        default_factory=list,
        description=(
            "Extra command-line arguments appended to the vLLM OpenAI server (e.g. --disable-log-requests, "
            "--max-log-len=100). On neuron-2.23-vllm-0.7.2 they are not compile inputs: changing them rolls the "
            "pods without recompiling. On vllm-neuron stacks the compile Job runs the same server command, so "
            "engine flags (e.g. --block-size, --kv-cache-dtype) are compile inputs and recompile; server-only flags "
            "(logging, API, chat template, tool calling) are not. Flags the operator derives from the spec are "
            "rejected: " + _join(OPERATOR_OWNED_ARGS) + "."
        ),
        max_length=MAX_EXTRA_ARGS,
        json_schema_extra={
            "x-kubernetes-list-type": "atomic",
            "x-kubernetes-validations": [
                {
                    "rule": (
                        f"self.all(a, !{_cel_str_list(OPERATOR_OWNED_ARGS)}.exists(f, a == f || a.startsWith(f + '=')))"
                    ),
                    "message": (
                        "spec.engine.extraArgs: must not contain flags the operator sets from the spec: "
                        + "; ".join(f"{flag} (use {field})" for flag, field in OPERATOR_OWNED_ARGS.items())
                    ),
                }
            ],
        },
    )
    max_lora_rank: Literal[LORA_RANKS] | None = Field(  # type: ignore[valid-type]
        None,
        description=(
            "Largest LoRA rank among spec.loraAdapters (vLLM --max-lora-rank). Unset lets NxD Inference read it "
            "from the adapters. Only used, and only a compile input, when spec.loraAdapters is not empty."
        ),
    )


# --- artifacts -----------------------------------------------------------------------------------------


class PVCArtifactStore(SpecModel):
    """Compiled artifacts on a PersistentVolumeClaim in the resource's namespace."""

    claim_name: str = Field(
        description=(
            "Name of the PersistentVolumeClaim. Use ReadWriteMany so the compile Job and every serving pod "
            "can mount it."
        ),
        min_length=1,
        max_length=253,
        pattern=DNS1123_SUBDOMAIN_PATTERN,
    )
    sub_path: str | None = Field(
        None,
        description="Directory inside the claim that holds the store (relative, no '..'). Default: the claim root.",
        min_length=1,
        max_length=1024,
        pattern=RELATIVE_PATH_PATTERN,
    )


class S3ArtifactStore(SpecModel):
    """Compiled artifacts under an S3 prefix."""

    uri: str = Field(
        description="s3://<bucket>/<prefix> under which each compiled model is stored as <prefix>/<compile key>/.",
        max_length=MAX_URI_LENGTH,
        pattern=S3_URI_PATTERN,
    )


class ArtifactsSpec(SpecModel):
    """Where compiled artifacts are stored and shared: exactly one of pvc or s3.

    Artifacts are content-addressed by compile key, so services with identical compile inputs in the same
    store compile once.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.pvc) != has(self.s3)",
                    "message": "spec.artifacts: set exactly one of artifacts.pvc or artifacts.s3",
                }
            ]
        }
    )

    pvc: PVCArtifactStore | None = Field(
        None, description="Store artifacts on a PersistentVolumeClaim. Mutually exclusive with s3."
    )
    s3: S3ArtifactStore | None = Field(
        None, description="Store artifacts under an S3 prefix. Mutually exclusive with pvc."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> ArtifactsSpec:
        if (self.pvc is None) == (self.s3 is None):
            raise ValueError("set exactly one of artifacts.pvc or artifacts.s3")
        return self


# --- LoRA and speculative decoding ---------------------------------------------------------------------


class LoraAdapterSpec(SpecModel):
    """A LoRA adapter compiled into the model and served under its name."""

    name: str = Field(
        description=(
            'Adapter name; clients select it with "model": "<name>" in OpenAI requests. Lowercase '
            "alphanumerics and '-', at most 63 characters, unique within the list."
        ),
        min_length=1,
        max_length=63,
        pattern=DNS1123_LABEL_PATTERN,
    )
    uri: str = Field(
        description="Adapter location, same schemes as spec.model.uri (hf://, s3://, pvc://).",
        max_length=MAX_URI_LENGTH,
        pattern=MODEL_URI_PATTERN,
    )


class SpeculativeDecodingSpec(SpecModel):
    """Speculative decoding with a draft model, fused into the compiled model. A compile input."""

    method: Literal[SPECULATIVE_METHODS] = Field(  # type: ignore[valid-type]
        "draft",
        description=(
            "draft: fused speculation with a small draft model of the same family; eagle: EAGLE (v1) speculation, "
            "the draft checkpoint must contain the target model's LM head weights (both neuron-2.23-vllm-0.7.2). "
            "eagle3: an EAGLE3 draft through vLLM --speculative-config (vllm-neuron stacks; it cannot compile on "
            "CPU, so such services compile on the target instance type)."
        ),
    )
    draft_model: DraftModelSource = Field(description="The draft (or EAGLE) model.")
    num_speculative_tokens: int = Field(
        5,
        description="Tokens the draft model proposes per step (vLLM --num-speculative-tokens; NxDI speculation_length).",
        ge=1,
        le=16,
    )
    max_model_len: int | None = Field(
        None,
        description=(
            "Maximum sequence length for the draft model (vLLM --speculative-max-model-len); at most "
            "spec.engine.maxModelLen. Default: vLLM's choice, the smaller of spec.engine.maxModelLen and the draft "
            "model's own limit. neuron-2.23-vllm-0.7.2 only."
        ),
        ge=1,
        le=1048576,
    )


# --- runtime overrides ---------------------------------------------------------------------------------


class LocalObjectReference(SpecModel):
    """A reference to an object in the same namespace."""

    name: str = Field(
        description="Name of the referenced object.", min_length=1, max_length=253, pattern=DNS1123_SUBDOMAIN_PATTERN
    )


def _resource_map_field(which: str, path: str = "spec.runtime.resources"):
    return Field(
        default_factory=dict,
        description=(
            f"Resource {which}, e.g. cpu and memory. Neuron devices, NeuronCores and EFA interfaces are derived by "
            "the operator and must not be set here."
        ),
        max_length=MAX_RESOURCE_ENTRIES,
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": f"self.all(k, !(k in {_cel_str_list(OPERATOR_OWNED_RESOURCES)}))",
                    "message": (
                        f"{path}.{which}: must not set {_join(OPERATOR_OWNED_RESOURCES)}; the operator derives them "
                        "from spec.instanceType, spec.tensorParallelSize and spec.nodesPerReplica"
                    ),
                }
            ]
        },
    )


class ResourceRequirements(SpecModel):
    """CPU, memory and other non-Neuron resources for the serving container."""

    requests: dict[str, Quantity] = _resource_map_field("requests")
    limits: dict[str, Quantity] = _resource_map_field("limits")


class CompileResourceRequirements(SpecModel):
    """CPU, memory and other non-Neuron resources for the compile container."""

    requests: dict[str, Quantity] = _resource_map_field("requests", "spec.runtime.compileResources")
    limits: dict[str, Quantity] = _resource_map_field("limits", "spec.runtime.compileResources")


class Toleration(SpecModel):
    """A Kubernetes toleration (core/v1 Toleration). The Neuron taint is tolerated automatically."""

    key: str | None = Field(
        None, description="Taint key to match; empty with operator Exists matches all taints.", max_length=316
    )
    operator: Literal["Exists", "Equal"] | None = Field(
        None, description="Exists or Equal (the Kubernetes default when unset is Equal)."
    )
    value: str | None = Field(None, description="Taint value to match with operator Equal.", max_length=63)
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="Taint effect to match; unset matches all effects."
    )
    toleration_seconds: int | None = Field(
        None, description="For NoExecute: how long the pod stays bound after the taint appears.", ge=0
    )


class EnvVar(SpecModel):
    """An environment variable for the serving container."""

    name: str = Field(description="Variable name.", min_length=1, max_length=256, pattern=ENV_VAR_NAME_PATTERN)
    value: str = Field("", description="Variable value.", max_length=32768)


class RuntimeSpec(SpecModel):
    """The runtime stack and overrides for the pods the operator creates. Only the stack is a compile input."""

    stack: Literal[STACK_IDS] | None = Field(  # type: ignore[valid-type]
        None,
        description=(
            "Runtime stack profile (Neuron SDK + vLLM engine + image) that compiles and serves the model; "
            "`neuron-operator stacks` lists them with their instance families and features. "
            "neuron-2.23-vllm-0.7.2: Neuron SDK 2.23, NxD Inference, the AWS vLLM fork 0.7.2 (inf2, trn1, trn2; "
            "end-of-life upstream). neuron-2.32-vllm-neuron-0.24: Neuron SDK 2.32, vLLM 0.24 with the vllm-neuron "
            "plugin (trn2, trn3; compiles on CPU nodes, serves cache-hit-only). Default: the operator's stack for "
            "the instance family. Part of the compile key."
        ),
    )
    image: str | None = Field(
        None,
        description="Runtime image (Neuron SDK + vLLM + neuron-runtime) for the compile Job and serving pods; it must "
        "provide the service's stack. Default: the operator's image for the stack.",
        min_length=1,
        max_length=1024,
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        None, description="Image pull policy. Default: IfNotPresent for tagged images."
    )
    image_pull_secrets: list[LocalObjectReference] = Field(
        default_factory=list,
        description="Secrets for pulling the runtime image.",
        max_length=16,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    resources: ResourceRequirements = Field(
        default_factory=ResourceRequirements,
        description="CPU and memory for the serving container. Neuron device and EFA counts are derived.",
    )
    compile_resources: CompileResourceRequirements = Field(
        default_factory=CompileResourceRequirements,
        description=(
            "CPU and memory for the compile container. Default: sized from the model (its parameter count as the "
            "model name states it, e.g. 8B, 70B) for compiles on CPU nodes, and from the devices the pod holds for "
            "compiles on Neuron nodes. A compile killed for memory (OOMKilled) says to raise this."
        ),
    )
    node_selector: dict[str, str] = Field(
        default_factory=dict,
        description="Extra node labels to select on, added to the instance-type selector the operator sets.",
        max_length=32,
    )
    tolerations: list[Toleration] = Field(
        default_factory=list,
        description="Extra tolerations, added to the Neuron taint toleration the operator sets.",
        max_length=32,
        json_schema_extra={"x-kubernetes-list-type": "atomic"},
    )
    scheduler_name: str | None = Field(
        None,
        description="Scheduler for the pods, e.g. the Neuron scheduler extension's scheduler for contiguous devices.",
        min_length=1,
        max_length=253,
        pattern=DNS1123_SUBDOMAIN_PATTERN,
    )
    env: list[EnvVar] = Field(
        default_factory=list,
        description="Extra environment variables for the serving container.",
        max_length=64,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    pod_labels: dict[str, str] = Field(
        default_factory=dict, description="Extra labels for the serving pods.", max_length=64
    )
    pod_annotations: dict[str, str] = Field(
        default_factory=dict, description="Extra annotations for the serving pods.", max_length=64
    )
    service_account_name: str | None = Field(
        None,
        description="ServiceAccount for the compile and serving pods (e.g. one with IRSA for s3:// models).",
        min_length=1,
        max_length=253,
        pattern=DNS1123_SUBDOMAIN_PATTERN,
    )
    startup_timeout_seconds: int = Field(
        1800,
        description=(
            "How long the startup probe allows the server to load the compiled model before the pod is restarted. "
            "Large models on shard-on-load stacks need tens of minutes."
        ),
        ge=60,
        le=86400,
    )
    allow_surge: bool = Field(
        False,
        description=(
            "Whether rolling updates may create new pods before old ones stop, temporarily needing more Neuron "
            "devices than the replicas hold. Default false: roll in place, never asking for extra accelerators."
        ),
    )
    lend_replica_to_compile: bool = Field(
        False,
        description=(
            "When a new compile cannot be scheduled because serving pods hold every node of the instance type (it "
            "needs that type's devices on the 2.23 stack), serve one replica fewer on the previous artifact until "
            "the compile finishes, so the compile gets that replica's node; then roll onto the new artifact at the "
            "full count. Needs replicas >= 2 (the last replica is never lent), nodesPerReplica 1 and no "
            "spec.autoscaling. Default false: the compile waits (Compiled=False/CompilePending says why)."
        ),
    )


class PlacementSpec(SpecModel):
    """Placement of the nodes of one multi-node replica."""

    topology_key: str | None = Field(
        None,
        description=(
            "Node label whose value all nodes of one replica must share (e.g. a placement group or node group "
            "label), so multi-node tensor parallelism stays on one EFA fabric. Only used when nodesPerReplica > 1."
        ),
        min_length=1,
        max_length=316,
        pattern=LABEL_KEY_PATTERN,
    )


# --- autoscaling ---------------------------------------------------------------------------------------

# The engine's queue gauge: vLLM 0.24 (V1) vllm/v1/metrics/loggers.py and the AWS fork 0.7.2 (V0)
# vllm/engine/metrics.py both name it so, labelled model_name (= --served-model-name; V1 adds engine).
QUEUE_METRIC = "vllm:num_requests_waiting"


class AutoscalingSpec(SpecModel):
    """Scale replicas on the engine's request queue, through the service's scale subresource."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.minReplicas <= self.maxReplicas",
                    "message": "spec.autoscaling.minReplicas: must be at most spec.autoscaling.maxReplicas",
                    "fieldPath": ".minReplicas",
                }
            ]
        }
    )

    min_replicas: int = Field(
        1,
        description=(
            "Fewest replicas the autoscaler keeps. 0 lets the service scale to zero when no request waits (KEDA "
            "provider; the compiled artifacts stay, and scaling up again never recompiles). The HPA provider cannot "
            "scale to zero and keeps at least 1."
        ),
        ge=0,
        le=10000,
    )
    max_replicas: int = Field(
        description="Most replicas the autoscaler may create (each spans nodesPerReplica nodes).",
        ge=1,
        le=10000,
    )
    target_queue_depth: int = Field(
        4,
        description=(
            f"Waiting requests per replica the autoscaler aims for ({QUEUE_METRIC}: requests queued behind a full "
            "batch of engine.maxNumSeqs): more waiting adds replicas, fewer removes them."
        ),
        ge=1,
        le=100000,
    )
    scale_down_stabilization_seconds: int = Field(
        300,
        description=(
            "How long the queue must have stayed low before replicas are removed (the HPA's scale-down "
            "stabilization window; with KEDA also the cooldown before scaling to zero). Model load takes minutes: "
            "keep it longer than a load."
        ),
        ge=0,
        le=3600,
    )

    @model_validator(mode="after")
    def _min_at_most_max(self) -> AutoscalingSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError("minReplicas must be at most maxReplicas")
        return self


# --- the spec ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StackFeatureRule:
    """A spec feature some stacks lack: how CEL and Python each tell the spec uses it, and which stacks have it."""

    field: str  # relative to spec, e.g. ".loraAdapters"
    what: str
    cel: str
    used: Callable[["NeuronInferenceServiceSpec"], bool]
    supported: Callable[[StackFeatures], bool]
    why: str = ""  # what to change where a stack that has the feature cannot serve the rest of the spec

    @property
    def stacks(self) -> tuple[str, ...]:
        return tuple(p.id for p in PROFILES.values() if self.supported(p.features))


def _speculative_rule(method: str) -> StackFeatureRule:
    return StackFeatureRule(
        ".speculativeDecoding.method", f"speculative decoding method {method}",
        f"has(self.speculativeDecoding) && self.speculativeDecoding.method == '{method}'",
        lambda spec: spec.speculative_decoding is not None and spec.speculative_decoding.method == method,
        lambda f: method in f.speculative_methods,
    )


STACK_FEATURE_RULES: tuple[StackFeatureRule, ...] = (
    StackFeatureRule(".loraAdapters", "LoRA adapters", "has(self.loraAdapters) && size(self.loraAdapters) > 0",
                     lambda spec: bool(spec.lora_adapters), lambda f: f.lora),
    StackFeatureRule(".nodesPerReplica", "multi-node tensor parallelism (nodesPerReplica > 1)",
                     "self.nodesPerReplica > 1", lambda spec: spec.nodes_per_replica > 1, lambda f: f.multi_node),
    StackFeatureRule(".dataParallelSize", "data parallelism (dataParallelSize > 1)", "self.dataParallelSize > 1",
                     lambda spec: spec.data_parallel_size > 1, lambda f: f.data_parallel),
    StackFeatureRule(".engine.maxNumBatchedTokens", "engine.maxNumBatchedTokens",
                     "has(self.engine) && has(self.engine.maxNumBatchedTokens)",
                     lambda spec: spec.engine.max_num_batched_tokens is not None,
                     lambda f: f.max_num_batched_tokens),
    *(_speculative_rule(m) for m in SPECULATIVE_METHODS),
    StackFeatureRule(".loraAdapters", "LoRA adapters with nodesPerReplica > 1",
                     "has(self.loraAdapters) && size(self.loraAdapters) > 0 && self.nodesPerReplica > 1",
                     lambda spec: bool(spec.lora_adapters) and spec.nodes_per_replica > 1,
                     lambda f: f.multi_node_lora,
                     why="the 2.23 fork does not send the adapter to worker nodes; use nodesPerReplica: 1"),
    StackFeatureRule(".engine.maxNumSeqs", "speculative decoding with engine.maxNumSeqs > 1",
                     "has(self.speculativeDecoding) && self.engine.maxNumSeqs > 1",
                     lambda spec: spec.speculative_decoding is not None and spec.engine.max_num_seqs > 1,
                     lambda f: f.speculative_batching,
                     why=("on neuron-2.23-vllm-0.7.2 NxD Inference through vLLM speculates one sequence at a time; "
                          "set engine.maxNumSeqs: 1")),
)


def _stack_rules() -> list[dict[str, str]]:
    """CEL rules that tie spec.runtime.stack to the instance family and to the features the spec uses. Where the
    stack is unset, the family's default is the operator's configuration, which CEL cannot see: those rules then
    only reject what no stack for the family could serve, and validation.py checks the configured default."""
    stack_set = "has(self.runtime) && has(self.runtime.stack)"
    families_of = {p.id: p.families for p in PROFILES.values()}
    rules = []
    for stack_id, families in families_of.items():
        types = _catalog.types_of_families(families)
        others = sorted({f for fams in families_of.values() for f in fams} - set(families))
        alternatives = "; ".join(
            f"{f}: {', '.join(s for s, fams in families_of.items() if f in fams)}" for f in others
        )
        rules.append({
            "rule": f"!({stack_set}) || self.runtime.stack != '{stack_id}' || self.instanceType in {_cel_str_list(types)}",
            "message": (
                f"spec.runtime.stack: {stack_id} runs on {', '.join(families)} instance types only"
                + (f"; stacks that fit other families: {alternatives}" if alternatives else "")
            ),
            "fieldPath": ".runtime.stack",
        })
    for feature in STACK_FEATURE_RULES:
        uses, field, what, stacks = feature.cel, feature.field, feature.what, feature.stacks
        families = sorted({f for s in stacks for f in families_of[s]})
        types = _catalog.types_of_families(families)
        where = f"{stack_set} ? self.runtime.stack in {_cel_str_list(stacks)} : self.instanceType in {_cel_str_list(types)}"
        rules.append({
            "rule": f"!({uses}) || ({where})",
            "message": (
                f"spec{field}: {what} needs stack {', '.join(stacks)} ({', '.join(families)} instance types)"
                if stacks else f"spec{field}: {what} is supported by no stack"
            ) + (f": {feature.why}" if feature.why else ""),
            "fieldPath": field,
        })
    rules.append({
        "rule": ("!has(self.speculativeDecoding) || self.speculativeDecoding.method != 'eagle3' || "
                 "!has(self.speculativeDecoding.maxModelLen)"),
        "message": "spec.speculativeDecoding.maxModelLen: not used by eagle3 (the draft follows the target model)",
        "fieldPath": ".speculativeDecoding.maxModelLen",
    })
    return rules


def _spec_rules() -> list[dict[str, str]]:
    """Cross-field CEL rules on spec, generated from the instance catalog and the stack profiles."""
    rules = [
        {
            # nodesPerReplica < 1 is the schema's error to report; guard so CEL never divides by zero.
            "rule": "self.nodesPerReplica < 1 || self.tensorParallelSize % self.nodesPerReplica == 0",
            "message": (
                "spec.tensorParallelSize: must be a multiple of spec.nodesPerReplica "
                "(each node runs tensorParallelSize / nodesPerReplica ranks)"
            ),
            "fieldPath": ".tensorParallelSize",
        }
    ]
    # Per instance-type group: the per-node degrees that fit at each LNC the type supports (its default first).
    groups: dict[tuple[str, int, tuple[tuple[int, tuple[int, ...]], ...]], list[str]] = {}
    for name, instance in _catalog.instance_types.items():
        options = (instance.lnc, *[o for o in instance.lnc_options if o != instance.lnc])
        by_lnc = tuple((lnc, per_node_tp_choices(instance.at_lnc(lnc))) for lnc in options)
        groups.setdefault((instance.family, instance.lnc, by_lnc), []).append(name)
    for (_family, default_lnc, by_lnc), names in groups.items():
        per_node = "(self.tensorParallelSize / self.nodesPerReplica)"
        if len(by_lnc) == 1:
            allowed = f"{per_node} in {_cel_int_list(by_lnc[0][1])}"
            said = _join(by_lnc[0][1])
        else:
            lnc = f"(has(self.logicalNeuronCoreConfig) ? self.logicalNeuronCoreConfig : {default_lnc})"
            allowed = " || ".join(f"({lnc} == {value} && {per_node} in {_cel_int_list(choices)})"
                                  for value, choices in by_lnc)
            said = "; ".join(f"at LNC={value}: {_join(choices)}" for value, choices in by_lnc)
        rules.append(
            {
                "rule": (
                    f"!(self.instanceType in {_cel_str_list(names)}) || self.nodesPerReplica < 1 || "
                    f"self.tensorParallelSize % self.nodesPerReplica != 0 || ({allowed})"
                ),
                "message": (
                    "spec.tensorParallelSize: per-node tensor-parallel degree (tensorParallelSize / nodesPerReplica) "
                    f"on {', '.join(names)} must be one of {said}"
                ),
                "fieldPath": ".tensorParallelSize",
            }
        )
    configurable = [n for n, it in _catalog.instance_types.items() if it.lnc_configurable]
    rules.append({
        "rule": (f"!has(self.logicalNeuronCoreConfig) || self.logicalNeuronCoreConfig == 1 || "
                 f"self.instanceType in {_cel_str_list(configurable)}"),
        "message": (f"spec.logicalNeuronCoreConfig: LNC=2 exists only on {', '.join(configurable)}; other instance "
                    "types have one NeuronCore per logical core (leave it unset)"),
        "fieldPath": ".logicalNeuronCoreConfig",
    })
    lending = "has(self.runtime) && has(self.runtime.lendReplicaToCompile) && self.runtime.lendReplicaToCompile"
    rules += [
        {
            "rule": f"!({lending}) || self.nodesPerReplica == 1",
            "message": ("spec.runtime.lendReplicaToCompile: lends one Deployment replica; multi-node groups "
                        "(nodesPerReplica > 1) are never lent"),
            "fieldPath": ".runtime.lendReplicaToCompile",
        },
        {
            "rule": f"!({lending}) || !has(self.autoscaling)",
            "message": ("spec.runtime.lendReplicaToCompile: cannot be combined with spec.autoscaling (the autoscaler "
                        "owns the replica count)"),
            "fieldPath": ".runtime.lendReplicaToCompile",
        },
    ]
    efa_types = [name for name, it in _catalog.instance_types.items() if it.efa > 0]
    no_efa_types = [name for name, it in _catalog.instance_types.items() if it.efa == 0]
    rules += [
        {
            "rule": f"self.nodesPerReplica == 1 || self.instanceType in {_cel_str_list(efa_types)}",
            "message": (
                f"spec.nodesPerReplica: must be 1 on {', '.join(no_efa_types)} (no EFA); multi-node tensor "
                f"parallelism needs one of {', '.join(efa_types)}"
            ),
            "fieldPath": ".nodesPerReplica",
        },
        {
            "rule": "!has(self.speculativeDecoding) || !has(self.loraAdapters) || size(self.loraAdapters) == 0",
            "message": (
                "spec.speculativeDecoding: cannot be combined with spec.loraAdapters "
                "(the Neuron vLLM stack does not support LoRA with speculative decoding)"
            ),
            "fieldPath": ".speculativeDecoding",
        },
        {
            "rule": (
                "!has(self.speculativeDecoding) || !has(self.speculativeDecoding.maxModelLen) || "
                "self.speculativeDecoding.maxModelLen <= self.engine.maxModelLen"
            ),
            "message": "spec.speculativeDecoding.maxModelLen: must be at most spec.engine.maxModelLen",
            "fieldPath": ".speculativeDecoding.maxModelLen",
        },
    ]
    return rules + _stack_rules()


class NeuronInferenceServiceSpec(SpecModel):
    """What to serve and on what. The operator derives devices, environment, probes and ranks from this."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": _spec_rules()})

    model: ModelSource = Field(description="The model to compile and serve.")
    instance_type: InstanceTypeName = Field(
        description=(
            "EC2 instance type the model is compiled for and served on. Compiled artifacts are specific to the "
            "instance family (inf2, trn1, trn2) and its logical NeuronCore size (LNC)."
        ),
        json_schema_extra={"maxLength": 64},
    )
    tensor_parallel_size: int = Field(
        description=(
            "Total tensor-parallel degree of one replica, across all its nodes (NxDI tp_degree). Each node runs "
            "tensorParallelSize / nodesPerReplica ranks, which must be a degree the instance family supports and "
            "fit its logical NeuronCores; the operator requests the matching number of whole Neuron devices."
        ),
        ge=1,
        le=4096,
    )
    logical_neuron_core_config: Literal[1, 2] | None = Field(
        None,
        description=(
            "Logical NeuronCore config (LNC): physical NeuronCores per logical core. Trn2/Trn3 default to 2 (e.g. "
            "64 logical cores on trn2.48xlarge) and may run at 1 (128); other types are always 1. On EKS it is a "
            "node setting (the node group's launch template writes /opt/aws/neuron/logical_nc_config), so pods go "
            "only to nodes labelled inference.neuron-operator.io/lnc with this value, or to unlabelled nodes when "
            "it is the instance type's default. Default: the instance type's default. A compile input."
        ),
    )
    nodes_per_replica: int = Field(
        1,
        description=(
            "Nodes one replica spans. 1 serves from a Deployment; more than 1 is multi-node tensor parallelism "
            "(one pod per node, a StatefulSet per replica) and needs an instance type with EFA. Only the "
            "neuron-2.23-vllm-0.7.2 stack has it, and AWS documents it as a future feature there: it is "
            "experimental, and the service says so in status.warnings and a Warning Event (ExperimentalFeature)."
        ),
        ge=1,
        le=64,
    )
    data_parallel_size: int = Field(
        1,
        description=(
            "Engine replicas inside one serving pod (vLLM --data-parallel-size), each with tensorParallelSize "
            "NeuronCores: the pod holds tensorParallelSize x dataParallelSize cores. engine.maxNumSeqs applies per "
            "engine replica. A compile input (graphs are compiled per data-parallel rank). vllm-neuron stacks only."
        ),
        ge=1,
        le=64,
    )
    replicas: int = Field(
        1,
        description=(
            "Number of serving replicas (each spans nodesPerReplica nodes). Not a compile input; scalable through "
            "the scale subresource (kubectl scale, HPA)."
        ),
        ge=0,
        le=10000,
    )
    engine: EngineSpec = Field(
        default_factory=EngineSpec,
        description="vLLM / NxD Inference engine settings. All but extraArgs are compile inputs.",
        json_schema_extra={"default": {}},
    )
    artifacts: ArtifactsSpec | None = Field(
        None,
        description=(
            "Where compiled artifacts are stored. Default: the operator's configured store; without one the "
            "resource is Stalled."
        ),
    )
    lora_adapters: list[LoraAdapterSpec] = Field(
        default_factory=list,
        description=(
            "LoRA adapters compiled in alongside the base model (Neuron cannot load adapters at run time). The "
            "adapter set is a compile input; its order is not. Cannot be combined with speculativeDecoding."
        ),
        max_length=MAX_LORA_ADAPTERS,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    speculative_decoding: SpeculativeDecodingSpec | None = Field(
        None,
        description="Speculative decoding with a draft or EAGLE model. A compile input. Cannot be combined with loraAdapters.",
    )
    runtime: RuntimeSpec = Field(
        default_factory=RuntimeSpec,
        description="Pod-level overrides: image, resources, scheduling, environment, probes. Not compile inputs.",
    )
    placement: PlacementSpec = Field(
        default_factory=PlacementSpec,
        description="Multi-node placement (only used when nodesPerReplica > 1).",
    )
    autoscaling: AutoscalingSpec | None = Field(
        None,
        description=(
            "Scale on the engine's queue of waiting requests. The operator creates a KEDA ScaledObject or an "
            "autoscaling/v2 HorizontalPodAutoscaler (its own setting) that drives spec.replicas through the scale "
            "subresource; the operator itself never writes spec.replicas. Leave spec.replicas out of manifests "
            "you re-apply (GitOps), or they reset what the autoscaler chose. Not a compile input."
        ),
    )

    @field_validator("lora_adapters")
    @classmethod
    def _unique_adapter_names(cls, adapters: list[LoraAdapterSpec]) -> list[LoraAdapterSpec]:
        seen: set[str] = set()
        for adapter in adapters:
            if adapter.name in seen:
                raise ValueError(f"duplicate adapter name {adapter.name!r}")
            seen.add(adapter.name)
        return adapters

    @property
    def per_node_tp(self) -> int:
        """Tensor-parallel ranks on each node of a replica (floor; validation.py reports non-multiples)."""
        return self.tensor_parallel_size // self.nodes_per_replica


# --- parsing at the edge -------------------------------------------------------------------------------


class InvalidSpecError(ValueError):
    """The spec does not match the schema. ``messages`` name each offending field in camelCase."""

    def __init__(self, messages: list[str]):
        self.messages = messages
        super().__init__("; ".join(messages))


def parse_spec(raw: Any) -> NeuronInferenceServiceSpec:
    """Parse a resource's ``spec`` into the typed model, or raise :class:`InvalidSpecError`."""
    try:
        return NeuronInferenceServiceSpec.model_validate(dict(raw or {}))
    except ValidationError as exc:
        raise InvalidSpecError(format_validation_error(exc, "spec", NeuronInferenceServiceSpec)) from None


def format_validation_error(exc: ValidationError, root: str, model: type[BaseModel]) -> list[str]:
    """One ``path: message`` line per error, the path in wire (camelCase) names, e.g. ``spec.engine.maxNumSeqs``."""
    lines = []
    for error in exc.errors(include_url=False):
        message = error["msg"]
        for prefix in ("Value error, ", "Assertion failed, "):
            message = message.removeprefix(prefix)
        lines.append(f"{wire_path(root, model, error['loc'])}: {message}")
    return lines


def wire_path(root: str, model: Any, loc: tuple) -> str:
    """Render a pydantic error location as a camelCase field path, walking the model to map names to aliases."""
    path = root
    current: Any = model
    for item in loc:
        if isinstance(item, int):
            path += f"[{item}]"
            current = _element_type(current)
            continue
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = _find_field(current, item)
            if field is None:
                path = _dotted(path, item)
                current = None
            else:
                name, info = field
                path = _dotted(path, info.alias or name)
                current = _unwrap(info.annotation)
        elif _is_dict(current):
            path = _dotted(path, item) if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", item) else f"{path}[{item!r}]"
            current = _element_type(current)
        # anything else is a union/validator tag, not part of the user's path
    return path


def _dotted(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _find_field(model: type[BaseModel], item: str):
    for name, info in model.model_fields.items():
        if item in (name, info.alias):
            return name, info
    return None


def _unwrap(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _unwrap(args[0]) if len(args) == 1 else annotation
    if origin is Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    return annotation


def _is_dict(annotation: Any) -> bool:
    return typing.get_origin(annotation) is dict


def _element_type(annotation: Any) -> Any:
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (list, tuple) and args:
        return _unwrap(args[0])
    if typing.get_origin(annotation) is dict and len(args) == 2:
        return _unwrap(args[1])
    return None
