"""The compile spec: every input that invalidates a compiled model, and the content-addressed key derived from it.

The operator builds a CompileSpec from a NeuronInferenceService and passes it to the runtime as JSON
(env ``NEURON_OPERATOR_COMPILE_SPEC``); both sides compute the key with :func:`compile_key`, so there is one
definition of "same compiled model". Fields here are compile inputs and nothing else: replicas, resources,
labels, serving flags never enter the key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Optional

# Version of the key derivation itself; bump when the canonical form changes so old keys are not reused.
KEY_SCHEMA_VERSION = 1
KEY_HEX_CHARS = 20  # 80 bits: collision-safe for a cache, short enough for child object names.

# override_neuron_config keys that only affect loading, not the compiled graph, so they stay out of the key.
# (NxDI 0.3 `load(..., skip_warmup=...)`; start_rank_id/local_ranks_size are set per rank at load for multi-node.)
LOAD_ONLY_OVERRIDE_KEYS = frozenset({"skip_warmup", "start_rank_id", "local_ranks_size"})


# Fields added after key schema 1 was fixed: left out of the serialized spec (and so of the hashed document) while
# they hold their default, so every artifact compiled before they existed keeps its key.
FIELDS_OMITTED_AT_DEFAULT = {"data_parallel_size": 1, "max_num_batched_tokens": None, "engine_args": ()}


@dataclass(frozen=True)
class LoraAdapter:
    name: str
    uri: str


@dataclass(frozen=True)
class SpeculativeConfig:
    model_uri: str
    num_speculative_tokens: int
    max_model_len: Optional[int] = None
    method: str = "draft"  # "draft" (fused speculation) or "eagle" (stack 2.23); "eagle3" (vllm-neuron)


@dataclass(frozen=True)
class CompileSpec:
    model_uri: str
    model_revision: str
    instance_family: str
    lnc: int
    tp_degree: int  # total tensor-parallel degree across all nodes of one replica
    world_size: int  # nodes per replica
    max_num_seqs: int
    max_model_len: int
    dtype: str
    stack: str  # runtime stack profile id, e.g. "neuron-2.23-vllm-0.7.2"
    override_neuron_config: dict[str, Any] = field(default_factory=dict)
    lora_adapters: tuple[LoraAdapter, ...] = ()
    max_lora_rank: Optional[int] = None
    speculative: Optional[SpeculativeConfig] = None
    # Engine replicas in one serving process group (vLLM --data-parallel-size; vllm-neuron stacks only). The plugin's
    # cache key includes the TP rank lists, so graphs compiled for one DP size do not serve another.
    data_parallel_size: int = 1
    # vLLM --max-num-batched-tokens (vllm-neuron stacks only): sizes the prefill graphs.
    max_num_batched_tokens: Optional[int] = None
    # Extra engine flags (vllm-neuron stacks only): the compile runs the serving command line, so every flag that
    # reaches the engine shapes the compiled graphs (e.g. --block-size, --kv-cache-dtype).
    engine_args: tuple[str, ...] = ()

    @property
    def local_tp(self) -> int:
        return self.tp_degree // self.world_size

    def compile_overrides(self) -> dict[str, Any]:
        return {k: v for k, v in self.override_neuron_config.items() if k not in LOAD_ONLY_OVERRIDE_KEYS}

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for name, default in FIELDS_OMITTED_AT_DEFAULT.items():
            if data.get(name) == default:
                del data[name]
            elif isinstance(data.get(name), tuple):
                data[name] = list(data[name])  # JSON's shape, so to_dict() == from_json(to_json()).to_dict()
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CompileSpec":
        data = dict(data)
        data["lora_adapters"] = tuple(LoraAdapter(**a) for a in data.get("lora_adapters") or ())
        spec = data.get("speculative")
        data["speculative"] = SpeculativeConfig(**spec) if spec else None
        data["override_neuron_config"] = dict(data.get("override_neuron_config") or {})
        data["engine_args"] = tuple(data.get("engine_args") or ())
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> "CompileSpec":
        return cls.from_dict(json.loads(text))


def canonical_key_material(spec: CompileSpec) -> dict[str, Any]:
    """The exact document that is hashed: compile inputs only, in a canonical order."""
    material = spec.to_dict()
    material["override_neuron_config"] = spec.compile_overrides()
    # Adapter order does not change the compiled model's adapter set.
    material["lora_adapters"] = sorted(material["lora_adapters"], key=lambda a: (a["name"], a["uri"]))
    material["key_schema"] = KEY_SCHEMA_VERSION
    return material


def compile_key(spec: CompileSpec) -> str:
    blob = json.dumps(canonical_key_material(spec), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:KEY_HEX_CHARS]
