"""What must hold after every failure scenario, as pure checks over what the cluster holds (``Snapshot``), plus
the live collection of that snapshot and a poll until the checks pass (garbage collection and the operator's own
convergence are eventually consistent).

The invariants (tests/chaos/README in the failure suite's docstrings): no two compile Jobs for one artifact key in
one store; every Deployment, StatefulSet, Service and PodDisruptionBudget has exactly one controlling owner, a
NeuronInferenceService that exists, and is one of the children ``neuron-operator render`` says that service has;
every compile Job is owned only by services that exist; every service's status.observedGeneration equals its
generation; a Stalled service has no children; the operator's log holds no Python traceback.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Optional

import yaml

from tests.bench.harness import GROUP_VERSION, Api, OperatorProcess, condition

KIND = "NeuronInferenceService"
LABEL_ARTIFACT_KEY = "inference.neuron-operator.io/artifact-key"
ANNOTATION_ARTIFACT_LOCATION = "inference.neuron-operator.io/artifact-location"
# Kinds the operator creates, with their API paths; Jobs are shared between services, the others are not.
CHILD_KINDS = {"Deployment": ("apps/v1", "deployments"), "StatefulSet": ("apps/v1", "statefulsets"),
               "Service": ("v1", "services"), "PodDisruptionBudget": ("policy/v1", "poddisruptionbudgets")}


@dataclass
class Snapshot:
    services: list[dict] = field(default_factory=list)
    jobs: list[dict] = field(default_factory=list)
    children: list[dict] = field(default_factory=list)  # Deployments, StatefulSets, Services, PDBs (with "kind")
    # uid -> the (kind, name) children ``neuron-operator render`` gives that service; a uid missing here is not
    # checked against a render (e.g. one the render could not take), None means "must have no children".
    expected: dict[str, Optional[set[tuple[str, str]]]] = field(default_factory=dict)
    tracebacks: list[str] = field(default_factory=list)
    known: list[str] = field(default_factory=list)  # tracebacks of known bugs (KNOWN_TRACEBACKS), reported only


# Operator bugs with a reproduction of their own (tests/chaos/test_regressions.py): a traceback matching one is
# reported in the figures, not failed on, so the scenarios keep checking everything else. (test, what, pattern)
# None today: the connection-error traceback (test_regressions.py) is fixed.
KNOWN_TRACEBACKS: list = []


def split_known(tracebacks: list[str]) -> tuple[list[str], list[str]]:
    """(unexplained tracebacks, one line per known bug seen)."""
    unknown, known = [], {}
    for tb in tracebacks:
        for test, what, pattern in KNOWN_TRACEBACKS:
            if pattern.search(tb):
                known[test] = known.get(test, 0) + 1
                break
        else:
            unknown.append(tb)
    return unknown, [f"{n} x {next(w for t, w, _ in KNOWN_TRACEBACKS if t == test)} (see {test})"
                     for test, n in known.items()]


def _alive(obj: dict) -> bool:
    return not obj["metadata"].get("deletionTimestamp")


def _nis_refs(obj: dict) -> list[dict]:
    return [r for r in obj["metadata"].get("ownerReferences") or []
            if r.get("kind") == KIND and r.get("apiVersion", "").startswith("inference.neuron-operator.io/")]


def stalled(svc: dict) -> bool:
    cond = condition(svc, "Stalled")
    return cond is not None and cond.get("status") == "True"


def check(snapshot: Snapshot) -> list[str]:
    """Every violated invariant, one line each (empty: all hold)."""
    problems: list[str] = []
    uids = {s["metadata"]["uid"]: s["metadata"]["name"] for s in snapshot.services if _alive(s)}

    by_key: dict[tuple[str, str], list[str]] = {}
    for job in filter(_alive, snapshot.jobs):
        meta = job["metadata"]
        key = (meta.get("labels", {}).get(LABEL_ARTIFACT_KEY, "?"),
               meta.get("annotations", {}).get(ANNOTATION_ARTIFACT_LOCATION, "?"))
        by_key.setdefault(key, []).append(meta["name"])
        refs = _nis_refs(job)
        if not refs:
            problems.append(f"compile Job {meta['name']} has no NeuronInferenceService owner")
        for ref in refs:
            if ref.get("uid") not in uids:
                problems.append(f"compile Job {meta['name']} is owned by {ref.get('name')} ({ref.get('uid')}), "
                                "which does not exist")
    for (key, location), names in sorted(by_key.items()):
        if len(names) > 1:
            problems.append(f"{len(names)} compile Jobs for artifact key {key} at {location}: {sorted(names)}")

    owned: dict[str, set[tuple[str, str]]] = {}
    for child in filter(_alive, snapshot.children):
        meta, kind = child["metadata"], child["kind"]
        if kind == "Service" and meta["name"] == "kubernetes":
            continue
        controllers = [r for r in meta.get("ownerReferences") or [] if r.get("controller")]
        refs = _nis_refs(child)
        what = f"{kind} {meta['name']}"
        if not refs:
            problems.append(f"{what} has no NeuronInferenceService owner (orphan)")
            continue
        if len(controllers) != 1 or controllers[0].get("kind") != KIND:
            problems.append(f"{what} has {len(controllers)} controlling owners: {controllers}")
            continue
        uid = controllers[0].get("uid")
        if uid not in uids:
            problems.append(f"{what} is controlled by {controllers[0].get('name')} ({uid}), which does not exist")
            continue
        owned.setdefault(uid, set()).add((kind, meta["name"]))

    for svc in filter(_alive, snapshot.services):
        meta = svc["metadata"]
        status = svc.get("status") or {}
        if status.get("observedGeneration") != meta.get("generation"):
            problems.append(f"service {meta['name']}: status.observedGeneration {status.get('observedGeneration')} "
                            f"!= generation {meta.get('generation')}")
        have = owned.get(meta["uid"], set())
        if meta["uid"] in snapshot.expected:
            want = snapshot.expected[meta["uid"]]
            if want is None and have:
                problems.append(f"service {meta['name']} is Stalled but has children {sorted(have)}")
            elif want is not None and have != want:
                extra, missing = sorted(have - want), sorted(want - have)
                problems.append(f"service {meta['name']}: children differ from `neuron-operator render`: "
                                f"unexpected {extra}, missing {missing}")
    problems += [f"traceback in the operator log:\n{tb}" for tb in snapshot.tracebacks]
    return problems


# --- live ---------------------------------------------------------------------------------------------------------

def render_names(services: list[dict]) -> dict[str, Optional[set[tuple[str, str]]]]:
    """uid -> the non-Job children `neuron-operator render` gives each service (from its live object, with uid)."""
    docs = [{"apiVersion": s["apiVersion"], "kind": s["kind"],
             "metadata": {k: s["metadata"][k] for k in ("name", "namespace", "uid")}, "spec": s.get("spec")}
            for s in services]
    if not docs:
        return {}

    def render(batch: list[dict]) -> Optional[list[dict]]:
        proc = subprocess.run([sys.executable, "-m", "neuron_operator.cli", "render", "-f", "-"],
                              input=yaml.safe_dump_all(batch), capture_output=True, text=True, timeout=300)
        return [d for d in yaml.safe_load_all(proc.stdout) if d] if proc.returncode == 0 else None

    rendered = render(docs)
    if rendered is None:  # one service render refuses spoils the batch: take them one at a time
        rendered = []
        for doc in docs:
            rendered += render([doc]) or []
    out: dict[str, Optional[set[tuple[str, str]]]] = {d["metadata"]["uid"]: set() for d in docs}
    for child in rendered:
        if child["kind"] == "Job":
            continue
        for ref in child["metadata"].get("ownerReferences") or []:
            if ref.get("uid") in out and ref.get("controller"):
                out[ref["uid"]].add((child["kind"], child["metadata"]["name"]))  # type: ignore[union-attr]
    return out


def collect(api: Api, namespace: str, operator: Optional[OperatorProcess] = None,
            compare_render: bool = True) -> Snapshot:
    services, _ = api.list(GROUP_VERSION, "neuroninferenceservices", namespace)
    jobs, _ = api.list("batch/v1", "jobs", namespace)
    children = []
    for kind, (api_version, plural) in CHILD_KINDS.items():
        items, _ = api.list(api_version, plural, namespace)
        children += [{**item, "kind": kind} for item in items]
    unknown, known = split_known(operator.tracebacks() if operator else [])
    snapshot = Snapshot(services=services, jobs=jobs, children=children, tracebacks=unknown, known=known)
    settled = [s for s in services if not stalled(s) and (s.get("status") or {}).get("phase") == "Ready"]
    if compare_render:
        snapshot.expected = render_names(settled)
    for svc in services:
        if stalled(svc) and not (svc.get("status") or {}).get("endpoint"):
            snapshot.expected[svc["metadata"]["uid"]] = None  # stalled before anything served: no children
    return snapshot


@dataclass
class Held:
    seconds: float  # until every invariant held
    snapshot: Snapshot
    transient: list[str]  # what the first look found violated (e.g. garbage collection not done yet)


def wait_for_invariants(api: Api, namespace: str, operator: Optional[OperatorProcess] = None,
                        timeout: float = 90) -> Held:
    """Poll until every invariant holds. Fails with the violations still there after ``timeout``."""
    start = time.monotonic()
    first: Optional[list[str]] = None
    while True:
        snapshot = collect(api, namespace, operator)
        problems = check(snapshot)
        if first is None:
            first = problems
        if not problems:
            return Held(time.monotonic() - start, snapshot, first)
        if time.monotonic() - start > timeout:
            raise AssertionError(f"invariants violated in {namespace} after {timeout:.0f}s:\n  - "
                                 + "\n  - ".join(problems[:40]))
        time.sleep(2)


def summary(held: Held) -> str:
    phases: dict[str, int] = {}
    for svc in held.snapshot.services:
        phase = (svc.get("status") or {}).get("phase") or "none"
        phases[phase] = phases.get(phase, 0) + 1
    text = (f"after {held.seconds:.1f} s: services {json.dumps(phases)}, {len(held.snapshot.jobs)} Jobs, "
            f"{len(held.snapshot.children)} other children")
    if held.transient:
        text += f"; first look: {len(held.transient)} transient, e.g. {held.transient[0][:160]!r}"
    if held.snapshot.known:
        text += f"; KNOWN BUGS: {'; '.join(held.snapshot.known)}"
    return text
