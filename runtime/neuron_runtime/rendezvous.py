"""The rendezvous protocol of one replica group: the leader (rank 0) admits workers 1..N-1 over TCP, declares the
group formed, waits until every member has prepared, says go, and from then on every member treats the loss of any
other (a closed or silent link, an abort, the leader's name gone) as fatal, so the operator restarts the whole
group. Messages, phases and the reasons for a runtime-level rendezvous: docs/runtime-multinode.md.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Tuple

from neuron_runtime import constants
from neuron_runtime.deadlines import Clock, Deadline, wait_until
from neuron_runtime.errors import PeerLost, RendezvousTimeout
from neuron_runtime.peer_link import Link, LinkClosed, Pinger, listen
from neuron_runtime.peer_names import Resolver, preferred_address

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class Timing:
    """A peer silent for ``heartbeat_timeout`` seconds is lost; pings go out six times per timeout."""

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
        Pinger(self._live_links, self.timing.heartbeat_interval, self._stop).start()

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
            self.leader_address = preferred_address(addresses)  # also the leader's NEURON_RT_ROOT_COMM_ID host
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
            Pinger(lambda: [link] if not link.closed.is_set() else [], self.timing.heartbeat_interval,
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
