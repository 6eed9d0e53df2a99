"""`neuron-operator stacks`: every runtime stack profile with its families, features, images and pinned versions,
and which instance families use it by default under this operator's configuration."""

from __future__ import annotations

import json
from typing import Any

from neuron_runtime.stacks import PROFILES, Stack

from .config import OperatorConfig


def stack_entry(stack: Stack, config: OperatorConfig) -> dict[str, Any]:
    entry = stack.summary()
    entry["image"] = config.image_for(stack.id)  # what this operator runs (configured, else the default image)
    entry["defaultFor"] = sorted(f for f, s in config.default_stacks.items() if s == stack.id)
    return entry


def stacks_json(config: OperatorConfig) -> str:
    return json.dumps({"stacks": [stack_entry(s, config) for s in PROFILES.values()]}, indent=2) + "\n"


def _features(entry: dict[str, Any]) -> str:
    f = entry["features"]
    names = []
    if f["multiNode"]:
        names.append("multi-node" + (" (experimental)" if f["multiNodeExperimental"] else ""))
    if f["lora"]:
        names.append("lora")
    if f["speculativeMethods"]:
        names.append("speculative:" + "/".join(f["speculativeMethods"]))
    if f["cpuCompile"]:
        names.append("cpu-compile" + ("" if f["cpuCompileSpeculative"] else " (not speculative)"))
    if f["dataParallel"]:
        names.append("data-parallel")
    return ", ".join(names)


def stacks_table(config: OperatorConfig) -> str:
    rows = [("STACK", "SDK", "STATUS", "FAMILIES", "DEFAULT FOR", "FEATURES", "IMAGE", "VERSIONS")]
    for stack in PROFILES.values():
        e = stack_entry(stack, config)
        rows.append((e["id"], e["sdk"], e["status"], ",".join(e["families"]), ",".join(e["defaultFor"]) or "-",
                     _features(e), e["image"], " ".join(f"{k}={v}" for k, v in e["versions"].items())))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] + "\n" for r in rows)
