"""What every stack profile states, whatever its engine: identity, the instance families it runs on, its features
and its pinned software. The operator reads these (validation, defaults, ``neuron-operator stacks``) and the runtime
checks the image against the pins; engine-specific names (flags, env vars, key vocabularies, artifact layouts) live
in each profile's own subclass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Tuple

# Engines: which runtime code path compiles and serves a profile.
ENGINE_VLLM_V0_NXDI = "vllm-v0-nxdi"  # the AWS vLLM fork's V0 engine on NxD Inference (compile with NxDI)
ENGINE_VLLM_NEURON = "vllm-neuron"  # vLLM V1 with the vllm-neuron plugin (torch.compile, two-tier NEFF cache)

# Support status as AWS describes it (shown by `neuron-operator stacks`).
STATUS_END_OF_LIFE = "end-of-life"
STATUS_BETA = "beta"


@dataclass(frozen=True)
class StackFeatures:
    """What a stack can serve. The operator rejects a spec that needs a feature its stack lacks."""

    multi_node: bool  # one tensor-parallel model across several nodes (nodesPerReplica > 1)
    multi_node_experimental: bool  # ... and AWS calls it experimental
    lora: bool  # spec.loraAdapters
    speculative_methods: Tuple[str, ...]  # spec.speculativeDecoding.method values
    cpu_compile: bool  # the compile Job runs on CPU nodes (no Neuron device held to compile)
    cpu_compile_speculative: bool  # ... also when speculative decoding is on
    data_parallel: bool  # spec.dataParallelSize > 1 (several engine replicas in one pod)
    max_num_batched_tokens: bool  # spec.engine.maxNumBatchedTokens
    multi_node_lora: bool  # LoRA adapters with nodesPerReplica > 1
    speculative_batching: bool  # speculative decoding with maxNumSeqs > 1 (continuous batching)

    def as_dict(self) -> dict:
        return {
            "multiNode": self.multi_node,
            "multiNodeExperimental": self.multi_node_experimental,
            "lora": self.lora,
            "speculativeMethods": list(self.speculative_methods),
            "cpuCompile": self.cpu_compile,
            "cpuCompileSpeculative": self.cpu_compile_speculative,
            "dataParallel": self.data_parallel,
            "maxNumBatchedTokens": self.max_num_batched_tokens,
            "multiNodeLora": self.multi_node_lora,
            "speculativeBatching": self.speculative_batching,
        }


@dataclass(frozen=True)
class Stack:
    """The engine-independent part of a stack profile."""

    id: str
    engine: str  # ENGINE_*
    sdk_version: str  # Neuron SDK release the pins come from
    status: str  # STATUS_*
    families: Tuple[str, ...]  # instance families (catalog `family`) the stack supports
    features: StackFeatures
    # The runtime image the operator uses for this stack unless configured otherwise (built from the Dockerfile
    # named here, on the AWS Deep Learning Container named in base_image).
    default_image: str
    dockerfile: str
    base_image: str
    image_python: str  # Python of that image (the runtime package must run on it)
    # Distributions whose installed version must match the pin: its release segment (before any "+local" part)
    # equal to it, or within it for a "4.48.*" family pin (stacks.pin_matches).
    pinned_distributions: Mapping[str, str]
    # Distributions that must be installed, any version.
    required_distributions: Tuple[str, ...]
    # Distributions whose versions are recorded in the artifact manifest.
    recorded_distributions: Tuple[str, ...]

    def supports_family(self, family: str) -> bool:
        return family in self.families

    def summary(self) -> dict:
        """The profile as `neuron-operator stacks -o json` prints it."""
        return {
            "id": self.id,
            "engine": self.engine,
            "sdk": self.sdk_version,
            "status": self.status,
            "families": list(self.families),
            "defaultImage": self.default_image,
            "baseImage": self.base_image,
            "python": self.image_python,
            "features": self.features.as_dict(),
            "versions": dict(self.pinned_distributions),
        }
