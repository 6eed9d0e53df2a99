"""Building blocks of the failure scenarios: services that fit the extra inf2.xlarge nodes, applying them, waiting
for them, and killing the operator at random moments."""

from __future__ import annotations

import random
import time
from typing import Any, Callable, Iterable, Optional

import yaml

from tests.bench.harness import GROUP_VERSION, Api, OperatorProcess, nis_ready, sh

# kwok completes a compile pod after this long (hack/kwok-stages-neuron.yaml, kwok's pod-complete stage): long
# enough that a kill lands while Jobs run, short enough for CI.
SLOW_COMPILE = {"pod-complete.stage.kwok.x-k8s.io/delay": "3s", "pod-complete.stage.kwok.x-k8s.io/jitter-delay": "6s"}
LABEL_ARTIFACT_KEY = "inference.neuron-operator.io/artifact-key"


def service(name: str, revision: str = "main", max_model_len: int = 4096, **spec: Any) -> dict:
    """A single-device service (inf2.xlarge, TP 2) with a slow simulated compile."""
    body: dict[str, Any] = {
        "model": {"uri": "hf://meta-llama/Llama-3.2-1B-Instruct", "revision": revision},
        "instanceType": "inf2.xlarge", "tensorParallelSize": 2, "replicas": 1,
        "engine": {"maxModelLen": max_model_len},
        "artifacts": {"pvc": {"claimName": "artifacts"}},
        "runtime": {"podAnnotations": dict(SLOW_COMPILE)},
    }
    body.update(spec)
    return {"apiVersion": GROUP_VERSION, "kind": "NeuronInferenceService", "metadata": {"name": name}, "spec": body}


def apply(namespace: str, docs: Iterable[dict]) -> None:
    """One `kubectl apply` of all ``docs``, as a user would."""
    sh("kubectl", "apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(list(docs), sort_keys=False))


def list_services(api: Api, namespace: str) -> list[dict]:
    return api.list(GROUP_VERSION, "neuroninferenceservices", namespace)[0]


def wait_until(predicate: Callable[[], Any], timeout: float, message: "str | Callable[[], str]",
               interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = predicate()
        except RuntimeError as exc:  # the API server is restarting
            last = exc
        if last and not isinstance(last, Exception):
            return last
        if time.monotonic() > deadline:
            what = message() if callable(message) else message
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}"[:3000])
        time.sleep(interval)


def wait_ready(api: Api, namespace: str, names: Iterable[str], timeout: float = 180,
               extra: Optional[Callable[[dict], bool]] = None) -> float:
    """Seconds until every named service is Ready at its generation (and ``extra`` holds for each)."""
    wanted = set(names)
    start = time.monotonic()
    pending: list = []

    def done() -> bool:
        items = {s["metadata"]["name"]: s for s in list_services(api, namespace)}
        pending[:] = [(n, (items.get(n, {}).get("status") or {}).get("phase")) for n in sorted(wanted)
                      if n not in items or not nis_ready(items[n]) or (extra is not None and not extra(items[n]))]
        return not pending

    wait_until(done, timeout, lambda: f"{len(wanted)} services Ready (pending: {pending[:10]})")
    return time.monotonic() - start


class ReadyWatch:
    """Tracker callback for services: the moment the wanted services last became all Ready (None while they are
    not), and how often one of them went from Ready back to not Ready (a visible disruption)."""

    def __init__(self, names: Iterable[str], extra: Optional[Callable[[dict], bool]] = None):
        self.wanted = set(names)
        self.extra = extra
        self.ready: dict[str, bool] = {}
        self.all_ready_at: Optional[float] = None
        self.flips = 0
        self.flip_details: list[str] = []  # what a flip went to: "<name>: <phase> Ready=<status>/<reason> <message>"

    def __call__(self, kind: str, obj: dict, at: float) -> None:
        name = obj["metadata"]["name"]
        if name not in self.wanted:
            return
        now = kind != "DELETED" and nis_ready(obj) and (self.extra is None or self.extra(obj))
        if self.ready.get(name) and not now:
            self.flips += 1
            status = obj.get("status") or {}
            ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
            self.flip_details.append(
                f"{name}: {kind} phase {status.get('phase')} gen {obj['metadata'].get('generation')}/"
                f"{status.get('observedGeneration')} Ready={ready.get('status')}/{ready.get('reason')} "
                f"{ready.get('message', '')[:120]}")
        self.ready[name] = now
        if all(self.ready.get(n) for n in self.wanted):
            self.all_ready_at = self.all_ready_at or at
        else:
            self.all_ready_at = None

    def busy(self) -> bool:
        return self.all_ready_at is None


def kill_while(operator: OperatorProcess, rng: random.Random, busy: Callable[[], bool], kills: tuple[int, int],
               gap: tuple[float, float] = (0.05, 2.5), down: tuple[float, float] = (0.0, 1.0)) -> tuple[list[float], float]:
    """SIGKILL the operator a random ``gap`` seconds after each start, keep it down a random ``down`` seconds and
    restart it; at least kills[0] times, then while ``busy()`` (work still converging), at most kills[1] times.
    Returns the moments of the kills (seconds since the call) and the monotonic time the last restart was up."""
    start = time.monotonic()
    moments: list[float] = []
    last_up = start
    while len(moments) < kills[1]:
        time.sleep(rng.uniform(*gap))
        if len(moments) >= kills[0] and not busy():
            break
        moments.append(round(time.monotonic() - start, 2))
        operator.kill()
        time.sleep(rng.uniform(*down))
        operator.start()
        last_up = time.monotonic()
    return moments, last_up


def jobs_for_key(api: Api, namespace: str, key: str) -> list[dict]:
    return api.list("batch/v1", "jobs", namespace, labelSelector=f"{LABEL_ARTIFACT_KEY}={key}")[0]


def job_succeeded(job: dict) -> bool:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") in ("Complete", "SuccessCriteriaMet") and cond.get("status") == "True":
            return True
    return False


class CompileBeforeRoll:
    """Tracker callback for Deployments: whenever a Deployment's pod template switches to another artifact key,
    that key's compile Job must already have succeeded (read live at that moment). Violations are collected."""

    def __init__(self, api: Api, namespace: str):
        self.api, self.namespace = api, namespace
        self.keys: dict[str, str] = {}
        self.rolls: list[tuple[str, str, str]] = []  # (deployment, from key, to key)
        self.violations: list[str] = []

    def __call__(self, kind: str, obj: dict, at: float) -> None:
        if kind == "DELETED":
            return
        name = obj["metadata"]["name"]
        key = (((obj.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels", {}).get(
            LABEL_ARTIFACT_KEY)
        previous = self.keys.get(name)
        self.keys[name] = key
        if key is None or key == previous:
            return
        jobs = jobs_for_key(self.api, self.namespace, key)
        if not any(job_succeeded(j) for j in jobs):
            states = [(j["metadata"]["name"], (j.get("status") or {}).get("conditions")) for j in jobs]
            self.violations.append(f"Deployment {name} switched {'to' if previous is None else previous + ' ->'} "
                                   f"artifact {key} before its compile Job succeeded: {states or 'no Job'}")
        if previous is not None:
            self.rolls.append((name, previous, key))
