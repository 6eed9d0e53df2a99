"""Multi-node serve with real processes: one ``python -m neuron_runtime serve`` per simulated pod, each bound to its own
loopback address (127.0.0.2, .3, .4), peer names resolved by the TEST HOOK hosts file, the engine replaced by the
TEST HOOK fake engine. Every wait is bounded; every process is killed at the end of its test.

What runs for real: the CLI, env contract parsing, the fabric check (against a stand-in fi_info on PATH),
per-rank artifact verification, DNS-style waits with log lines, the TCP rendezvous with heartbeats, the worker /health
server, engine supervision, termination messages, exit codes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from conftest import write_fake_group_artifacts

import neuron_runtime
from neuron_runtime import constants
from neuron_runtime.compile_spec import compile_key

PACKAGE_ROOT = os.path.dirname(os.path.dirname(neuron_runtime.__file__))
HEARTBEAT_TIMEOUT = 3.0  # seconds; short so lost peers are noticed quickly in tests

pytestmark = pytest.mark.timeout(120)

# Stands in for libfabric's fi_info on an EFA node: the efa provider is there when the runtime runs it with the
# engine's LD_LIBRARY_PATH (the EFA libraries) and FAKE_FI_INFO_NO_EFA is not set; otherwise it fails like
# fi_info without a matching provider (ofiwg/libfabric util/info.c: "fi_getinfo: -61", exit 61).
FAKE_FI_INFO = """#!/bin/sh
case ":$LD_LIBRARY_PATH:" in *:/opt/amazon/efa/lib:*) ;; *) echo "fi_getinfo: -61" >&2; exit 61;; esac
if [ -n "$FAKE_FI_INFO_NO_EFA" ] || [ "$1 $2" != "-p efa" ]; then echo "fi_getinfo: -61" >&2; exit 61; fi
printf 'provider: efa\n    fabric: efa\n    domain: rdmap16s27-rdm\n    type: FI_EP_RDM\n'
"""


def loopback_available() -> bool:
    try:
        with socket.create_server(("127.0.0.4", 0)):
            return True
    except OSError:
        return False


if not loopback_available():  # pragma: no cover - Linux has the whole 127/8 on lo
    pytest.skip("127.0.0.x addresses beyond 127.0.0.1 are not usable here", allow_module_level=True)


def free_port(hosts) -> int:
    """A port free on every one of ``hosts`` (each simulated pod binds its own address)."""
    for _ in range(50):
        with socket.create_server((hosts[0], 0)) as first:
            port = first.getsockname()[1]
            try:
                for host in hosts[1:]:
                    socket.create_server((host, port)).close()
                return port
            except OSError:
                continue
    raise RuntimeError("no common free port")


def wait_for(predicate, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def http_status(host, port, path="/health"):
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


class Member:
    def __init__(self, group, rank, proc, log_path, termination_path, record_path):
        self.group, self.rank, self.proc = group, rank, proc
        self.log_path, self.termination_path, self.record_path = log_path, termination_path, record_path

    @property
    def address(self):
        return self.group.addresses[self.rank]

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def termination(self) -> str:
        return self.termination_path.read_text() if self.termination_path.exists() else ""

    def record(self) -> dict:
        """What the fake engine recorded at its start (it may start a moment after /health turns 200)."""
        wait_for(self.record_path.exists, 10, f"the engine record of rank {self.rank}")
        return json.loads(self.record_path.read_text())

    def health(self):
        return http_status(self.address, self.group.http_port)

    def wait_log(self, text, timeout=20):
        return wait_for(lambda: text in self.log(), timeout, f"{text!r} in the log of rank {self.rank}:\n{self.log()}")

    def wait_exit(self, timeout=20) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"rank {self.rank} still runs after {timeout}s; log:\n{self.log()}") from None

    def kill(self, sig=signal.SIGKILL):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)


class Group:
    """A replica group of ``nodes`` simulated pods sharing one local artifact store and hosts file."""

    def __init__(self, tmp_path, make_spec, contract_env, nodes=3, timeout=30, artifacts=True):
        self.tmp = tmp_path
        self.nodes = nodes
        self.names = [f"llm-g0-{r}.llm-peers.test.svc.cluster.local" for r in range(nodes)]
        self.addresses = [f"127.0.0.{r + 2}" for r in range(nodes)]
        self.rendezvous_port = free_port(self.addresses)
        self.http_port = free_port(self.addresses)
        model = tmp_path / "model"
        model.mkdir()
        (model / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
        self.spec = make_spec(
            model_uri=str(model), tp_degree=2 * nodes, world_size=nodes, max_num_seqs=2, max_model_len=128
        )
        self.key = compile_key(self.spec)
        self.store = tmp_path / "store"
        if artifacts:
            write_fake_group_artifacts(self.store, self.spec)
        self.hosts = tmp_path / "hosts"
        self.hosts.write_text("")
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        (self.bin / "fi_info").write_text(FAKE_FI_INFO)
        (self.bin / "fi_info").chmod(0o755)
        self.timeout = timeout
        self.contract_env = contract_env
        self.members = {}

    def publish_name(self, rank):
        with open(self.hosts, "a") as f:
            f.write(f"{self.names[rank]} {self.addresses[rank]}\n")

    def withdraw_name(self, rank):
        lines = [line for line in self.hosts.read_text().splitlines() if not line.startswith(self.names[rank] + " ")]
        self.hosts.write_text("".join(line + "\n" for line in lines))

    def env(self, rank, **extra):
        env = self.contract_env(self.spec, self.store)
        env.update(
            {
                constants.ENV_TERMINATION_LOG: str(self.tmp / f"termination-{rank}"),
                constants.ENV_SERVE_CONFIG: json.dumps({"port": self.http_port}),
                "NEURON_OPERATOR_RANK": str(rank),
                "NEURON_OPERATOR_WORLD_SIZE": str(self.nodes),
                "NEURON_OPERATOR_GROUP_INDEX": "0",
                "NEURON_OPERATOR_LEADER_ADDRESS": self.names[0],
                "NEURON_OPERATOR_PEER_ADDRESSES": ",".join(self.names),
                "NEURON_OPERATOR_RENDEZVOUS_TIMEOUT": str(self.timeout),
                "NEURON_RT_ROOT_COMM_ID": f"{self.names[0]}:63423",  # what the operator sets
                "NEURON_RUNTIME_RENDEZVOUS_PORT": str(self.rendezvous_port),
                "NEURON_RUNTIME_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
                # TEST HOOKS
                "NEURON_RUNTIME_TEST_MODE": "1",
                "NEURON_RUNTIME_TEST_HOSTS": f"@{self.hosts}",
                "NEURON_RUNTIME_TEST_BIND_HOST": self.addresses[rank],
                "NEURON_RUNTIME_FAKE_ENGINE": "1",
                "NEURON_RUNTIME_FAKE_ENGINE_RECORD": str(self.tmp / f"engine-{rank}.json"),
                "PATH": f"{self.bin}:/usr/bin:/bin",
                "PYTHONPATH": PACKAGE_ROOT,
            }
        )
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def start(self, rank, python=sys.executable, **extra) -> Member:
        log_path = self.tmp / f"log-{rank}"
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                [python, "-m", "neuron_runtime", "serve"],
                env=self.env(rank, **extra),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=str(self.tmp),
            )
        member = Member(self, rank, proc, log_path, self.tmp / f"termination-{rank}", self.tmp / f"engine-{rank}.json")
        self.members[rank] = member
        return member

    def start_all(self, python=sys.executable, **extra):
        for rank in range(self.nodes):
            self.publish_name(rank)
        return [self.start(rank, python=python, **extra) for rank in range(self.nodes)]

    def wait_healthy(self, timeout=30):
        for member in self.members.values():
            wait_for(lambda m=member: m.health() == 200, timeout, f"/health 200 on rank {member.rank}:\n{member.log()}")

    def cleanup(self):
        for member in self.members.values():
            if member.proc.poll() is None:
                member.proc.send_signal(signal.SIGCONT)
                member.kill()
            try:
                member.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        # Fake engines exit when their runtime is gone. Anything of this test still running after a grace period is
        # an orphan: kill it (by pid) and fail, so a leak cannot go unnoticed.
        end = time.monotonic() + 10
        while self.leftovers() and time.monotonic() < end:
            time.sleep(0.1)
        leftovers = {pid: self.describe(pid) for pid in self.leftovers()}
        for pid in leftovers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        assert not leftovers, f"processes outlived their runtime: {leftovers}"

    @staticmethod
    def describe(pid):
        try:
            with open(f"/proc/{pid}/status") as f:
                status = {k: v.strip() for k, _, v in (line.partition(":") for line in f)}
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")[:300]
        except OSError:
            return "gone"
        return f"state={status.get('State')} ppid={status.get('PPid')} cmd={cmdline}"

    def leftovers(self):
        """Pids of live engines started by this test's runtimes (matched by the --parent-pid the runtime passes and
        this test's directory: other pytest sessions on the machine may reuse the same numbered tmp dir)."""
        parents = {f"--parent-pid {m.proc.pid} " for m in self.members.values()}
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmdline = f.read().decode(errors="replace")
                with open(f"/proc/{entry}/stat") as f:
                    zombie = f.read().rsplit(")", 1)[1].split()[0] == "Z"
            except OSError:
                continue
            cmdline = cmdline.replace("\0", " ")
            if str(self.tmp) in cmdline and any(p in cmdline for p in parents) and not zombie:
                found.append(int(entry))
        return found


@pytest.fixture
def group_factory(tmp_path, make_spec, contract_env):
    groups = []

    def make(**kw):
        group = Group(tmp_path, make_spec, contract_env, **kw)
        groups.append(group)
        return group

    yield make
    for group in groups:
        group.cleanup()


def test_group_forms_and_every_member_answers_health(group_factory):
    group = group_factory(nodes=3)
    leader, worker1, worker2 = group.start_all()
    group.wait_healthy()
    leader.wait_log("group formed: 2 workers connected")

    # What each node's engine was started with (recorded by the fake engine).
    records = [m.record() for m in (leader, worker1, worker2)]
    assert records[0]["argv"][1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    for rank, record in enumerate(records):
        env, argv = record["env"], record["argv"]
        if rank:
            assert argv[1:3] == ["-m", "neuron_runtime.multinode_worker"]
        override = json.loads(argv[argv.index("--override-neuron-config") + 1])
        assert override == {"local_ranks_size": 2, "start_rank_id": 2 * rank}
        assert argv[argv.index("--tensor-parallel-size") + 1] == "6"
        assert env["ENABLE_NEURON_MULTI_NODE"] == "true"
        assert (env["NEURON_RANK_ID"], env["WORLD_SIZE"], env["NEURON_LOCAL_TP"]) == (str(rank), "3", "2")
        assert env["MASTER_ADDR"] == group.names[0] and env["MASTER_PORT"] == "29500"
        assert env["NEURON_RT_ROOT_COMM_ID"] == "127.0.0.2:63423"  # the leader's IP, not the pod's DNS-based value
        assert env["NEURON_COMPILED_ARTIFACTS"] == str(group.store / group.key / f"rank-{rank}")
        assert env["FI_PROVIDER"] == "efa"
    for member in (leader, worker1, worker2):
        member.wait_log(f"NEURON_RT_ROOT_COMM_ID=127.0.0.2:63423: the leader's resolved address (the Neuron runtime "
                        f"needs an IP address), not the pod's {group.names[0]}:63423")
    assert http_status(leader.address, group.http_port, "/metrics") == 200  # leader: the engine's own endpoints

    # The group stays up (heartbeats flowing) well past the heartbeat timeout.
    time.sleep(HEARTBEAT_TIMEOUT * 1.5)
    assert all(m.proc.poll() is None for m in (leader, worker1, worker2))
    assert worker1.health() == 200

    # Pod deletion: SIGTERM is forwarded to the engine; members end with the engine's code (fake engine: 0).
    for member in (worker2, worker1, leader):
        member.kill(signal.SIGTERM)
    assert [m.wait_exit() for m in (leader, worker1, worker2)] == [0, 0, 0]


def test_group_forms_on_python_3_10(group_factory):
    """The runtime image's interpreter is Python 3.10 (Neuron DLC): run a whole group under it when available."""
    from test_runtime_py310 import find_python

    python310 = find_python(10)
    if python310 is None:
        pytest.skip("no Python 3.10 interpreter on this machine (set PYTHON310 to point at one)")
    group = group_factory(nodes=2)
    leader, worker = group.start_all(python=python310)
    group.wait_healthy()
    worker.wait_log("group formed")
    assert worker.record()["argv"][0] == python310  # the engine is started with the runtime's own interpreter
    leader.kill()
    assert worker.wait_exit() == constants.EXIT_PEER_LOST
    assert "lost leader" in worker.termination()


def test_workers_wait_with_log_lines_for_a_late_leader(group_factory):
    group = group_factory(nodes=3, timeout=60)
    group.publish_name(1)
    group.publish_name(2)
    workers = [group.start(1), group.start(2)]
    for worker in workers:
        worker.wait_log(f"waiting for leader {group.names[0]} to resolve (0s/60s)")
    # meanwhile the worker pods answer their probes, with "not yet"
    wait_for(lambda: workers[0].health() == 503, 10, "503 from a waiting worker")
    time.sleep(1)

    group.publish_name(0)  # the leader pod gets its IP: its name resolves, but nobody listens yet
    for worker in workers:
        worker.wait_log("to accept rendezvous connections")
    leader = group.start(0)
    group.wait_healthy()
    leader.wait_log("group formed")
    assert all(w.proc.poll() is None for w in workers)


def test_rendezvous_timeout_is_a_clear_error(group_factory):
    group = group_factory(nodes=2, timeout=2)
    group.publish_name(0)
    group.publish_name(1)
    leader = group.start(0)  # its worker never comes
    assert leader.wait_exit() == constants.EXIT_RENDEZVOUS_TIMEOUT
    assert leader.termination().startswith(
        f"multi-node rendezvous timed out after 2s waiting for workers to join: rank 1 ({group.names[1]})"
    )
    assert "waiting for workers to join: rank 1" in leader.log()


def test_worker_times_out_when_the_leader_never_resolves(group_factory):
    group = group_factory(nodes=2, timeout=2)
    group.publish_name(1)
    worker = group.start(1)
    assert worker.wait_exit() == constants.EXIT_RENDEZVOUS_TIMEOUT
    assert (
        f"rendezvous timed out after 2s waiting for leader {group.names[0]} to resolve" in worker.termination()
    )


def test_killing_the_leader_makes_workers_exit_with_lost_leader(group_factory):
    group = group_factory(nodes=3)
    leader, worker1, worker2 = group.start_all()
    group.wait_healthy()
    leader.kill()  # SIGKILL: no goodbye, the kernel closes its connections
    for worker in (worker1, worker2):
        assert worker.wait_exit() == constants.EXIT_PEER_LOST
        assert worker.termination().startswith(f"lost leader {group.names[0]} (127.0.0.2:{group.rendezvous_port})")
        assert "connection closed" in worker.termination()
    # the workers stopped their engines: nothing answers on their health ports any more
    wait_for(lambda: worker1.health() is None and worker2.health() is None, 10, "worker ports closed")


def test_killing_a_worker_makes_the_leader_exit(group_factory):
    group = group_factory(nodes=3)
    leader, worker1, worker2 = group.start_all()
    group.wait_healthy()
    worker2.kill()
    assert leader.wait_exit() == constants.EXIT_PEER_LOST
    assert leader.termination().startswith(
        f"worker rank 2 ({group.names[2]}) disconnected from the rendezvous: connection closed"
    )
    # the other worker learns why: the leader says goodbye before it goes
    assert worker1.wait_exit() == constants.EXIT_PEER_LOST
    assert "lost leader" in worker1.termination() and "worker rank 2" in worker1.termination()


def test_a_silent_leader_is_lost_after_the_heartbeat_timeout(group_factory):
    group = group_factory(nodes=2)
    leader, worker = group.start_all()
    group.wait_healthy()
    leader.kill(signal.SIGSTOP)  # alive but silent: a partitioned or frozen node
    started = time.monotonic()
    assert worker.wait_exit() == constants.EXIT_PEER_LOST
    assert time.monotonic() - started < HEARTBEAT_TIMEOUT + 10
    assert "lost leader" in worker.termination() and f"no heartbeat for {HEARTBEAT_TIMEOUT:g}s" in worker.termination()


def test_a_leader_name_that_stops_resolving_is_a_lost_leader(group_factory):
    group = group_factory(nodes=2)
    leader, worker = group.start_all()
    group.wait_healthy()
    group.withdraw_name(0)  # the leader pod was deleted: its DNS record goes away
    assert worker.wait_exit() == constants.EXIT_PEER_LOST
    assert f"lost leader {group.names[0]}" in worker.termination()
    assert "its name no longer resolves" in worker.termination()


def test_an_engine_that_exits_ends_the_group(group_factory):
    group = group_factory(nodes=2)
    group.publish_name(0)
    group.publish_name(1)
    leader = group.start(0)
    worker = group.start(1, NEURON_RUNTIME_FAKE_ENGINE_EXIT="1.5:7")  # the worker's engine crashes after 1.5s
    assert worker.wait_exit() == 7
    assert worker.termination().strip() == "engine worker (rank 1) exited with code 7"
    assert leader.wait_exit() == constants.EXIT_PEER_LOST
    assert "worker rank 1" in leader.termination() and "exited with code 7" in leader.termination()


def test_missing_artifacts_on_a_worker_fail_the_group_with_the_reason(group_factory):
    group = group_factory(nodes=2)
    os.remove(group.store / group.key / "rank-1" / constants.MANIFEST_FILE)
    leader, worker = group.start_all()
    assert worker.wait_exit() == constants.EXIT_ARTIFACT_INVALID
    assert "compiled artifacts for key" in worker.termination() and "rank-1" in worker.termination()
    assert leader.wait_exit() == constants.EXIT_PEER_LOST
    assert leader.termination().startswith(f"worker rank 1 ({group.names[1]}) failed: compiled artifacts")


def test_sigterm_during_the_rendezvous_exits_promptly(group_factory):
    group = group_factory(nodes=2, timeout=60)
    group.publish_name(1)
    worker = group.start(1)
    worker.wait_log("waiting for leader")
    worker.kill(signal.SIGTERM)
    assert worker.wait_exit(timeout=10) == 128 + signal.SIGTERM
    assert "terminated by signal 15" in worker.termination()


def test_a_member_without_efa_fails_fast_with_exit_7(group_factory):
    group = group_factory(nodes=2, timeout=60)
    for rank in range(2):
        group.publish_name(rank)
    leader = group.start(0)
    worker = group.start(1, FAKE_FI_INFO_NO_EFA="1")
    assert worker.wait_exit(timeout=10) == constants.EXIT_FABRIC_UNAVAILABLE
    assert worker.termination().startswith(
        f"EFA unavailable on rank 1 ({group.names[1]}): `{group.bin / 'fi_info'} -p efa` exited 61 (fi_getinfo: -61). "
        "Multi-node serving needs EFA in every pod of the group: check that the EFA device plugin runs"
    )
    assert "waiting for" not in worker.log()  # ended before the rendezvous
    leader.wait_log("fabric check: libfabric offers the efa provider")
    assert leader.proc.poll() is None  # the leader still waits for its worker
