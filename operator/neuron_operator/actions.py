"""The writes one reconcile pass decided on, as data: decide.py returns them, executor.py performs them in order.

Every action names its object fully, so a test can read a pass's decision like a log of what would be written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Union


@dataclass(frozen=True)
class Apply:
    """Server-side apply of a child we own (one field manager)."""

    manifest: Mapping[str, Any]

    @property
    def target(self) -> str:
        return f"{self.manifest['kind']}/{self.manifest['metadata']['name']}"


@dataclass(frozen=True)
class CreateJob:
    """Create the compile Job for a key. Jobs are shared and immutable: created, never applied; an existing one
    (409: another service created it first) is adopted by adding our owner reference."""

    manifest: Mapping[str, Any]
    owner: Mapping[str, Any]  # our (non-controller) owner reference, added if the Job already exists

    @property
    def name(self) -> str:
        return self.manifest["metadata"]["name"]


@dataclass(frozen=True)
class AddOwner:
    """Add a non-controller owner reference to a shared compile Job (strategic merge by uid)."""

    api_version: str
    kind: str
    name: str
    owner: Mapping[str, Any]


@dataclass(frozen=True)
class Delete:
    api_version: str
    kind: str
    name: str


@dataclass(frozen=True)
class Annotate:
    """Merge-patch annotations (None removes a key) onto a child, e.g. a group's gang bookkeeping."""

    api_version: str
    kind: str
    name: str
    annotations: Mapping[str, Optional[str]]


@dataclass(frozen=True)
class PostEvent:
    type: str  # Normal | Warning
    reason: str
    message: str
    # Only when this earlier action in the pass succeeded (e.g. CompileStarted after CreateJob).
    after: Optional[str] = None


Action = Union[Apply, CreateJob, AddOwner, Delete, Annotate, PostEvent]


@dataclass
class Outcome:
    """What performing a pass's actions produced, for the status that follows."""

    done: list[str] = field(default_factory=list)  # "Kind/name" of each successful write
    rejected: list[str] = field(default_factory=list)  # children the API server refused (422), with its message
    created_job: bool = False  # this pass created the compile Job
