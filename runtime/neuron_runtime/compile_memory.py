"""Memory of a 2.23-stack compile: what NxD Inference needs to shard a checkpoint, and a check before it starts.

NxD Inference compiles by loading the whole checkpoint into host memory and sharding it per rank (NX3
``models/application_base.py`` ``NeuronApplicationBase.compile`` -> ``ModelBuilder.shard_checkpoint``, which reads
the full state dict), so a compile pod needs at least the checkpoint in memory, and in practice the sharded copies
next to it plus the tracer and neuronx-cc workers. The estimate below (checkpoint x 2 + 16 GiB) is that reasoning,
not a measurement: no Neuron compiler runs here. The operator sizes compile Jobs with it from the parameter count a
model's name states; the runtime, which sees the real files, refuses to start a compile whose checkpoint alone
exceeds the pod's memory limit, naming the field to raise, instead of being OOM-killed minutes into the load.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Iterable, Optional

from neuron_runtime.errors import CompileMemoryError

log = logging.getLogger("neuron_runtime.compile_memory")

GIB = 1024 ** 3
MEMORY_FACTOR = 2  # the checkpoint, and its sharded copies
MEMORY_BASE_GIB = 16  # the Python process, tracer and compiler workers
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")  # checkpoint formats HF/NxDI load
COMPILE_MEMORY_FIELD = "spec.runtime.compileResources.limits.memory"
# dtype -> bytes per parameter of the checkpoint the compile loads (spec.engine.dtype values)
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}


def required_gib(checkpoint_bytes: float) -> int:
    """Memory (GiB) to request for compiling a checkpoint of ``checkpoint_bytes``. Pure."""
    return int(math.ceil(checkpoint_bytes * MEMORY_FACTOR / GIB)) + MEMORY_BASE_GIB


def checkpoint_bytes_for(parameters: float, dtype: str) -> float:
    """The checkpoint size ``parameters`` weights of ``dtype`` make (unknown dtypes count 2 bytes). Pure."""
    return parameters * DTYPE_BYTES.get(dtype, 2)


def checkpoint_bytes(directories: Iterable[Optional[str]]) -> int:
    """Total size of the weight files under ``directories`` (None entries skipped; symlinks followed, as the HF
    cache's are)."""
    total = 0
    for directory in directories:
        if not directory:
            continue
        for root, _dirs, files in os.walk(directory):
            total += sum(os.path.getsize(os.path.join(root, f)) for f in files if f.endswith(WEIGHT_SUFFIXES))
    return total


def cgroup_memory_limit(root: str = "/sys/fs/cgroup") -> Optional[int]:
    """The container's memory limit in bytes (cgroup v2 ``memory.max``, else v1 ``memory.limit_in_bytes``), or None
    when unlimited or unreadable."""
    for path in (os.path.join(root, "memory.max"), os.path.join(root, "memory", "memory.limit_in_bytes")):
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text == "max":
            return None
        try:
            value = int(text)
        except ValueError:
            return None
        return value if value < (1 << 60) else None  # v1 reports "unlimited" as a huge number
    return None


def check_fits(checkpoint: int, limit: Optional[int], nodes: int = 1) -> None:
    """Refuse a compile whose share of the checkpoint alone exceeds the memory limit; warn when the limit is below
    the estimate. ``nodes`` > 1: a multi-node compile, each rank keeping only its node's share of the shards, which
    is all this can be sure must fit (whether NxDI 0.3 holds the whole state dict per rank is unverified)."""
    if limit is None or checkpoint <= 0:
        return
    resident = checkpoint // max(1, nodes)
    need = required_gib(resident)
    what = "the checkpoint to compile is" if nodes <= 1 else f"this node's share (1/{nodes}) of the checkpoint is"
    if resident >= limit:
        raise CompileMemoryError(
            f"{what} {resident / GIB:.1f} GiB but the compile pod's memory limit is {limit / GIB:.1f} GiB; NxD "
            f"Inference loads the checkpoint to shard it: set {COMPILE_MEMORY_FIELD} (and requests.memory) to at "
            f"least {need}Gi, or compile on a larger instanceType")
    if need * GIB > limit:
        log.warning("checkpoint %.1f GiB with a memory limit of %.1f GiB: below the %dGi estimate, the compile may "
                    "be OOM-killed (raise %s)", resident / GIB, limit / GIB, need, COMPILE_MEMORY_FIELD)
