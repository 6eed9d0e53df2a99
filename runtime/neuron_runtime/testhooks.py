"""TEST HOOKS, in one place: what the runtime does differently when NEURON_RUNTIME_TEST_MODE=1.

Nothing here changes behaviour unless the test-mode variable is "1", which no operator-built pod sets. Tests use it
to run real runtime processes without Neuron hardware or vLLM: the fake engine (neuron_runtime.fake_engine) in place
of the server, name resolution from a hosts list, listeners bound to one loopback address.
"""

from __future__ import annotations

import logging
import os
import shutil
from typing import List, Mapping

from neuron_runtime import constants

log = logging.getLogger(__name__)

FAKE_ENGINE_MODULE = "neuron_runtime.fake_engine"


def test_mode(env: Mapping[str, str]) -> bool:
    return env.get(constants.ENV_TEST_MODE) == "1"


def fake_engine_enabled(env: Mapping[str, str]) -> bool:
    return test_mode(env) and env.get(constants.ENV_FAKE_ENGINE) == "1"


def engine_command(argv: List[str], env: Mapping[str, str], role: str, host: str, port: int) -> List[str]:
    """``argv``, or under NEURON_RUNTIME_FAKE_ENGINE the fake engine, which gets ``argv`` to record."""
    if not fake_engine_enabled(env):
        return argv
    log.warning("TEST MODE: running the fake engine instead of %s", " ".join(argv[:3]))
    return [argv[0], "-m", FAKE_ENGINE_MODULE, "--role", role, "--host", host, "--port", str(port),
            "--parent-pid", str(os.getpid()), "--", *argv]  # fmt: skip


def copy_cache_entry(local_dir: str, remote_dir: str, name: str) -> None:
    """Stand-in for the plugin's save_cache(local, remote, key) where the plugin is not installed: copy the entry
    to a temporary name in the remote cache, then rename it into place (no-op when it is there already)."""
    target = os.path.join(remote_dir, name)
    if os.path.isdir(target):
        return
    tmp = target + ".promoting"
    shutil.copytree(os.path.join(local_dir, name), tmp)
    os.replace(tmp, target)
