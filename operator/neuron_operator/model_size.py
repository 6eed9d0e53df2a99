"""How big a model is, as far as the operator can tell before anything runs, and what a compile of it needs.

The operator never downloads the model, so the only size it can know is the one the model's name states: Hugging
Face ids almost always carry it ("Llama-3.1-8B-Instruct", "gpt-oss-120b", "Mixtral-8x7B"). Compile pods on CPU
nodes are sized from it; a name without a size gets the documented middle tier, and spec.runtime.compileResources
overrides either.

Why these tiers: a CPU compile traces the model on the meta device and reads only compile-time constants
(vllm-neuron docs design/framework/model_bringup.md, load_weights_lite), so memory goes to the neuronx-cc workers,
one per CPU (NEURON_LIBTORCH_PARALLEL_COMPILE_WORKERS), whose graphs grow with the model's layer widths. The figures
are a starting point, not a measurement (no Neuron compiler runs here); an OOMKilled compile says to raise them.
"""

from __future__ import annotations

import re

from neuron_runtime import compile_memory
from dataclasses import dataclass
from typing import Optional

# "8B", "70b", "1.5B", "8x7B" (mixture of experts: 8 experts of 7B), not followed by more letters or digits.
_SIZE = re.compile(r"(?<![A-Za-z0-9.])(?:(\d+)x)?(\d+(?:\.\d+)?)[bB](?![A-Za-z0-9])")


@dataclass(frozen=True)
class CompileSize:
    cpu: int
    memory_gib: int
    basis: str  # why: shown in the compile Job's annotation

    def resources(self) -> dict[str, dict[str, str]]:
        memory = f"{self.memory_gib}Gi"
        return {"requests": {"cpu": str(self.cpu), "memory": memory}, "limits": {"memory": memory}}


# (largest parameter count in billions, CPUs, memory GiB); the last tier takes everything larger.
CPU_COMPILE_TIERS = ((10.0, 16, 64), (80.0, 32, 128), (float("inf"), 64, 256))
UNKNOWN_SIZE_TIER = CPU_COMPILE_TIERS[1]


def parameter_billions(model_uri: str) -> Optional[float]:
    """Parameters in billions that the model's name states (last path segment, any @revision dropped)."""
    name = model_uri.split("://", 1)[-1].split("@", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    match = _SIZE.search(name)
    if match is None:
        return None
    experts = int(match.group(1)) if match.group(1) else 1
    return experts * float(match.group(2))


def cpu_compile_size(model_uri: str) -> CompileSize:
    """Resources of a CPU compile pod for ``model_uri``."""
    billions = parameter_billions(model_uri)
    if billions is None:
        _, cpu, memory = UNKNOWN_SIZE_TIER
        return CompileSize(cpu, memory, "model size not in its name: default tier")
    for limit, cpu, memory in CPU_COMPILE_TIERS:
        if billions <= limit:
            return CompileSize(cpu, memory, f"{billions:g}B parameters (from the model name)")
    raise AssertionError("unreachable: the last tier has no limit")


# The share of a node's memory a pod may ask for, leaving the kubelet and daemons theirs (plan.default_resources).
NODE_MEMORY_SHARE = 0.85


def neuron_compile_memory(model_uri: str, dtype: str, node_memory_gib: int, device_share_gib: int,
                          nodes: int = 1) -> tuple[int, str]:
    """Memory (GiB) of a compile pod on a Neuron node (2.23 stack: NxD Inference loads the checkpoint to shard
    it) and why: the runtime's estimate (neuron_runtime.compile_memory: checkpoint x 2 + 16 GiB) for the parameter
    count the name states, at least the pod's share of the node by devices, at most the node's allocatable share.
    A name without a size gets the whole node (the documented default)."""
    cap = int(node_memory_gib * NODE_MEMORY_SHARE)
    billions = parameter_billions(model_uri)
    if billions is None:
        return cap, "model size not in its name: the whole node's memory"
    per_node = compile_memory.checkpoint_bytes_for(billions * 1e9, dtype) / max(1, nodes)
    need = compile_memory.required_gib(per_node)
    basis = f"{billions:g}B parameters (from the model name) in {dtype}: checkpoint x 2 + 16 GiB = {need}Gi"
    if nodes > 1:
        basis = f"{billions:g}B parameters (from the model name) in {dtype}, 1/{nodes} per node: {need}Gi"
    if need > cap:
        return cap, basis + f", capped at the node's {cap}Gi"
    if device_share_gib > need:
        return device_share_gib, basis + f"; the devices' share of the node ({device_share_gib}Gi) is more"
    return need, basis
