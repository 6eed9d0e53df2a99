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
