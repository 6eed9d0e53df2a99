"""Scale benchmark: N services applied in one `kubectl apply`, against the floor of the same children applied
without the operator. Measures, never asserts: `make bench-scale N=100` or
`python -m tests.bench.bench_scale --services 1000`.

Operator run: N extra inf2.xlarge nodes (one Neuron device each), one namespace with an RWX artifact claim, the
operator as users run it (`neuron-operator run --namespace=... --standalone`), N services (TP 2 = 1 device, each
its own model revision, so N compile keys) in ONE `kubectl apply`. Printed: time to all compile Jobs created and
complete, all Deployments available, all services Ready; the operator's own API requests
(neuron_operator_api_requests_total) per service by verb and reads per reconcile pass
(neuron_operator_reconcile_duration_seconds_count) while converging; requests per minute over an idle window
longer than the 60 s resync; and the operator's RSS (VmRSS).

Floor run, same nodes afterwards: `neuron-operator render` output for the same N services through one
`kubectl apply --server-side` (the compile Jobs), then the rest in a second one once every Job completed; timed
the same way up to all Deployments available. The rendered children carry no ownerReferences (there is no
NeuronInferenceService to own them in that namespace); otherwise they are byte for byte what the operator applies.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import yaml

from .harness import (
    GROUP_VERSION,
    Api,
    Metrics,
    OperatorProcess,
    Tracker,
    apply_nodes,
    artifact_store,
    cluster_up,
    deployment_available,
    job_complete,
    nis_ready,
    sh,
    wait_nodes_ready,
    wait_settled,
)

OPERATOR_NS, FLOOR_NS = "bench-scale-op", "bench-scale-floor"
NODE_TAG = "scale-"


def services(n: int, namespace: str) -> list[dict]:
    """N schedulable single-device services with N distinct compile keys (one model revision each)."""
    return [{
        "apiVersion": GROUP_VERSION, "kind": "NeuronInferenceService",
        "metadata": {"name": f"s-{i:04d}", "namespace": namespace},
        "spec": {"model": {"uri": "hf://meta-llama/Llama-3.2-1B-Instruct", "revision": f"r{i}"},
                 "instanceType": "inf2.xlarge", "tensorParallelSize": 2,
                 "artifacts": {"pvc": {"claimName": "artifacts"}}},
    } for i in range(n)]


@dataclass
class Milestones:
    """First time (monotonic) each object reached each milestone, fed by tracker events."""

    t0: float = 0.0
    seen: dict[str, dict[str, float]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def mark(self, what: str, name: str, at: float) -> None:
        with self.lock:
            self.seen.setdefault(what, {}).setdefault(name, at)

    def count(self, what: str) -> int:
        with self.lock:
            return len(self.seen.get(what, {}))

    def last(self, what: str) -> Optional[float]:
        """Seconds from t0 to the last object reaching ``what`` (None if none did)."""
        with self.lock:
            times = self.seen.get(what, {}).values()
            return max(times) - self.t0 if times else None

    def callbacks(self) -> dict[str, Callable]:
        def jobs(kind: str, obj: dict, at: float) -> None:
            if kind != "DELETED":
                self.mark("job created", obj["metadata"]["name"], at)
                if job_complete(obj):
                    self.mark("job complete", obj["metadata"]["name"], at)

        def deployments(kind: str, obj: dict, at: float) -> None:
            if kind != "DELETED":
                self.mark("deployment created", obj["metadata"]["name"], at)
                if deployment_available(obj):
                    self.mark("deployment available", obj["metadata"]["name"], at)

        def nis(kind: str, obj: dict, at: float) -> None:
            if kind != "DELETED" and nis_ready(obj):
                self.mark("ready", obj["metadata"]["name"], at)

        return {"jobs": jobs, "deployments": deployments, "nis": nis}


def fresh_namespace(namespace: str) -> None:
    sh("kubectl", "delete", "namespace", namespace, "--ignore-not-found", "--timeout=900s")
    sh("kubectl", "delete", "pv", f"{namespace}-artifacts", "--ignore-not-found", "--wait=false")
    sh("kubectl", "create", "namespace", namespace)
    artifact_store(namespace, f"{namespace}-artifacts")


def remove_namespace(namespace: str) -> float:
    start = time.monotonic()
    sh("kubectl", "delete", "namespace", namespace, "--timeout=1800s")
    sh("kubectl", "delete", "pv", f"{namespace}-artifacts", "--ignore-not-found", "--wait=false")
    return time.monotonic() - start


def track(api: Api, namespace: str, milestones: Milestones, with_services: bool) -> list[Tracker]:
    cb = milestones.callbacks()
    trackers = [Tracker(api, "batch/v1", "jobs", namespace, cb["jobs"]),
                Tracker(api, "apps/v1", "deployments", namespace, cb["deployments"])]
    if with_services:
        trackers.append(Tracker(api, GROUP_VERSION, "neuroninferenceservices", namespace, cb["nis"]))
    return [t.start() for t in trackers]


def wait_for(milestones: Milestones, what: str, n: int, timeout: float, progress: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    next_report = time.monotonic() + 15
    while milestones.count(what) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {n} x {what}: {progress()}")
        if time.monotonic() > next_report:
            print(f"  [{time.monotonic() - milestones.t0:6.1f}s] {progress()}", flush=True)
            next_report += 15
        time.sleep(0.2)


def progress_line(milestones: Milestones, n: int) -> Callable[[], str]:
    names = ("job created", "job complete", "deployment created", "deployment available", "ready")
    return lambda: ", ".join(f"{w} {milestones.count(w)}/{n}" for w in names if milestones.count(w))


class RssSampler:
    def __init__(self, operator: OperatorProcess, every: float = 1.0):
        self.operator, self.every = operator, every
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.operator.rss_kib())
            except (OSError, AssertionError):
                pass
            self._stop.wait(self.every)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()


def run_operator(api: Api, n: int, idle_seconds: float, timeout: float) -> dict:
    print(f"\n== operator: {n} services in one kubectl apply (namespace {OPERATOR_NS})", flush=True)
    fresh_namespace(OPERATOR_NS)
    milestones = Milestones()
    trackers = track(api, OPERATOR_NS, milestones, with_services=True)
    manifest = yaml.safe_dump_all(services(n, OPERATOR_NS), sort_keys=False)
    operator = OperatorProcess("bench-scale", [OPERATOR_NS])
    out: dict = {}
    try:
        operator.start()
        out["rss_start_mib"] = operator.rss_kib() / 1024
        with RssSampler(operator) as rss:
            before = operator.scrape()
            milestones.t0 = time.monotonic()
            sh("kubectl", "apply", "-f", "-", input=manifest, timeout=1800)
            out["apply_s"] = time.monotonic() - milestones.t0
            wait_for(milestones, "ready", n, timeout, progress_line(milestones, n))
            for what in ("job created", "job complete", "deployment created", "deployment available", "ready"):
                out[what] = milestones.last(what)
            converged = wait_settled(operator) - before
            print(f"  all Ready after {out['ready']:.1f}s; settled; idle window of {idle_seconds:.0f}s ...", flush=True)
            idle_start, idle_t0 = operator.scrape(), time.monotonic()
            time.sleep(idle_seconds)
            idle = operator.scrape() - idle_start
            idle_elapsed = time.monotonic() - idle_t0
            out["rss_peak_mib"] = rss.peak / 1024
        out["rss_idle_mib"] = operator.rss_kib() / 1024
        out["converge"] = converged
        out["idle"] = idle
        out["idle_elapsed_s"] = idle_elapsed
        out["tracebacks"] = len(operator.tracebacks())
    finally:
        operator.stop()
        for t in trackers:
            t.stop()
    out["delete_namespace_s"] = remove_namespace(OPERATOR_NS)
    return out


def split_rendered(n: int) -> tuple[str, str]:
    """`neuron-operator render` of the same N services; (compile Jobs, everything else), without ownerReferences."""
    rendered = sh(sys.executable, "-m", "neuron_operator.cli", "render", "-f", "-", "-n", FLOOR_NS,
                  input=yaml.safe_dump_all(services(n, FLOOR_NS), sort_keys=False), timeout=600)
    jobs, rest = [], []
    for doc in yaml.safe_load_all(rendered):
        if not doc:
            continue
        doc["metadata"].pop("ownerReferences", None)
        (jobs if doc["kind"] == "Job" else rest).append(doc)
    return yaml.safe_dump_all(jobs, sort_keys=False), yaml.safe_dump_all(rest, sort_keys=False)


def run_floor(api: Api, n: int, timeout: float) -> dict:
    print(f"\n== floor: rendered children through kubectl apply --server-side, no operator (namespace {FLOOR_NS})",
          flush=True)
    jobs, rest = split_rendered(n)
    fresh_namespace(FLOOR_NS)
    milestones = Milestones()
    trackers = track(api, FLOOR_NS, milestones, with_services=False)
    out: dict = {}
    try:
        milestones.t0 = time.monotonic()
        sh("kubectl", "apply", "--server-side", "-f", "-", input=jobs, timeout=1800)
        out["apply_s"] = time.monotonic() - milestones.t0
        wait_for(milestones, "job created", n, timeout, progress_line(milestones, n))
        wait_for(milestones, "job complete", n, timeout, progress_line(milestones, n))
        started = time.monotonic()
        sh("kubectl", "apply", "--server-side", "-f", "-", input=rest, timeout=1800)
        out["apply_s"] += time.monotonic() - started
        wait_for(milestones, "deployment available", n, timeout, progress_line(milestones, n))
        for what in ("job created", "job complete", "deployment created", "deployment available"):
            out[what] = milestones.last(what)
    finally:
        for t in trackers:
            t.stop()
    out["delete_namespace_s"] = remove_namespace(FLOOR_NS)
    return out


def _s(value: Optional[float]) -> str:
    return "—" if value is None else f"{value:.1f} s"


def report(n: int, op: Optional[dict], floor: Optional[dict]) -> str:
    rows = [("time spent inside kubectl apply (floor: both)", "apply_s"), ("all compile Jobs created", "job created"),
            ("all compile Jobs complete", "job complete"), ("all Deployments created", "deployment created"),
            ("all Deployments available", "deployment available"), ("all services Ready", "ready"),
            ("namespace deleted (cleanup)", "delete_namespace_s")]
    lines = [f"Scale benchmark, N = {n} services (inf2.xlarge, TP 2, 1 device each, N compile keys) on {n} extra "
             "simulated nodes", "",
             "| time from the first kubectl apply | operator | floor (render + apply --server-side) |",
             "|---|---|---|"]
    for label, key in rows:
        lines.append(f"| {label} | {_s((op or {}).get(key))} | {_s((floor or {}).get(key))} |")
    if op:
        conv: Metrics = op["converge"]
        idle: Metrics = op["idle"]
        per_verb = ", ".join(f"{v} {c / n:.2f}" for v, c in conv.by_verb().items())
        passes = conv.passes
        idle_per_min = idle.total * 60 / op["idle_elapsed_s"]
        idle_verbs = ", ".join(f"{v} {c * 60 / op['idle_elapsed_s']:.0f}" for v, c in idle.by_verb().items() if c)
        lines += ["", "| operator (its own neuron_operator_api_requests_total) | value |", "|---|---|",
                  f"| API requests to converge, per service | {conv.total / n:.2f} ({per_verb}) |",
                  f"| reads (GET+LIST) to converge, per service | {conv.reads / n:.2f} |",
                  f"| writes to converge, per service | {conv.writes / n:.2f} |",
                  f"| reconcile passes to converge | {_n(passes)} ({_n(passes / n if passes else None, 2)} per service) |",
                  f"| reads per reconcile pass | {_n(conv.reads / passes if passes else None, 2)} |",
                  f"| failed requests while converging | {conv.failed() or 'none'} |",
                  f"| idle: requests per minute (window {op['idle_elapsed_s']:.0f} s incl. a resync, "
                  f"{_n(idle.passes)} passes) | {idle_per_min:.1f} ({idle_verbs or 'none'}); writes {idle.writes:.0f} |",
                  f"| operator RSS: at start / peak / idle | {op['rss_start_mib']:.0f} / {op['rss_peak_mib']:.0f} / "
                  f"{op['rss_idle_mib']:.0f} MiB |",
                  f"| Python tracebacks in the operator log | {op['tracebacks']} |"]
    return "\n".join(lines)


def _n(value: Optional[float], digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", "-n", type=int, default=int(os.environ.get("N", "100")))
    parser.add_argument("--idle-seconds", type=float, default=75.0,
                        help="idle window after convergence; > 60 s so it contains a resync (default 75)")
    parser.add_argument("--timeout", type=float, default=None, help="per phase (default 300 s + 2 s per service)")
    parser.add_argument("--skip-floor", action="store_true")
    parser.add_argument("--skip-operator", action="store_true")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    n = args.services
    timeout = args.timeout or 300 + 2 * n

    cluster_up()
    print(f"adding {n} inf2.xlarge nodes ...", flush=True)
    apply_nodes(f"inf2.xlarge={n}", NODE_TAG)
    wait_nodes_ready()
    api = Api()
    op = None if args.skip_operator else run_operator(api, n, args.idle_seconds, timeout)
    floor = None if args.skip_floor else run_floor(api, n, timeout)
    text = report(n, op, floor)
    print("\n" + text, flush=True)
    if args.json:
        def plain(d: Optional[dict]) -> Optional[dict]:
            if d is None:
                return None
            return {k: ({"by_verb": v.by_verb(), "failed": v.failed(), "passes": v.passes}
                        if isinstance(v, Metrics) else v) for k, v in d.items()}
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"n": n, "operator": plain(op), "floor": plain(floor)}, fh, indent=2)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except subprocess.CalledProcessError as exc:
        print(exc.stderr, file=sys.stderr)
        raise
