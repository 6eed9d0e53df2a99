"""One level-based reconcile pass for a NeuronInferenceService: read once, decide purely, act.

  1. read: the service and its children from the watch cache (snapshot.py) - no API request;
  2. decide: decide.decide(intent, snapshot, catalog, now) -> the writes and the status inputs (pure);
  3. act: executor.Executor performs the writes, then writes the status once, only if it changed, and posts the
     Events of the transitions. The status is decided from the snapshot after the writes (their responses are
     cached), so it describes what the pass left behind.
Safe to run any number of times for the same state (idempotent); the executor is the only place that writes.
"""

from __future__ import annotations

import datetime
import logging
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Optional

from .api.status import Reason
from .cache import SERVICE, ObjectCache
from .catalog import Catalog
from .conditions import StatusInputs
from .config import OperatorConfig
from .decide import decide, intent_for
from .events import transition_events
from .executor import Executor, RetryLater
from .kube import ApiError, KubeClient
from .snapshot import take_snapshot
from .validation import Problem

__all__ = ["PassResult", "Reconciler", "RetryLater", "utc_now"]

log = logging.getLogger(__name__)


@dataclass
class PassResult:
    status_written: bool = False
    applied: list[str] = field(default_factory=list)
    phase: Optional[str] = None
    compile_started: bool = False
    rejected: list[str] = field(default_factory=list)  # children the API server refused (422)
    requeue_after: Optional[float] = None  # e.g. a group waiting out its restart backoff


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def with_rejections(inputs: StatusInputs, rejected: list[str]) -> StatusInputs:
    """Children the API server refused are problems the user must fix (reported as Stalled)."""
    if not rejected:
        return inputs
    extra = [Problem("metadata.name", Reason.CHILD_REJECTED, m) for m in rejected]
    return replace(inputs, problems=list(inputs.problems) + extra)


class Reconciler:
    def __init__(self, client: KubeClient, cache: ObjectCache, catalog: Catalog, config: OperatorConfig,
                 now: Callable[[], str] = utc_now, clock: Callable[[], float] = time.time):
        self.cache = cache
        self.catalog = catalog
        self.config = config
        self.clock = clock
        self.executor = Executor(client, cache, now)

    def reconcile(self, namespace: str, name: str) -> PassResult:
        service = self.cache.get(SERVICE, namespace, name)
        if service is None or service["metadata"].get("deletionTimestamp"):
            return PassResult()  # children go with the owner through garbage collection
        intent = intent_for(service, self.catalog, self.config)
        decision = decide(intent, take_snapshot(self.cache, intent), self.catalog, self.clock())
        try:
            outcome = self.executor.run(service, decision.actions)
        except ApiError as err:
            if not err.namespace_terminating:
                raise
            # The namespace is being deleted and is taking our children with it: recreating them, retrying or
            # reporting on them is wasted work (the service goes next).
            log.debug("%s/%s: namespace is being deleted; not recreating %s", namespace, name, err.message)
            return PassResult()
        inputs = decision.status
        if outcome.done:
            # Each write's response is in the cache now: report the state this pass left, not the one it found
            # (e.g. the Deployment it just created, with its replicas and artifact), so one step costs one status
            # write instead of a second when the watch event of our own write comes back. The actions of this
            # second, equally pure decision are the next pass's business.
            inputs = decide(intent, take_snapshot(self.cache, intent), self.catalog, self.clock()).status
        status, written = self.executor.write_status(service, with_rejections(inputs, outcome.rejected))
        if written:
            for type_, reason, message in transition_events(service.get("status") or {}, status,
                                                            decision.compile_summary):
                self.executor.post_event(service, type_, reason, message)
        return PassResult(status_written=written, applied=outcome.done, phase=status.get("phase"),
                          compile_started=outcome.created_job, rejected=outcome.rejected,
                          requeue_after=decision.requeue_after)
