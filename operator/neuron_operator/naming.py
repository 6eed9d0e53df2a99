"""Deterministic child object names, within Kubernetes' length limits.

Service names are DNS-1035 labels (63 chars); a Deployment's pods get "-<10 hash>-<5 rand>" appended, and
StatefulSet pods "-<ordinal>" plus the controller-revision-hash label value (name + "-" + 10 chars) which must
itself stay within 63. So a NeuronInferenceService name may use at most 63 - 11 - 6 = 46 characters, and the
multi-node group StatefulSets add "-g<index>" on top of that. Compile Jobs are named by content, not by owner.
"""

from __future__ import annotations

import hashlib

MAX_LABEL_VALUE = 63
# Pod names of a Deployment: <name>-<pod-template-hash (<=10)>-<5 random>.
DEPLOYMENT_POD_SUFFIX = 1 + 10 + 1 + 5
# StatefulSet controller-revision-hash label: <sts name>-<10 chars>; group suffix "-g<index up to 3 digits>".
GROUP_SUFFIX_MAX = len("-g999")
STS_REVISION_SUFFIX = 1 + 10
MAX_SERVICE_NAME = MAX_LABEL_VALUE - max(DEPLOYMENT_POD_SUFFIX, GROUP_SUFFIX_MAX + STS_REVISION_SUFFIX)


def serving_name(service: str) -> str:
    return service


def headless_service_name(service: str) -> str:
    # Shorter than the group StatefulSets so "<pod>.<headless>" stays readable; still within 63.
    return f"{service}-peers"


def group_name(service: str, group: int) -> str:
    return f"{service}-g{group}"


def compile_job_name(key: str, store_location: str) -> str:
    """One Job per (artifact key, store): services with identical compile inputs in one store share it."""
    digest = hashlib.sha256(f"{key}|{store_location}".encode()).hexdigest()[:16]
    return f"nis-compile-{digest}"
