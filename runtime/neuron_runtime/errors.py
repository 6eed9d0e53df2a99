"""Failure classes of the runtime, each bound to one exit code (see constants).

Code raises these with a one-line, human-readable message that says what to change; ``cli.main`` turns them into the
termination message and the exit code. Anything else that escapes is a bug and exits with EXIT_FAILURE.
"""

from __future__ import annotations

from neuron_runtime import constants


class RuntimeFailure(Exception):
    """Base class: a failure with a message meant for the user and a fixed exit code."""

    exit_code = constants.EXIT_FAILURE


class SpecError(RuntimeFailure):
    """The spec, the serve config or the image do not fit together; retrying will not help."""

    exit_code = constants.EXIT_BAD_SPEC


class ArtifactError(RuntimeFailure):
    """Serving found no complete compiled artifacts for the expected key."""

    exit_code = constants.EXIT_ARTIFACT_INVALID


class CompileError(RuntimeFailure):
    """NxDI compilation or publication of its output failed."""

    exit_code = constants.EXIT_FAILURE


class ModelSourceError(RuntimeFailure):
    """A model, adapter or draft model could not be made available locally."""

    exit_code = constants.EXIT_FAILURE


class RendezvousTimeout(RuntimeFailure):
    """A multi-node group did not form in time (names did not resolve, the leader never listened, workers missing)."""

    exit_code = constants.EXIT_RENDEZVOUS_TIMEOUT


class PeerLost(RuntimeFailure):
    """A formed multi-node group lost a member; the whole group must restart."""

    exit_code = constants.EXIT_PEER_LOST


class CacheMiss(RuntimeFailure):
    """Cache-hit-only serving found a graph missing from the compiled artifact (vllm-neuron stacks)."""

    exit_code = constants.EXIT_CACHE_MISS


class FabricUnavailable(RuntimeFailure):
    """A multi-node pod cannot use the inter-node fabric (no EFA provider in libfabric): found before the rendezvous."""

    exit_code = constants.EXIT_FABRIC_UNAVAILABLE


class CompileMemoryError(RuntimeFailure):
    """The checkpoint to compile cannot fit the compile pod's memory limit: found before loading it."""

    exit_code = constants.EXIT_COMPILE_MEMORY


class Terminated(RuntimeFailure):
    """SIGTERM/SIGINT arrived before the engine ran (e.g. the pod was deleted during the rendezvous)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"terminated by signal {signum} before the engine started")
        self.exit_code = 128 + signum
