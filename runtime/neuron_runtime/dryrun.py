"""What ``--dry-run`` prints: a plan as JSON, and environment changes as a set/unset diff. Shared by every stack."""

from __future__ import annotations

import json
from typing import Any, Dict, Mapping, TextIO


def env_diff(before: Mapping[str, str], after: Mapping[str, str]) -> Dict[str, Any]:
    return {
        "set": {k: v for k, v in sorted(after.items()) if before.get(k) != v},
        "unset": sorted(k for k in before if k not in after),
    }


def print_plan(plan: Mapping[str, Any], out: TextIO) -> int:
    json.dump(plan, out, indent=2, sort_keys=True)
    out.write("\n")
    return 0
