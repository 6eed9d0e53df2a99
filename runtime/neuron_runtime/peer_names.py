"""Peer name resolution for a multi-node group: the system resolver (cluster DNS in a pod), the hosts-list format
the test resolver reads, and the bounded wait until the leader's and then every peer's DNS name resolves (headless
Service with not-ready addresses published, so a name resolves as soon as its pod has an IP). A resolver is any
function from a name to its addresses, so tests pass their own (the test hosts resolver lives in testhooks.py).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from dataclasses import dataclass
from typing import Callable, Dict, List, Sequence, Tuple

from neuron_runtime.deadlines import Deadline, wait_until

log = logging.getLogger(__name__)

Resolver = Callable[[str], List[str]]  # DNS name -> addresses (empty: does not resolve)


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


def preferred_address(addresses: Sequence[str]) -> str:
    """The one address of a name that resolves to several: the first IPv4 address, else the first. Every member
    applies the same rule to the leader's name, so all agree on where the leader is (NEURON_RT_ROOT_COMM_ID)."""
    for address in addresses:
        try:
            if ipaddress.ip_address(address).version == 4:
                return address
        except ValueError:
            continue
    return addresses[0]


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
