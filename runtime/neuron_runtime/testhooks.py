"""TEST HOOKS, in one place: what the runtime does differently when NEURON_RUNTIME_TEST_MODE=1.

Nothing here changes behaviour unless the test-mode variable is "1", which no operator-built pod sets. Tests use it
to run real runtime processes without Neuron hardware or vLLM: the fake engine (neuron_runtime.fake_engine) in place
of the server, name resolution from a hosts list (NEURON_RUNTIME_TEST_HOSTS), listeners bound to one loopback
address (NEURON_RUNTIME_TEST_BIND_HOST), no fabric check (NEURON_RUNTIME_TEST_SKIP_FABRIC_CHECK), a stand-in
cgroup directory for the compile's memory check (NEURON_RUNTIME_TEST_CGROUP_ROOT). The production code asks this
module which to use and gets the real thing outside test mode.
"""

from __future__ import annotations

import logging
import os
import shutil
from typing import List, Mapping

from neuron_runtime import constants
from neuron_runtime.peer_names import Resolver, parse_hosts, system_resolver

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


def test_hosts_resolver(setting: str) -> Resolver:
    """TEST HOOK resolver: inline ``name=addr,...`` or ``@/path`` (re-read on every lookup). Never real DNS."""
    if setting.startswith("@"):
        path = setting[1:]

        def from_file(name: str) -> List[str]:
            try:
                with open(path, encoding="utf-8") as f:
                    return parse_hosts(f.read()).get(name, [])
            except OSError:
                return []

        return from_file
    table = parse_hosts(setting)
    return lambda name: list(table.get(name, []))


def resolver_from_env(env: Mapping[str, str]) -> Resolver:
    """The system resolver, unless test mode is on and NEURON_RUNTIME_TEST_HOSTS is set."""
    setting = env.get(constants.ENV_TEST_HOSTS, "")
    if setting and test_mode(env):
        log.warning("TEST MODE: resolving peer names with %s=%s, not DNS", constants.ENV_TEST_HOSTS, setting)
        return test_hosts_resolver(setting)
    if setting:
        log.warning("ignoring %s: %s is not 1", constants.ENV_TEST_HOSTS, constants.ENV_TEST_MODE)
    return system_resolver


def bind_host_from_env(env: Mapping[str, str]) -> str:
    """Where to listen: every interface, unless a test pins one loopback address per simulated pod."""
    if test_mode(env) and env.get(constants.ENV_TEST_BIND_HOST):
        return env[constants.ENV_TEST_BIND_HOST]
    return ""


def fabric_check_skipped(env: Mapping[str, str]) -> bool:
    """NEURON_RUNTIME_TEST_SKIP_FABRIC_CHECK=1 in test mode: no fi_info before the rendezvous (hosts without EFA)."""
    if env.get(constants.ENV_TEST_SKIP_FABRIC_CHECK) != "1":
        return False
    if not test_mode(env):
        log.warning("ignoring %s: %s is not 1", constants.ENV_TEST_SKIP_FABRIC_CHECK, constants.ENV_TEST_MODE)
        return False
    log.warning("TEST MODE: skipping the fabric check (%s=1)", constants.ENV_TEST_SKIP_FABRIC_CHECK)
    return True


def cgroup_root(env: Mapping[str, str]) -> str:
    """Where the container's cgroup files are: /sys/fs/cgroup, or a test's stand-in directory in test mode."""
    if test_mode(env) and env.get(constants.ENV_TEST_CGROUP_ROOT):
        return env[constants.ENV_TEST_CGROUP_ROOT]
    return "/sys/fs/cgroup"


def copy_cache_entry(local_dir: str, remote_dir: str, name: str) -> None:
    """Stand-in for the plugin's save_cache(local, remote, key) where the plugin is not installed: copy the entry
    to a temporary name in the remote cache, then rename it into place (no-op when it is there already)."""
    target = os.path.join(remote_dir, name)
    if os.path.isdir(target):
        return
    tmp = target + ".promoting"
    shutil.copytree(os.path.join(local_dir, name), tmp)
    os.replace(tmp, target)
