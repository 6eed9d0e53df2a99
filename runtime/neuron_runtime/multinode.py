"""Multi-node serving (spec.world_size > 1): one pod per node, rank 0 the leader, the rest engine workers.

Pure parts (golden-tested): :func:`read_group_config` (the operator's env contract -> GroupConfig),
:func:`build_multinode_env`, :func:`build_leader_argv`, :func:`build_worker_argv` (on top of nxdi_server's builders).
:func:`run_multinode_serve` is the I/O sequence of one member:

  1. role from NEURON_OPERATOR_RANK (validated against the world size and, when the hostname is a peer's, against it);
  2. the fabric check (fabric.py: libfabric must offer FI_PROVIDER, efa; else exit 7), then workers start their
     /health server (503 until the engine runs) on the serving port;
  3. rendezvous (rendezvous.py, protocol in docs/runtime-multinode.md), bounded by NEURON_OPERATOR_RENDEZVOUS_TIMEOUT:
     the leader's name resolves, every peer's name resolves, the leader listens on the rendezvous port, every worker
     connects -> "formed";
  4. local preparation on every node in parallel (fetch this rank's artifacts, verify them, make the model's
     config/tokenizer available) -> "ready"; the leader says "go" when all are ready;
  5. the engine runs as a child: the leader runs vLLM's OpenAI server (so /health, /metrics and /v1/* exist), workers
     run neuron_runtime.multinode_worker (the fork's engine worker loop). Both get the fork's multi-node env;
  6. supervision: if the group loses a member (rendezvous connection dropped or silent, the leader's name gone), the
     engine is stopped and the process exits EXIT_PEER_LOST with a termination message ("lost leader <addr>: ..." on
     workers): the operator restarts the whole group. An engine that exits ends the member, which ends the group.

Source labels (F23, NX3) are defined in stacks/neuron_2_23.py.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Mapping, Optional, TextIO, Tuple

from neuron_runtime import artifacts, constants, fabric, model_source, process, rendezvous, testhooks
from neuron_runtime.compile_spec import CompileSpec
from neuron_runtime.contract import Contract, ServeConfig, local_artifacts_dir, read_serve_config
from neuron_runtime.deadlines import Deadline
from neuron_runtime.dryrun import env_diff, print_plan
from neuron_runtime.errors import PeerLost, RuntimeFailure, SpecError, Terminated
from neuron_runtime.neuron_config import build_neuron_config_kwargs
from neuron_runtime.nxdi_server import (
    LocalModels,
    build_serve_env,
    build_server_argv,
    check_version_drift,
    materialize_models,
    planned_models,
)
from neuron_runtime.peer_names import Resolver, preferred_address, wait_for_names
from neuron_runtime.serving_paths import rank_artifact_dir
from neuron_runtime.stacks import MultiNodeSettings, NxdiStackProfile
from neuron_runtime.termination import write_termination_message
from neuron_runtime.topology import NodeRole
from neuron_runtime.worker_health import HealthServer

log = logging.getLogger(__name__)

ENGINE_STOP_GRACE_SECONDS = 20.0  # SIGTERM -> SIGKILL when the group is lost


@dataclass(frozen=True)
class GroupConfig:
    rank: int
    world_size: int
    group_index: int
    leader_address: str
    peer_addresses: Tuple[str, ...]  # rank order; peer_addresses[0] == leader_address
    rendezvous_timeout: float

    @property
    def role(self) -> NodeRole:
        return NodeRole(rank=self.rank, world_size=self.world_size)

    @property
    def is_leader(self) -> bool:
        return self.rank == 0

    @property
    def own_address(self) -> str:
        return self.peer_addresses[self.rank]

    @property
    def role_name(self) -> str:
        return "leader" if self.is_leader else "worker"


def _int_env(env: Mapping[str, str], name: str, default: Optional[int] = None) -> int:
    text = env.get(name, "").strip()
    if not text:
        if default is None:
            raise SpecError(f"environment variable {name} is not set; the operator sets it on multi-node pods")
        return default
    try:
        return int(text)
    except ValueError:
        raise SpecError(f"{name} must be an integer, got {text!r}") from None


def _positive_float_env(env: Mapping[str, str], name: str, default: float) -> float:
    text = env.get(name, "").strip()
    if not text:
        return float(default)
    try:
        value = float(text)
    except ValueError:
        raise SpecError(f"{name} must be a number of seconds, got {text!r}") from None
    if not value > 0:
        raise SpecError(f"{name} must be positive, got {text!r}")
    return value


def read_group_config(env: Mapping[str, str], spec: CompileSpec) -> GroupConfig:
    """This pod's place in its replica group, from the operator's env contract (constants). Pure; SpecError (exit 2)
    on anything inconsistent, with the variable to fix."""
    nodes = spec.world_size
    world = _int_env(env, constants.ENV_WORLD_SIZE)
    if world != nodes:
        raise SpecError(
            f"{constants.ENV_WORLD_SIZE}={world} but the compile spec has world_size {nodes}; the operator and the "
            "compiled artifacts disagree on the number of nodes"
        )
    rank = _int_env(env, constants.ENV_RANK)
    if not 0 <= rank < nodes:
        raise SpecError(
            f"{constants.ENV_RANK}={rank} is outside 0..{nodes - 1} for a {nodes}-node group (0 is the leader)"
        )
    group_index = _int_env(env, constants.ENV_GROUP_INDEX, 0)
    if group_index < 0:
        raise SpecError(f"{constants.ENV_GROUP_INDEX} must be >= 0, got {group_index}")
    leader = env.get(constants.ENV_LEADER_ADDRESS, "").strip()
    if not leader:
        raise SpecError(f"environment variable {constants.ENV_LEADER_ADDRESS} is not set; the operator sets it")
    peers = tuple(p.strip() for p in env.get(constants.ENV_PEER_ADDRESSES, "").split(",") if p.strip())
    if len(peers) != nodes:
        raise SpecError(
            f"{constants.ENV_PEER_ADDRESSES} lists {len(peers)} addresses, the group has {nodes} nodes: {list(peers)}"
        )
    if peers[0] != leader:
        raise SpecError(
            f"{constants.ENV_PEER_ADDRESSES} must start with the leader {leader} (rank order), got {peers[0]}"
        )
    if len(set(peers)) != len(peers) or any(" " in p for p in peers):
        raise SpecError(f"{constants.ENV_PEER_ADDRESSES} must hold distinct DNS names, got {list(peers)}")
    timeout = _positive_float_env(
        env, constants.ENV_RENDEZVOUS_TIMEOUT, constants.DEFAULT_RENDEZVOUS_TIMEOUT_SECONDS
    )
    return GroupConfig(rank, nodes, group_index, leader, peers, timeout)


def check_own_identity(group: GroupConfig, hostname: str) -> None:
    """A StatefulSet pod's hostname is its pod name, the first label of its peer DNS name: when it names another
    rank than NEURON_OPERATOR_RANK, the downward API wiring is wrong and two pods would claim one rank."""
    short = hostname.split(".", 1)[0]
    for index, peer in enumerate(group.peer_addresses):
        if peer.split(".", 1)[0] == short and index != group.rank:
            raise SpecError(
                f"{constants.ENV_RANK}={group.rank} but this pod ({short}) is peer {index} in "
                f"{constants.ENV_PEER_ADDRESSES}; the rank must come from the pod index"
            )


def _settings(profile: NxdiStackProfile) -> MultiNodeSettings:
    if profile.multi_node is None:
        raise SpecError(f"stack {profile.id} cannot serve a model across nodes; use world_size 1")
    return profile.multi_node


# Names the runtime derives from the contract and always sets; a different value on the pod is overridden (warned).
def forced_names(profile: NxdiStackProfile) -> Tuple[str, ...]:
    mn = _settings(profile)
    return (
        profile.env_multi_node, profile.env_rank_id, profile.env_world_size, mn.env_master_addr, mn.env_local_tp,
        profile.env_compiled_artifacts,
    )  # fmt: skip


def build_multinode_env(
    base_env: Mapping[str, str],
    spec: CompileSpec,
    profile: NxdiStackProfile,
    artifact_dir: str,
    group: GroupConfig,
    leader_ip: Optional[str],
) -> Dict[str, str]:
    """The engine's environment on node ``group.rank``: the single-node serving env plus the fork's multi-node env.
    Pure. ``leader_ip``: the leader's address as the rendezvous resolved it (None in a dry run, which resolves
    nothing), for NEURON_RT_ROOT_COMM_ID (see :func:`root_comm_id`).

    F23 vllm/worker/neuron_worker.py: ENABLE_NEURON_MULTI_NODE=true makes NeuronWorker take rank NEURON_RANK_ID, the
    gloo world size WORLD_SIZE (= nodes, one process per node) and distributed_init_method "env://", i.e.
    torch.distributed reads MASTER_ADDR/MASTER_PORT; is_driver_worker is rank 0. F23
    examples/neuron/multi_node/launch_script.py adds NEURON_RT_ROOT_COMM_ID=<MASTER_ADDR>:63423 and
    NEURON_LOCAL_TP=<local_ranks_size>; multi_node_launcher.sh exports FI_PROVIDER=efa, FI_EFA_USE_DEVICE_RDMA=1,
    FI_EFA_FORK_SAFE=1 and LD_LIBRARY_PATH with /opt/aws/neuron/lib:/opt/amazon/efa/lib. MASTER_PORT and the FI_*
    variables keep a value the pod already has (the operator sets the same).
    """
    mn = _settings(profile)
    env = build_serve_env(base_env, spec, profile, artifact_dir)  # also drops inherited multi-node variables
    env[profile.env_multi_node] = "true"
    env[profile.env_rank_id] = str(group.rank)
    env[profile.env_world_size] = str(group.world_size)
    env[mn.env_master_addr] = group.leader_address
    env[mn.env_local_tp] = str(spec.local_tp)
    env.setdefault(mn.env_master_port, str(mn.default_master_port))
    env[mn.env_root_comm_id] = root_comm_id(base_env, mn, leader_ip, group.leader_address)
    return build_fabric_env(env, mn)


def root_comm_id(base_env: Mapping[str, str], mn: MultiNodeSettings, leader_ip: Optional[str], leader: str) -> str:
    """NEURON_RT_ROOT_COMM_ID: ``<leader IP>:<port>``. Pure.

    The Neuron runtime wants an IP address there: ``NEURON_RT_ROOT_COMM_ID=<ip_address:port>`` "specifying the IP
    address and assign a port for the rank 0 worker" (aws-neuron-sdk v2.23.0 neuron-runtime/nrt-api-guide.rst).
    The fork's launcher writes ``<MASTER_ADDR>:63423`` (F23 examples/neuron/multi_node/launch_script.py), which is
    an IP where MASTER_ADDR is one; ours is the leader's DNS name (kept for MASTER_ADDR: torch's env:// resolves
    names), so the host here is the address the rendezvous resolved. The port of a pod-level value is kept (the
    operator sets the same port). An IPv6 address is bracketed (UNVERIFIED: no IPv6 example in the Neuron docs).
    """
    port = str(mn.default_root_comm_port)
    _, sep, pod_port = base_env.get(mn.env_root_comm_id, "").rpartition(":")
    if sep and pod_port.isdigit():
        port = pod_port
    host = leader_ip if leader_ip is not None else f"<IP of {leader}>"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def root_comm_note(base_env: Mapping[str, str], env: Mapping[str, str], profile: NxdiStackProfile) -> str:
    """The log line that says which NEURON_RT_ROOT_COMM_ID the engine gets, and why it differs from the pod's."""
    name = _settings(profile).env_root_comm_id
    note = f"{name}={env[name]}: the leader's resolved address (the Neuron runtime needs an IP address)"
    if base_env.get(name) not in (None, env[name]):
        note += f", not the pod's {base_env[name]}"
    return note


def build_fabric_env(base_env: Mapping[str, str], mn: MultiNodeSettings) -> Dict[str, str]:
    """``base_env`` plus the fabric variables (FI_*, a pod-level value wins) and the Neuron runtime and EFA library
    directories in front of LD_LIBRARY_PATH: what libfabric sees in the engine, and so in the fabric check. Pure."""
    env = dict(base_env)
    for name, value in mn.fabric_env:
        env.setdefault(name, value)
    parts = [p for p in env.get("LD_LIBRARY_PATH", "").split(":") if p]
    env["LD_LIBRARY_PATH"] = ":".join([d for d in mn.library_dirs if d not in parts] + parts)
    return env


def env_overrides(base_env: Mapping[str, str], env: Mapping[str, str], profile: NxdiStackProfile) -> List[str]:
    """Pod-level values of contract-derived variables that the runtime replaced (for a warning)."""
    return [
        f"{name}={base_env[name]!r} on the pod, using {env[name]!r}"
        for name in forced_names(profile)
        if name in base_env and name in env and base_env[name] != env[name]
    ]


def build_leader_argv(
    spec: CompileSpec, serve_config: ServeConfig, profile: NxdiStackProfile, group: GroupConfig, **kw
) -> List[str]:
    """vLLM's OpenAI server, exactly as on a single node plus this rank's override_neuron_config keys. Pure.

    The fork's own launcher runs the simple ``vllm.entrypoints.api_server`` on rank 0 (F23
    examples/neuron/multi_node/launch_script.py), which has no /metrics and no /v1 API; the OpenAI server builds
    the same engine from the same EngineArgs (in its engine process), so the multi-node env drives it the same way.
    UNVERIFIED on hardware: the OpenAI server as the multi-node leader.
    """
    return build_server_argv(spec, serve_config, profile, role=group.role, **kw)


def build_worker_argv(
    spec: CompileSpec, serve_config: ServeConfig, profile: NxdiStackProfile, group: GroupConfig, **kw
) -> List[str]:
    """The engine worker: the leader's flags (same parser, same engine config) under our worker module. Pure."""
    mn = _settings(profile)
    server = build_server_argv(spec, serve_config, profile, role=group.role, **kw)
    return [server[0], "-m", mn.worker_module] + server[3:]


def rendezvous_port(env: Mapping[str, str]) -> int:
    port = _int_env(env, constants.ENV_RENDEZVOUS_PORT, constants.RENDEZVOUS_PORT)
    if not 0 < port < 65536:
        raise SpecError(f"{constants.ENV_RENDEZVOUS_PORT} must be a TCP port, got {port}")
    return port


def rendezvous_timing(env: Mapping[str, str]) -> rendezvous.Timing:
    return rendezvous.Timing(
        _positive_float_env(env, constants.ENV_HEARTBEAT_TIMEOUT, constants.DEFAULT_HEARTBEAT_TIMEOUT_SECONDS)
    )


# --- the I/O ----------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def terminate_on_signals() -> Iterator[None]:
    """Until the engine runs, SIGTERM/SIGINT end the wait with a Terminated failure (as PID 1 in a container the
    default action would be ignored, and the pod would hang in the rendezvous until SIGKILL)."""

    def raise_terminated(signum, _frame):
        raise Terminated(signum)

    with process.handling_signals(raise_terminated):
        yield


class MemberStatus:
    """What a worker's /health reports."""

    def __init__(self, failure: Callable[[], Optional[str]]) -> None:
        self.phase = "starting"
        self.engine_running = False
        self._failure = failure

    def health(self) -> Tuple[bool, str]:
        reason = self._failure()
        if reason:
            return False, reason
        if self.engine_running:
            return True, "ok: engine worker running, leader reachable"
        return False, self.phase


def supervise(
    argv: List[str],
    env: Mapping[str, str],
    failure: rendezvous.GroupFailure,
    status: Optional[MemberStatus] = None,
    grace: float = ENGINE_STOP_GRACE_SECONDS,
) -> int:
    """Run the engine; forward SIGTERM/SIGINT to it; stop it and raise PeerLost when the group fails first."""
    child = process.start(argv, env, "engine")
    shutting_down = threading.Event()

    def forward(signum, _frame):
        shutting_down.set()
        try:
            child.send_signal(signum)
        except ProcessLookupError:
            pass

    with process.handling_signals(forward):
        try:
            if status is not None:
                status.engine_running = True
            while True:
                code = process.reap(child)
                if code is not None:
                    return code
                if not failure.is_set():
                    failure.event.wait(0.2)
                elif not shutting_down.is_set():
                    log.error("%s; stopping the engine so the operator restarts the whole group", failure.reason)
                    process.stop_group(child, grace)
                    raise PeerLost(failure.reason)
                else:
                    time.sleep(0.2)  # peers going away during our own shutdown is expected: wait for the engine
        finally:
            if status is not None:
                status.engine_running = False


def run_multinode_serve(
    contract: Contract,
    env: Mapping[str, str],
    *,
    dry_run: bool = False,
    out: TextIO = sys.stdout,
    s3_client=None,
    resolver: Optional[Resolver] = None,
    hostname: Optional[str] = None,
) -> int:
    spec, key, profile = contract.spec, contract.key, contract.profile
    _settings(profile)
    group = read_group_config(env, spec)
    check_own_identity(group, hostname if hostname is not None else socket.gethostname())
    serve_config = read_serve_config(env)
    artifact_dir = rank_artifact_dir(contract, env, group.rank)
    port = rendezvous_port(env)
    bind_host = testhooks.bind_host_from_env(env)

    def commands(models: LocalModels, directory: str, leader_ip: Optional[str]) -> Tuple[List[str], Dict[str, str]]:
        build = build_leader_argv if group.is_leader else build_worker_argv
        argv = build(
            spec, serve_config, profile, group, model_path=models.model_path, adapter_paths=models.adapter_paths,
            draft_path=models.draft_path, python=sys.executable,
        )  # fmt: skip
        argv = testhooks.engine_command(argv, env, group.role_name, bind_host, serve_config.port)
        return argv, build_multinode_env(env, spec, profile, directory, group, leader_ip)

    if dry_run:
        argv, server_env = commands(planned_models(spec, env), artifact_dir, None)
        plan = {
            "command": "serve",
            "key": key,
            "stack": profile.id,
            "artifact": artifact_dir,
            "role": group.role_name,
            "rank": group.rank,
            "world_size": group.world_size,
            "group": group.group_index,
            "leader": group.leader_address,
            "peers": list(group.peer_addresses),
            "rendezvous": {"port": port, "timeout_seconds": group.rendezvous_timeout},
            "argv": argv,
            "env": env_diff(env, server_env),
            "neuron_config": build_neuron_config_kwargs(
                spec, profile, model_cache=model_source.model_cache_dir(env), rank=group.rank
            ),
        }
        return print_plan(plan, out)

    log.info(
        "multi-node serve: %s rank %d of %d in group %d (%s), leader %s",
        group.role_name, group.rank, group.world_size, group.group_index, group.own_address, group.leader_address,
    )  # fmt: skip
    resolver = resolver or testhooks.resolver_from_env(env)
    timing = rendezvous_timing(env)
    deadline = Deadline(group.rendezvous_timeout)
    link = None
    health = None
    status = None
    try:
        with terminate_on_signals():
            # Before the rendezvous: a member without EFA ends at once (exit 7) instead of after the group formed.
            fabric.check_fabric(build_fabric_env(env, _settings(profile)), f"rank {group.rank} ({group.own_address})")
            if group.is_leader:
                link = rendezvous.LeaderRendezvous(
                    world_size=group.world_size, group=group.group_index, key=key, peers=group.peer_addresses,
                    bind_host=bind_host, port=port, timing=timing,
                )  # fmt: skip
            else:
                link = rendezvous.WorkerRendezvous(
                    rank=group.rank, world_size=group.world_size, group=group.group_index, key=key,
                    leader=group.leader_address, resolver=resolver, port=port, timing=timing,
                )  # fmt: skip
                status = MemberStatus(lambda: link.failure.reason if link.failure.is_set() else None)
                status.phase = f"waiting for the group to form (leader {group.leader_address})"
                try:
                    health = HealthServer(bind_host, serve_config.port, status.health).start()
                except OSError as e:
                    raise RuntimeFailure(f"cannot serve /health on port {serve_config.port}: {e}") from None
            names = wait_for_names(group.leader_address, group.peer_addresses, resolver, deadline)
            if isinstance(link, rendezvous.LeaderRendezvous):
                leader_ip = preferred_address(names.addresses[0])  # the workers apply the same rule to the same name
                link.open()
                link.wait_formed(deadline)
            else:
                link.join(deadline)
                leader_ip = link.leader_address  # the address this worker reached the leader on
                link.watch_leader_name()
                status.phase = "preparing the engine (artifacts, model files)"

            argv, server_env = commands(*_prepare(contract, env, group, s3_client), leader_ip)
            for warning in env_overrides(env, server_env, profile):
                log.warning("multi-node env: %s", warning)
            log.info("multi-node env: %s", root_comm_note(env, server_env, profile))
            if isinstance(link, rendezvous.LeaderRendezvous):
                link.wait_ready()
                link.go()
            else:
                link.send_ready()
                if status is not None:
                    status.phase = "waiting for every member to be ready"
                link.wait_go()
        what = "vLLM server" if group.is_leader else "engine worker"
        log.info("starting %s: %s", what, " ".join(argv))
        log.info("engine env changes: %s", json.dumps(env_diff(env, server_env)["set"], sort_keys=True))
        code = supervise(argv, server_env, link.failure, status)
        message = f"{what} (rank {group.rank}) exited with code {code}"
        link.abort(message)
        if code != 0:
            write_termination_message(message, env)
        return code
    except BaseException as e:  # tell the peers why before the connections close (also for bugs)
        if link is not None:
            link.abort(str(e) if isinstance(e, RuntimeFailure) else f"{type(e).__name__}: {e}")
        raise
    finally:
        if link is not None:
            link.close()
        if health is not None:
            health.stop()


def _prepare(contract: Contract, env: Mapping[str, str], group: GroupConfig, s3_client):
    """This node's artifacts (fetched for S3, verified) and model files; returns (models, artifact_dir)."""
    spec, key, profile = contract.spec, contract.key, contract.profile
    store = artifacts.open_store(contract.store, local_artifacts_dir(env), s3_client)
    if isinstance(store, artifacts.S3Store):
        log.info("copying rank %d artifacts for key %s from %s", group.rank, key, store.artifact_uri(key))
        directory = store.fetch_rank(key, group.rank)
    else:
        directory = rank_artifact_dir(contract, env, group.rank)
    artifacts.verify_group_manifest(os.path.dirname(directory), key, spec)
    manifest = artifacts.verify_artifact_dir(directory, key, spec, profile, rank=group.rank)
    check_version_drift(profile, manifest, env)
    return materialize_models(spec, manifest, env), directory
