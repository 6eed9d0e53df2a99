"""Writes the one-line failure reason that Kubernetes shows in the pod status (terminationMessagePath)."""

from __future__ import annotations

import logging
import os
from typing import Mapping, Optional

from neuron_runtime import constants

log = logging.getLogger(__name__)


def termination_log_path(env: Optional[Mapping[str, str]] = None) -> str:
    env = os.environ if env is None else env
    return env.get(constants.ENV_TERMINATION_LOG) or constants.DEFAULT_TERMINATION_LOG


def one_line(message: str) -> str:
    """Collapse whitespace so the message is one line, and cut it to what the kubelet keeps."""
    text = " ".join(str(message).split())
    limit = constants.TERMINATION_MESSAGE_MAX_CHARS
    return text if len(text) <= limit else text[: limit - 3] + "..."


def write_termination_message(message: str, env: Optional[Mapping[str, str]] = None) -> None:
    """Best effort: outside Kubernetes the path usually does not exist, which must not mask the real failure."""
    path = termination_log_path(env)
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(one_line(message) + "\n")
    except OSError as e:
        log.debug("could not write termination message to %s: %s", path, e)
