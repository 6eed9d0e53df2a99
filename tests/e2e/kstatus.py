"""kstatus (what Flux, `kpt live status` and cli-utils appliers use to call an object healthy) for custom resources.

A faithful Python rendition of the rules sigs.k8s.io/cli-utils applies to a kind it has no built-in rules for:
`Compute` in pkg/kstatus/status/status.go runs `checkGenericProperties` from pkg/kstatus/status/generic.go and,
for a custom resource (no entry in core.go's `legacyTypes`), falls back to Current. Rules, in order:

1. `metadata.deletionTimestamp` set                                  -> Terminating
2. `status.observedGeneration` present and != `metadata.generation`  -> InProgress (LatestGenerationNotObserved);
   an absent observedGeneration skips this check (generic.go `checkGeneration`)
3. the first condition, in list order, that is `Reconciling=True`    -> InProgress (its message),
   or `Stalled=True`                                                 -> Failed (its message)
4. otherwise                                                         -> Current ("Resource is current")

`Ready` is not consulted: kstatus relies on the abnormal-true conditions only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

IN_PROGRESS = "InProgress"
FAILED = "Failed"
CURRENT = "Current"
TERMINATING = "Terminating"


@dataclass(frozen=True)
class Result:
    status: str
    message: str


def compute(obj: dict[str, Any]) -> Result:
    """kstatus `Compute` for a custom resource (no kind-specific rules)."""
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    if meta.get("deletionTimestamp"):
        return Result(TERMINATING, "Resource scheduled for deletion")

    generation = meta.get("generation")
    observed = status.get("observedGeneration")
    if generation is not None and observed is not None and int(observed) != int(generation):
        return Result(IN_PROGRESS, f"{obj.get('kind')} generation is {generation}, "
                                   f"but latest observed generation is {observed}")

    for condition in status.get("conditions") or []:
        if condition.get("type") == "Reconciling" and condition.get("status") == "True":
            return Result(IN_PROGRESS, condition.get("message", ""))
        if condition.get("type") == "Stalled" and condition.get("status") == "True":
            return Result(FAILED, condition.get("message", ""))

    return Result(CURRENT, "Resource is current")
