"""The last compile's outcome and duration: in status.lastCompile (stable across passes and restarts, so an idle
operator writes nothing), in the compile metrics once per finished Job, and in the log once."""

from __future__ import annotations

import logging
import pathlib
import typing

import pytest
import yaml

from neuron_operator import constants as C
from neuron_operator import handlers, metrics
from neuron_operator.api.status import CompileOutcome, CompileOutcomeName, LastCompileStatus
from neuron_operator.cache import ObjectCache

from .fakes import deployment_available

ROOT = pathlib.Path(__file__).resolve().parents[3]
STARTED, FINISHED = "2026-12-01T00:00:10Z", "2026-12-01T00:08:30Z"  # 500 s


def jobs(world) -> list[dict]:
    return world.kube.of_kind("batch/v1", "Job")


def finish(world, job: dict, outcome: str = "Complete", started: str = STARTED, finished: str = FINISHED) -> dict:
    """What the Job controller writes when a Job ends: its terminal condition and times."""
    meta = job["metadata"]
    status = {"startTime": started, "conditions": [{"type": outcome, "status": "True", "lastTransitionTime": finished,
                                                    "reason": "BackoffLimitExceeded" if outcome == "Failed" else "",
                                                    "message": "Job has reached the specified backoff limit"
                                                    if outcome == "Failed" else ""}]}
    if outcome == "Complete":
        status.update(succeeded=1, completionTime=finished)
    else:
        status.update(failed=3)
    return world.kube.set_status("batch/v1", "Job", meta["namespace"], meta["name"], status)


def served(world) -> None:
    world.watch()
    world.reconcile()
    deployment_available(world.kube, world.kube.find("apps/v1", "Deployment", "ml", "llama"))
    world.watch()
    world.reconcile()


def test_a_finished_compile_is_in_status_and_an_idle_operator_writes_nothing(world):
    world.add_service()
    world.reconcile()
    assert "lastCompile" not in world.service()["status"]
    [job] = jobs(world)
    finish(world, job)
    served(world)
    last = world.service()["status"]["lastCompile"]
    assert last == {"job": job["metadata"]["name"], "key": job["metadata"]["labels"][C.LABEL_ARTIFACT_KEY],
                    "outcome": "Succeeded", "durationSeconds": 500, "finishedAt": FINISHED}
    LastCompileStatus.model_validate(last)
    world.time += 3600  # later passes (resyncs) and a new process read the same Job: nothing to write
    world.reconcile()
    assert world.kube.writes() == 0
    world.restart()
    world.reconcile()
    assert world.kube.writes() == 0


def test_a_recompile_keeps_the_previous_outcome_until_the_new_job_ends(world):
    world.add_service()
    world.reconcile()
    [first] = jobs(world)
    finish(world, first)
    served(world)
    before = world.service()["status"]["lastCompile"]
    world.update_spec(engine={"maxModelLen": 8192})
    world.reconcile()
    [second] = [j for j in jobs(world) if j["metadata"]["name"] != first["metadata"]["name"]]
    status = world.service()["status"]
    assert status["compileJob"] == second["metadata"]["name"] and status["lastCompile"] == before
    finish(world, second, outcome="Failed", started="2026-12-01T01:00:00Z", finished="2026-12-01T01:02:03Z")
    world.watch()
    world.reconcile()
    assert world.service()["status"]["lastCompile"] == {
        "job": second["metadata"]["name"], "key": second["metadata"]["labels"][C.LABEL_ARTIFACT_KEY],
        "outcome": "Failed", "durationSeconds": 123, "finishedAt": "2026-12-01T01:02:03Z"}


# --- the metric and the log line, from job_event --------------------------------------------------------------

@pytest.fixture
def state(monkeypatch):
    fresh = {"cache": ObjectCache(), "phases": {}, "stalled": {}}
    monkeypatch.setattr(handlers, "_state", fresh)
    return fresh


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def compile_job(name: str, uid: str) -> dict:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {
        "name": name, "namespace": "ml", "uid": uid,
        "labels": {C.LABEL_MANAGED_BY: C.MANAGED_BY, C.LABEL_COMPONENT: C.COMPONENT_COMPILE,
                   C.LABEL_ARTIFACT_KEY: "k-" + uid}}, "status": {"startTime": STARTED}}


def test_each_finished_job_is_counted_timed_and_logged_once(state, caplog):
    caplog.set_level(logging.INFO, logger="neuron_operator")
    count = lambda outcome: sample("neuron_operator_compile_duration_seconds_count", outcome=outcome)  # noqa: E731
    total = lambda outcome: sample("neuron_operator_compile_duration_seconds_sum", outcome=outcome)  # noqa: E731
    jobs_total = lambda outcome: sample("neuron_operator_compile_jobs_total", outcome=outcome)  # noqa: E731
    before = {o: (count(o), total(o), jobs_total(o)) for o in ("succeeded", "failed")}

    ok = compile_job("nis-compile-ok", "u-ok")
    handlers.job_event(type="ADDED", body=ok)  # running: nothing yet
    ok["status"].update(succeeded=1, completionTime=FINISHED,
                        conditions=[{"type": "Complete", "status": "True", "lastTransitionTime": FINISHED}])
    for _ in range(3):  # the Job's later events (and a resync of the watch) are the same outcome
        handlers.job_event(type="MODIFIED", body=ok)
    bad = compile_job("nis-compile-bad", "u-bad")
    bad["status"]["conditions"] = [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
                                    "message": "Job was active longer than specified deadline",
                                    "lastTransitionTime": "2026-12-01T04:00:10Z"}]
    handlers.job_event(type="MODIFIED", body=bad)
    handlers.job_event(type="MODIFIED", body=bad)

    assert (count("succeeded"), total("succeeded"), jobs_total("succeeded")) == (
        before["succeeded"][0] + 1, before["succeeded"][1] + 500, before["succeeded"][2] + 1)
    assert (count("failed"), total("failed"), jobs_total("failed")) == (
        before["failed"][0] + 1, before["failed"][1] + 14400, before["failed"][2] + 1)
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("INFO", "compile Job ml/nis-compile-ok succeeded in 500s (artifact k-u-ok)"),
        ("WARNING", "compile Job ml/nis-compile-bad failed in 14400s (artifact k-u-bad): DeadlineExceeded: "
                    "Job was active longer than specified deadline")]
    # A deleted Job is forgotten (its uid never returns); a Job recreated under the same name is a new one.
    handlers.job_event(type="DELETED", body=ok)
    assert "u-ok" not in state["job_outcomes"]
    again = {**compile_job("nis-compile-ok", "u-ok2"), "status": ok["status"]}
    handlers.job_event(type="ADDED", body=again)
    assert count("succeeded") == before["succeeded"][0] + 2


def test_the_duration_buckets_span_the_default_compile_deadline():
    # The chart's compile.activeDeadlineSeconds default (14400 s) is the last finite bucket: longer compiles fail.
    values = yaml.safe_load((ROOT / "charts" / "neuron-operator" / "values.yaml").read_text(encoding="utf-8"))
    assert metrics.COMPILE_DURATION._upper_bounds[-2] == values["compile"]["activeDeadlineSeconds"]


def test_compile_outcomes_are_the_status_models():
    assert set(CompileOutcome.ALL) == set(typing.get_args(CompileOutcomeName))
