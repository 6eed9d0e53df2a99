"""Where a serving pod reads its compiled artifacts, for every stack: the store itself when it is a mounted path,
the pod's local copy (NEURON_OPERATOR_LOCAL_ARTIFACTS) when it is S3. Pure."""

from __future__ import annotations

import os
from typing import Mapping

from neuron_runtime import artifacts
from neuron_runtime.contract import Contract, local_artifacts_dir


def serving_artifact_dir(contract: Contract, env: Mapping[str, str]) -> str:
    """``<store>/<key>``, or ``<local artifacts>/<key>`` for an S3 store."""
    root = local_artifacts_dir(env) if contract.store.startswith("s3://") else contract.store
    return os.path.join(root, contract.key)


def rank_artifact_dir(contract: Contract, env: Mapping[str, str], rank: int) -> str:
    """What NEURON_COMPILED_ARTIFACTS is on node ``rank`` of a multi-node group: ``<serving dir>/rank-<r>``."""
    return os.path.join(serving_artifact_dir(contract, env), artifacts.rank_dir_name(rank))
