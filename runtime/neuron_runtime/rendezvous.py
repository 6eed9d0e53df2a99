"""Multi-node rendezvous between the runtimes of one replica group: DNS waits, a TCP link to the leader, heartbeats.

Why a runtime-level rendezvous on top of torch.distributed: the pinned fork joins the nodes inside the engine
(F23 vllm/worker/neuron_worker.py: gloo, ``env://``), where a missing or dead peer shows up as a long hang or an
opaque error deep in model loading. Here every member first waits, bounded by NEURON_OPERATOR_RENDEZVOUS_TIMEOUT and
with a log line every few seconds, for the leader's and then every peer's DNS name to resolve; the leader (rank 0)
opens a small TCP listener (constants.RENDEZVOUS_PORT) and workers connect to it. The connections stay open while the
group lives and carry heartbeats both ways, so the loss of any member after the group formed is seen within
seconds by the others, which then stop their engine and exit non-zero: the operator restarts the whole group.

Protocol (one JSON object per line, UTF-8):
  worker -> leader  {"type": "hello", "rank", "world_size", "group", "key"}
  leader -> worker  {"type": "welcome"} | {"type": "reject", "reason"} (the worker retries until its deadline)
  leader -> all     {"type": "formed"}   every rank 1..N-1 is connected: from now on any loss is fatal
  worker -> leader  {"type": "ready"}    local preparation (artifact fetch/verification) done
  leader -> all     {"type": "go"}       every member is ready: start the engines
  both ways         {"type": "ping"} every heartbeat_timeout/6 s; silence for heartbeat_timeout s = lost
  both ways         {"type": "abort", "reason"} before a member exits on purpose, so the others can say why
Before "formed" a disconnect is not fatal: the leader waits for the worker again, the worker reconnects.

Everything that touches the network takes its resolver, bind address and timing as arguments, so tests run whole
groups of real processes on 127.0.0.x (see constants: the TEST HOOKS section).
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Dict, List, Mapping, Optional, Tuple

from neuron_runtime import constants
from neuron_runtime.errors import PeerLost, RendezvousTimeout
from neuron_runtime.testhooks import test_mode

log = logging.getLogger(__name__)

Resolver = Callable[[str], List[str]]  # DNS name -> addresses (empty: does not resolve)
Clock = Callable[[], float]

LOG_EVERY_SECONDS = 5.0  # progress line while waiting
POLL_SECONDS = 0.25  # DNS / connect retry period
HANDSHAKE_TIMEOUT_SECONDS = 10.0
MAX_LINE_BYTES = 64 * 1024


# --- name resolution ------------------------------------------------------------------------------------------------


def system_resolver(name: str) -> List[str]:
    """Addresses of ``name`` via the system resolver (cluster DNS in a pod); [] when it does not resolve."""
    try:
        infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):  # socket.gaierror is an OSError
        return []
    seen: List[str] = []
    for info in infos:
        address = info[4][0]
        if address not in seen:
            seen.append(address)
    return seen


def parse_hosts(text: str) -> Dict[str, List[str]]:
    """``name=addr,name=addr`` or hosts-file lines ``name addr`` (``#`` comments) -> {name: [addr, ...]}."""
    table: Dict[str, List[str]] = {}
    for raw in text.replace(",", "\n").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, _, address = line.replace("=", " ").partition(" ")
        if name and address.strip():
            table.setdefault(name.strip(), []).append(address.strip())
    return table


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


# --- waiting with a deadline ----------------------------------------------------------------------------------------


class Deadline:
    def __init__(self, seconds: float, clock: Clock = time.monotonic) -> None:
        self.total = float(seconds)
        self.clock = clock
        self.start = clock()

    def elapsed(self) -> float:
        return self.clock() - self.start

    def remaining(self) -> float:
        return max(0.0, self.total - self.elapsed())

    def expired(self) -> bool:
        return self.elapsed() >= self.total

    def progress(self) -> str:
        return f"({int(self.elapsed())}s/{int(self.total)}s)"


def wait_until(
    describe: Callable[[], str],
    check: Callable[[], bool],
    deadline: Deadline,
    *,
    sleep: Callable[[float], None] = time.sleep,
    poll: float = POLL_SECONDS,
    log_every: float = LOG_EVERY_SECONDS,
    hint: str = "",
) -> None:
    """Poll ``check`` until true; log "waiting for <describe()> (12s/600s)" at once and every ``log_every`` s;
    RendezvousTimeout when ``deadline`` passes."""
    last_log: Optional[float] = None
    while not check():
        elapsed = deadline.elapsed()
        if deadline.expired():
            raise RendezvousTimeout(
                f"multi-node rendezvous timed out after {int(deadline.total)}s waiting for {describe()}"
                + (f"; {hint}" if hint else "")
            )
        if last_log is None or elapsed - last_log >= log_every:
            log.info("waiting for %s %s", describe(), deadline.progress())
            last_log = elapsed
        sleep(min(poll, max(0.01, deadline.remaining())))


@dataclass(frozen=True)
class GroupAddresses:
    names: Tuple[str, ...]  # DNS names in rank order
    addresses: Tuple[Tuple[str, ...], ...]  # resolved addresses, same order


def wait_for_names(
    leader: str, peers: Tuple[str, ...], resolver: Resolver, deadline: Deadline, **wait_kw
) -> GroupAddresses:
    """First the leader's name, then every peer's name must resolve (headless Service, not-ready addresses)."""
    resolved: Dict[str, List[str]] = {}

    def resolve(name: str) -> bool:
        addresses = resolver(name)
        if addresses:
            resolved[name] = addresses
        return bool(addresses)

    hint = "check that every pod of the group exists and the headless Service publishes not-ready addresses"
    wait_until(lambda: f"leader {leader} to resolve", lambda: resolve(leader), deadline, hint=hint, **wait_kw)

    def pending() -> List[str]:
        return [p for p in peers if p not in resolved]

    wait_until(
        lambda: "peers to resolve: " + ", ".join(pending()),
        lambda: all([resolve(p) for p in pending()]),
        deadline,
        hint=hint,
        **wait_kw,
    )
    log.info("all %d members of the group resolve: %s", len(peers), {p: resolved[p] for p in peers})
    return GroupAddresses(tuple(peers), tuple(tuple(resolved[p]) for p in peers))


# --- one framed, heart-beaten TCP connection ------------------------------------------------------------------------


class LinkClosed(Exception):
    """The peer closed the connection, went silent for too long, or sent garbage."""


class Link:
    """A JSON-lines TCP connection. send() is thread-safe; recv() raises LinkClosed on EOF/timeout/garbage."""

    def __init__(self, sock: socket.socket, peer: str) -> None:
        self.sock = sock
        self.peer = peer
        self._buffer = b""
        # Re-entrant: a SIGTERM handler may abort() (send) while the main thread is inside send().
        self._send_lock = threading.RLock()
        self.closed = threading.Event()

    def send(self, message: Mapping[str, object]) -> bool:
        data = (json.dumps(message, separators=(",", ":")) + "\n").encode("utf-8")
        with self._send_lock:
            try:
                self.sock.sendall(data)
                return True
            except OSError:
                return False  # the reader notices the broken connection and reports it

    def recv(self, timeout: Optional[float]) -> Dict[str, object]:
        self.sock.settimeout(timeout)
        while b"\n" not in self._buffer:
            try:
                chunk = self.sock.recv(4096)
            except socket.timeout:
                raise LinkClosed(f"no heartbeat for {timeout:g}s") from None
            except OSError as e:
                raise LinkClosed(f"connection error: {e}") from None
            if not chunk:
                raise LinkClosed("connection closed")
            self._buffer += chunk
            if len(self._buffer) > MAX_LINE_BYTES:
                raise LinkClosed("protocol error: line too long")
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            message = json.loads(line.decode("utf-8"))
        except ValueError:
            raise LinkClosed("protocol error: not JSON") from None
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            raise LinkClosed("protocol error: not a message")
        return message

    def close(self) -> None:
        self.closed.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host`` ("" = every interface, IPv4 and IPv6 when the kernel allows)."""
    if host == "" and socket.has_dualstack_ipv6():
        sock = socket.create_server(("", port), family=socket.AF_INET6, dualstack_ipv6=True, reuse_port=False)
    else:
        sock = socket.create_server((host, port))
    sock.settimeout(0.5)  # so the accept loop notices close()
    return sock


class _Pinger(threading.Thread):
    def __init__(self, links: Callable[[], List[Link]], interval: float, stop: threading.Event) -> None:
        super().__init__(name="rendezvous-ping", daemon=True)
        self.links, self.interval, self.stop = links, interval, stop

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            for link in self.links():
                link.send({"type": "ping"})


@dataclass(frozen=True)
class Timing:
    heartbeat_timeout: float = constants.DEFAULT_HEARTBEAT_TIMEOUT_SECONDS

    @property
    def heartbeat_interval(self) -> float:
        return max(0.05, self.heartbeat_timeout / 6)


class GroupFailure:
    """First fatal event of a formed group (who, why); ``event`` is set when it happened."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reason = ""
        self._lock = threading.Lock()

    def set(self, reason: str) -> None:
        with self._lock:
            if not self.event.is_set():
                self.reason = reason
                self.event.set()

    def is_set(self) -> bool:
        return self.event.is_set()


# --- leader -----------------------------------------------------------------------------------------------------------


class LeaderRendezvous:
    """Rank 0: listens, admits workers 1..N-1, declares the group formed, waits for ready, says go, watches."""

    def __init__(
        self,
        *,
        world_size: int,
        group: int,
        key: str,
        peers: Tuple[str, ...],
        bind_host: str,
        port: int,
        timing: Timing = Timing(),
    ) -> None:
        self.world_size, self.group, self.key, self.peers = world_size, group, key, peers
        self.bind_host, self.port, self.timing = bind_host, port, timing
        self.failure = GroupFailure()
        self._lock = threading.RLock()  # re-entrant for the same reason as Link._send_lock
        self._links: Dict[int, Link] = {}
        self._ready: set = set()
        self._formed = False
        self._changed = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._server: Optional[socket.socket] = None

    # -- lifecycle --
    def open(self) -> None:
        try:
            self._server = listen(self.bind_host, self.port)
        except OSError as e:
            raise RendezvousTimeout(f"cannot listen on rendezvous port {self.port}: {e}") from None
        log.info("rendezvous listener open on %s:%d", self.bind_host or "*", self.port)
        threading.Thread(target=self._accept_loop, name="rendezvous-accept", daemon=True).start()
        _Pinger(self._live_links, self.timing.heartbeat_interval, self._stop).start()

    def close(self) -> None:
        self._stop.set()
        if self._server is not None:
            try:
                self._server.close()
            except OSError:
                pass
        for link in self._live_links():
            link.close()

    def abort(self, reason: str) -> None:
        """Tell every connected worker why the leader gives up, then close."""
        for link in self._live_links():
            link.send({"type": "abort", "reason": reason})
        self.close()

    def _live_links(self) -> List[Link]:
        with self._lock:
            return list(self._links.values())

    def _name(self, rank: int) -> str:
        return self.peers[rank] if 0 <= rank < len(self.peers) else f"rank {rank}"

    # -- phases --
    def wait_formed(self, deadline: Deadline) -> None:
        def missing() -> List[int]:
            with self._lock:
                return [r for r in range(1, self.world_size) if r not in self._links]

        def form() -> bool:
            with self._lock:  # check and declare in one step: a worker dropping now must not be missed
                if any(r not in self._links for r in range(1, self.world_size)):
                    return False
                self._formed = True
                return True

        try:
            wait_until(
                lambda: "workers to join: " + ", ".join(f"rank {r} ({self._name(r)})" for r in missing()),
                form,
                deadline,
                hint="check that those pods run and reach this pod on the rendezvous port",
            )
        except RendezvousTimeout as e:
            self.abort(str(e))
            raise
        links = self._live_links()
        for link in links:
            link.send({"type": "formed"})
        log.info("group formed: %d workers connected; any member lost from now on restarts the group", len(links))

    def wait_ready(self, check_interval: float = 0.2) -> None:
        """Block until every worker reported ready (no deadline: their pod probes bound it); PeerLost on loss."""
        while True:
            if self.failure.is_set():
                raise PeerLost(self.failure.reason)
            with self._lock:
                if len(self._ready) == self.world_size - 1:
                    return
                self._changed.wait(check_interval)

    def go(self) -> None:
        for link in self._live_links():
            link.send({"type": "go"})
        log.info("all members ready: engines start")

    # -- connections --
    def _accept_loop(self) -> None:
        assert self._server is not None
        while not self._stop.is_set():
            try:
                sock, address = self._server.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._admit, args=(sock, address), name="rendezvous-admit", daemon=True).start()

    def _admit(self, sock: socket.socket, address) -> None:
        link = Link(sock, f"{address[0]}:{address[1]}")
        try:
            hello = link.recv(HANDSHAKE_TIMEOUT_SECONDS)
        except LinkClosed as e:
            log.info("rendezvous connection from %s dropped during the handshake: %s", link.peer, e)
            link.close()
            return
        reason, rank = self._check_hello(hello)
        with self._lock:
            if reason is None and self._formed:
                reason = "the group has already formed; wait for the whole group to restart"
            if reason is None:
                old = self._links.get(rank)
                self._links[rank] = link
            self._changed.notify_all()
        if reason is not None:
            log.warning("rejected rendezvous from %s (%s): %s", link.peer, hello.get("rank"), reason)
            link.send({"type": "reject", "reason": reason})
            link.close()
            return
        if old is not None:
            old.close()  # a restarted worker replaces its dead predecessor (before the group formed)
        link.send({"type": "welcome"})
        log.info("worker rank %d (%s) joined from %s", rank, self._name(rank), link.peer)
        self._read(rank, link)

    def _check_hello(self, hello: Mapping[str, object]) -> Tuple[Optional[str], int]:
        rank = hello.get("rank")
        if hello.get("type") != "hello" or not isinstance(rank, int) or isinstance(rank, bool):
            return "expected a hello message", -1
        if not 1 <= rank < self.world_size:
            return f"rank {rank} is not a worker rank of this {self.world_size}-node group", rank
        if hello.get("world_size") != self.world_size:
            return f"world size {hello.get('world_size')} differs from the leader's {self.world_size}", rank
        if hello.get("group") != self.group:
            return f"group {hello.get('group')} differs from the leader's group {self.group}", rank
        if hello.get("key") != self.key:
            return (
                f"artifact key {hello.get('key')} differs from the leader's {self.key} (a rollout in progress?)",
                rank,
            )
        return None, rank

    def _read(self, rank: int, link: Link) -> None:
        who = f"worker rank {rank} ({self._name(rank)})"
        reason = None
        while reason is None:
            try:
                message = link.recv(self.timing.heartbeat_timeout)
            except LinkClosed as e:
                reason = f"{who} disconnected from the rendezvous: {e}"
                break
            kind = message.get("type")
            if kind == "ready":
                with self._lock:
                    self._ready.add(rank)
                    self._changed.notify_all()
                log.info("%s is ready", who)
            elif kind == "abort":
                reason = f"{who} failed: {message.get('reason')}"
        link.close()
        with self._lock:
            current = self._links.get(rank) is link
            formed = self._formed
            if current and not formed:
                del self._links[rank]
            self._changed.notify_all()
        if self._stop.is_set() or not current:
            return
        if formed:
            self.failure.set(reason)
        else:
            log.warning("%s before the group formed; waiting for it again", reason)


# --- worker -----------------------------------------------------------------------------------------------------------


class WorkerRendezvous:
    """Rank > 0: connects to the leader, waits for formed / go, watches the link and the leader's name."""

    def __init__(
        self,
        *,
        rank: int,
        world_size: int,
        group: int,
        key: str,
        leader: str,
        resolver: Resolver,
        port: int,
        timing: Timing = Timing(),
        clock: Clock = time.monotonic,
    ) -> None:
        self.rank, self.world_size, self.group, self.key = rank, world_size, group, key
        self.leader, self.resolver, self.port, self.timing, self.clock = leader, resolver, port, timing, clock
        self.failure = GroupFailure()
        self.link: Optional[Link] = None
        self.leader_address: Optional[str] = None
        self._formed = threading.Event()
        self._go = threading.Event()
        self._dropped = threading.Event()  # the link closed before the group formed: reconnect
        self._drop_reason = ""
        self._stop = threading.Event()

    def describe_leader(self) -> str:
        return f"{self.leader} ({self.leader_address}:{self.port})" if self.leader_address else self.leader

    def close(self) -> None:
        self._stop.set()
        if self.link is not None:
            self.link.close()

    def abort(self, reason: str) -> None:
        if self.link is not None:
            self.link.send({"type": "abort", "reason": reason})
        self.close()

    def join(self, deadline: Deadline) -> None:
        """Connect (retrying), be admitted, wait for "formed"; reconnect if the leader goes away before that."""
        state = {"what": lambda: f"leader {self.describe_leader()} to accept rendezvous connections"}

        def describe() -> str:
            return state["what"]()

        def attempt() -> bool:
            if self.link is not None:
                if self._formed.is_set():
                    return True
                if not self._dropped.is_set():
                    return False
                log.warning("leader %s went away before the group formed (%s); reconnecting",
                            self.describe_leader(), self._drop_reason)  # fmt: skip
                self.link = None
                self._dropped.clear()
            addresses = self.resolver(self.leader)
            if not addresses:
                state["what"] = lambda: f"leader {self.leader} to resolve again"
                return False
            self.leader_address = addresses[0]
            try:
                sock = socket.create_connection((self.leader_address, self.port), timeout=2.0)
            except OSError:
                state["what"] = lambda: f"leader {self.describe_leader()} to accept rendezvous connections"
                return False
            link = Link(sock, f"{self.leader_address}:{self.port}")
            link.send({"type": "hello", "rank": self.rank, "world_size": self.world_size,
                       "group": self.group, "key": self.key})  # fmt: skip
            try:
                answer = link.recv(HANDSHAKE_TIMEOUT_SECONDS)
            except LinkClosed as e:
                link.close()
                error = str(e)  # "e" is unbound after the except block; the lambda runs later
                state["what"] = lambda: f"leader {self.describe_leader()} to answer the handshake (last: {error})"
                return False
            if answer.get("type") != "welcome":
                link.close()
                last = answer.get("reason") or answer
                state["what"] = lambda: f"leader {self.describe_leader()} to admit this worker (last answer: {last})"
                return False
            log.info("joined the leader %s; waiting for the rest of the group", self.describe_leader())
            self.link = link
            threading.Thread(target=self._read, args=(link,), name="rendezvous-read", daemon=True).start()
            _Pinger(lambda: [link] if not link.closed.is_set() else [], self.timing.heartbeat_interval,
                    self._stop).start()  # fmt: skip
            state["what"] = lambda: f"the group to form (joined leader {self.describe_leader()})"
            return self._formed.is_set()

        try:
            wait_until(describe, attempt, deadline, hint="check the leader pod's logs")
        except RendezvousTimeout as e:
            self.abort(str(e))
            raise
        if self.failure.is_set():
            raise PeerLost(self.failure.reason)
        log.info("group formed")

    def send_ready(self) -> None:
        assert self.link is not None
        self.link.send({"type": "ready"})

    def wait_go(self, check_interval: float = 0.2) -> None:
        while not self._go.wait(check_interval):
            if self.failure.is_set():
                raise PeerLost(self.failure.reason)
        if self.failure.is_set():
            raise PeerLost(self.failure.reason)

    def watch_leader_name(self, interval: Optional[float] = None) -> None:
        """Declare the leader lost when its name stops resolving (or no longer to the address we are connected to)
        for longer than the heartbeat timeout: the leader pod was deleted or replaced."""
        interval = interval or self.timing.heartbeat_interval

        def run() -> None:
            bad_since: Optional[float] = None
            while not self._stop.wait(interval):
                addresses = self.resolver(self.leader)
                if addresses and self.leader_address in addresses:
                    bad_since = None
                    continue
                now = self.clock()
                bad_since = now if bad_since is None else bad_since
                if now - bad_since >= self.timing.heartbeat_timeout:
                    what = "no longer resolves" if not addresses else f"now resolves to {addresses}"
                    self.failure.set(f"lost leader {self.describe_leader()}: its name {what}")
                    return

        threading.Thread(target=run, name="rendezvous-dns-watch", daemon=True).start()

    def _read(self, link: Link) -> None:
        reason = None
        while reason is None:
            try:
                message = link.recv(self.timing.heartbeat_timeout)
            except LinkClosed as e:
                reason = str(e)
                break
            kind = message.get("type")
            if kind == "formed":
                self._formed.set()
            elif kind == "go":
                self._go.set()
            elif kind == "abort":
                reason = f"leader aborted: {message.get('reason')}"
        link.close()
        if self._stop.is_set():
            return
        if self._formed.is_set():
            self.failure.set(f"lost leader {self.describe_leader()}: {reason}")
        else:
            self._drop_reason = reason
            self._dropped.set()


# --- the worker's /health -------------------------------------------------------------------------------------------


class HealthServer:
    """A tiny HTTP server for a worker pod's probes: GET /health is 200 while ``state()`` says healthy, else 503.

    Workers run no vLLM HTTP server, so without this the operator could not use the same startup, readiness and
    liveness probes on every pod of a group.
    """

    def __init__(self, host: str, port: int, state: Callable[[], Tuple[bool, str]]) -> None:
        self.state = state
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                if self.path.split("?", 1)[0] != "/health":
                    self._reply(404, "not found")
                    return
                ok, text = outer.state()
                self._reply(200 if ok else 503, text)

            def _reply(self, code: int, text: str) -> None:
                body = (text + "\n").encode("utf-8")
                self.send_response(code)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args) -> None:  # probes every few seconds: keep the log quiet
                return

        server_cls = ThreadingHTTPServer
        if host == "" and socket.has_dualstack_ipv6():

            class DualStack(ThreadingHTTPServer):
                address_family = socket.AF_INET6

                def server_bind(self) -> None:
                    self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                    super().server_bind()

            server_cls = DualStack
        self.server = server_cls((host, port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="worker-health", daemon=True)

    def start(self) -> "HealthServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
