"""Perform a pass's decided writes, write the status, post the Events; nothing is decided here.

Each write's response (the object as the API server now holds it) goes into the watch cache at once, so the next
pass sees the effect of this one even before the watch event arrives. The one live read left is in CreateJob: a
409 means another service created the same shared compile Job since our cache was filled, and staleness would be
wrong there (we must add our owner reference to the Job that exists).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping, Optional

from . import constants as C
from .actions import Action, AddOwner, Annotate, Apply, CreateJob, Delete, Outcome, PostEvent
from .api.status import render_status
from .cache import JOB, SERVICE, ObjectCache
from .children import owned_by
from .conditions import StatusInputs, compute_status
from .events import event_manifest
from .kube import ApiError, KubeClient

log = logging.getLogger(__name__)


class RetryLater(Exception):
    """A transient condition (conflict, dependency not ready): reconcile again after ``delay`` seconds."""

    def __init__(self, message: str, delay: float = 2.0):
        super().__init__(message)
        self.delay = delay


class Executor:
    def __init__(self, client: KubeClient, cache: ObjectCache, now: Callable[[], str]):
        self.client = client
        self.cache = cache
        self.now = now

    # --- children ----------------------------------------------------------------------------------------
    def run(self, service: Mapping[str, Any], actions: tuple[Action, ...]) -> Outcome:
        outcome = Outcome()
        ns = service["metadata"]["namespace"]
        for action in actions:
            if isinstance(action, Apply):
                self._apply(action, outcome)
            elif isinstance(action, CreateJob):
                self._create_job(ns, service["metadata"]["uid"], action, outcome)
            elif isinstance(action, AddOwner):
                patch = {"metadata": {"ownerReferences": [dict(action.owner)]}}
                self._remember(self.client.patch(action.api_version, action.kind, ns, action.name, patch,
                                                 patch_type="strategic"))
                outcome.done.append(f"{action.kind}/{action.name} (owner added)")
            elif isinstance(action, Delete):
                self.client.delete(action.api_version, action.kind, ns, action.name)
                self.cache.mark_deleting((action.api_version, action.kind), ns, action.name, self.now())
                outcome.done.append(f"{action.kind}/{action.name} (deleted)")
            elif isinstance(action, Annotate):
                patch = {"metadata": {"annotations": dict(action.annotations)}}
                self._remember(self.client.patch(action.api_version, action.kind, ns, action.name, patch))
                outcome.done.append(f"{action.kind}/{action.name} (annotated)")
            elif isinstance(action, PostEvent):
                if action.after is None or action.after in outcome.done:
                    self.post_event(service, action.type, action.reason, action.message)
            else:  # pragma: no cover - a new action type without its executor is a programming error
                raise TypeError(f"no executor for {action!r}")
        return outcome

    def _remember(self, obj: Optional[Mapping[str, Any]]) -> None:
        if obj:
            self.cache.upsert((obj["apiVersion"], obj["kind"]), obj)

    def _apply(self, action: Apply, outcome: Outcome) -> None:
        manifest = action.manifest
        try:
            self._remember(self.client.apply(dict(manifest)))
        except ApiError as err:
            if err.status not in (400, 422):
                raise
            # The API server rejects our manifest merged with someone else's edit (e.g. a Service port added by hand
            # under our port's name), or a body it cannot decode (400): retrying cannot help, so report it and go on
            # with the rest.
            name = manifest["metadata"]["name"]
            outcome.rejected.append(f"{manifest['kind']} {name} was rejected by the API server: {err.message}. Revert "
                                    f"the manual edit or delete {manifest['kind']} {name}; the operator recreates it")
            return
        outcome.done.append(action.target)

    def _create_job(self, namespace: str, uid: str, action: CreateJob, outcome: Outcome) -> None:
        try:
            self._remember(self.client.create(dict(action.manifest)))
            outcome.created_job = True
            outcome.done.append(f"Job/{action.name}")
            return
        except ApiError as err:
            if not err.conflict:
                raise
        # LIVE READ: another service created this shared Job since our cache saw the namespace.
        job = self.client.get("batch/v1", "Job", namespace, action.name)
        if job is None:
            raise RetryLater(f"compile Job {action.name} is being replaced") from None
        self.cache.upsert(JOB, job)
        if job["metadata"].get("deletionTimestamp"):
            raise RetryLater(f"compile Job {action.name} is being deleted; recreating it afterwards", delay=3)
        if not owned_by(job, uid):
            patch = {"metadata": {"ownerReferences": [dict(action.owner)]}}
            self._remember(self.client.patch("batch/v1", "Job", namespace, action.name, patch, patch_type="strategic"))
            outcome.done.append(f"Job/{action.name} (owner added)")

    # --- status and events ---------------------------------------------------------------------------------------
    def write_status(self, service: Mapping[str, Any], inputs: StatusInputs) -> tuple[dict, bool]:
        """Compute the next status from ``inputs``; patch it (optimistic on resourceVersion) only if it changed."""
        previous = service.get("status") or {}
        status = render_status(compute_status(inputs, previous, self.now()))
        patch = dict(status)
        for key in previous:  # merge patch: fields we no longer report are removed explicitly
            if key not in status:
                patch[key] = None
        if all(previous.get(k) == v for k, v in patch.items()):
            return status, False
        meta = service["metadata"]
        try:
            written = self.client.patch_status(C.GROUP_VERSION, C.KIND, meta["namespace"], meta["name"], patch,
                                               resource_version=meta.get("resourceVersion"))
        except ApiError as err:
            if err.conflict:  # the object changed since the cache saw it: recompute from the newer one
                raise RetryLater("status conflict", delay=0.5) from None
            if err.not_found:  # deleted while this pass ran: nothing left to report on
                return status, False
            raise
        self.cache.upsert(SERVICE, written)
        return status, True

    def post_event(self, service: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        try:
            self.client.create(event_manifest(service, type_, reason, message, self.now()))
        except ApiError as err:  # an event is best effort: never fail a reconcile over it
            log.warning("could not post event %s for %s/%s: %s", reason, service["metadata"]["namespace"],
                        service["metadata"]["name"], err)
