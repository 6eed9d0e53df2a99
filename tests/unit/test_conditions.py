"""Status computation is a pure function of observations; these pin its decisions."""

from neuron_operator.api.status import render_status
from neuron_operator.conditions import (JOB_FAILED, JOB_PENDING, JOB_RUNNING, JOB_SUCCEEDED, CompileObservation,
                                        CompileResult, ServingObservation, StatusInputs, compute_status)
from neuron_operator.validation import Problem

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"


def conds(status):
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def inputs(**kw):
    base = dict(generation=3, replicas=2, key="new", artifact_location="pvc://a/new", stack="s",
                endpoint="http://x", selector="a=b")
    base.update(kw)
    return StatusInputs(**base)


def serving(key="new", available=2, desired=2, rolled_out=True):
    return ServingObservation(exists=True, artifact_key=key, desired=desired, ready=available, available=available,
                              updated=desired if rolled_out else 0, rolled_out=rolled_out)


def test_a_starting_compile_is_compiling_and_stays_so_when_its_pod_runs():
    s = compute_status(inputs(compile=CompileObservation("j", JOB_PENDING)), None, T0)
    assert s["phase"] == "Compiling" and s["observedGeneration"] == 3
    assert conds(s)["Compiled"] == ("False", "Compiling")
    assert conds(s)["Ready"][0] == "False" and conds(s)["Reconciling"] == ("True", "Compiling")
    # the pod starting to run changes nothing a reader needs: no new status (and so no write)
    assert compute_status(inputs(compile=CompileObservation("j", JOB_RUNNING)), s, T1) == s


def test_an_unschedulable_compile_is_pending_with_the_schedulers_message():
    obs = CompileObservation("j", JOB_PENDING, unschedulable="pod p unschedulable: 0/9 nodes are available")
    s = compute_status(inputs(compile=obs), None, T0)
    assert conds(s)["Compiled"] == ("False", "CompilePending")
    assert "waiting to run: pod p unschedulable: 0/9 nodes are available" in s["conditions"][1]["message"]


def test_ready_when_compiled_and_rolled_out():
    s = compute_status(inputs(compile=CompileObservation("j", JOB_SUCCEEDED), serving=serving()), None, T0)
    assert s["phase"] == "Ready"
    assert conds(s) == {"Ready": ("True", "ReplicasReady"), "Compiled": ("True", "ArtifactsReady"),
                        "Available": ("True", "ReplicasReady"), "Reconciling": ("False", "Reconciled"),
                        "Stalled": ("False", "ValidSpec")}
    assert (s["replicas"], s["readyReplicas"], s["servingArtifact"]["key"]) == (2, 2, "new")


def test_recompile_keeps_ready_while_old_artifact_serves():
    s = compute_status(inputs(compile=CompileObservation("j2", JOB_RUNNING), serving=serving(key="old")), None, T0)
    assert conds(s)["Ready"] == ("True", "ServingOldArtifact")
    assert conds(s)["Compiled"] == ("False", "Compiling")
    assert conds(s)["Reconciling"][0] == "True"
    assert s["phase"] == "Compiling"
    assert s["artifact"]["key"] == "new" and s["servingArtifact"]["key"] == "old"


def test_rolling_out_after_compile():
    s = compute_status(inputs(compile=CompileObservation("j", JOB_SUCCEEDED),
                              serving=serving(key="new", available=1, rolled_out=False)), None, T0)
    assert s["phase"] == "Deploying" and conds(s)["Reconciling"] == ("True", "RollingOut")


def test_a_pod_created_before_it_can_serve_changes_no_status():
    # Each serving pod the Deployment creates moves updatedReplicas first, availableReplicas (and readyReplicas)
    # only once it serves: only the second is worth a status write.
    done = CompileObservation("j", JOB_SUCCEEDED)
    before = ServingObservation(exists=True, artifact_key="new", desired=2, ready=0, available=0, updated=0)
    created = ServingObservation(exists=True, artifact_key="new", desired=2, ready=0, available=0, updated=1)
    s = compute_status(inputs(compile=done, serving=before), None, T0)
    assert compute_status(inputs(compile=done, serving=created), s, T1) == s
    serving_one = ServingObservation(exists=True, artifact_key="new", desired=2, ready=1, available=1, updated=1)
    assert "1/2 available" in next(c for c in compute_status(inputs(compile=done, serving=serving_one), s, T1)
                                   ["conditions"] if c["type"] == "Reconciling")["message"]


def test_failed_compile_stalls_but_old_revision_serves():
    obs = CompileObservation("j2", JOB_FAILED, attempts=3, failure="OOMKilled (exit 137): killed")
    s = compute_status(inputs(compile=obs, serving=serving(key="old")), None, T0)
    assert conds(s)["Stalled"] == ("True", "CompileFailed")
    assert "OOMKilled (exit 137)" in next(c["message"] for c in s["conditions"] if c["type"] == "Stalled")
    assert conds(s)["Ready"][0] == "True" and s["phase"] == "Degraded"
    assert conds(s)["Reconciling"][0] == "False"


def test_failed_compile_with_nothing_serving_is_failed():
    obs = CompileObservation("j", JOB_FAILED, attempts=3, failure="Error (exit 1)")
    s = compute_status(inputs(compile=obs), None, T0)
    assert s["phase"] == "Failed" and conds(s)["Ready"][0] == "False"


def test_invalid_spec_is_stalled_with_the_field_in_the_message():
    problem = Problem("spec.tensorParallelSize", "InvalidTensorParallelSize", "spec.tensorParallelSize: 3 is not ...")
    s = compute_status(inputs(problems=[problem], key=None), None, T0)
    assert conds(s)["Stalled"] == ("True", "InvalidTensorParallelSize")
    assert s["phase"] == "Failed" and "artifact" not in s


def test_transition_time_only_moves_on_status_flip():
    first = compute_status(inputs(compile=CompileObservation("j", JOB_PENDING)), None, T0)
    again = compute_status(inputs(compile=CompileObservation("j", JOB_RUNNING)), first, T1)
    compiled = next(c for c in again["conditions"] if c["type"] == "Compiled")
    assert compiled["lastTransitionTime"] == T0  # False -> False (reason changed only)
    done = compute_status(inputs(compile=CompileObservation("j", JOB_SUCCEEDED), serving=serving()), again, T1)
    assert next(c for c in done["conditions"] if c["type"] == "Compiled")["lastTransitionTime"] == T1


def test_same_observations_give_an_identical_status():
    first = compute_status(inputs(compile=CompileObservation("j", JOB_SUCCEEDED), serving=serving()), None, T0)
    assert compute_status(inputs(compile=CompileObservation("j", JOB_SUCCEEDED), serving=serving()), first, T1) == first


def test_scaled_to_zero_is_ready():
    s = compute_status(inputs(replicas=0, compile=CompileObservation("j", JOB_SUCCEEDED),
                              serving=serving(available=0, desired=0)), None, T0)
    assert conds(s)["Ready"] == ("True", "ScaledToZero") and s["phase"] == "Ready"


def test_contains_ignores_server_defaults_but_sees_edits():
    from neuron_operator.children import contains

    desired = {"spec": {"replicas": 2, "template": {"metadata": {"annotations": {}}},
                        "ports": [{"port": 8000, "readOnly": False}], "cpu": "108"}}
    live = {"spec": {"replicas": 2, "template": {"metadata": {"labels": {"x": "y"}}},
                     "ports": [{"port": 8000, "protocol": "TCP"}], "cpu": 108}, "status": {"ready": 1}}
    assert contains(live, desired)
    assert not contains({**live, "spec": {**live["spec"], "replicas": 3}}, desired)
    assert not contains({**live, "spec": {**live["spec"], "ports": [{"port": 9000}]}}, desired)
    assert not contains({**live, "spec": {**live["spec"], "ports": [{"port": 8000}, {"port": 9000}]}}, desired)


# --- status.lastCompile -----------------------------------------------------------------------------------------

DONE = CompileResult(job_name="j", outcome="Succeeded", key="new", duration_seconds=1300,
                     finished_at="2026-01-01T00:21:40Z")


def test_a_finished_compile_is_reported_as_last_compile_through_the_status_model():
    s = compute_status(inputs(compile=CompileObservation("j", JOB_SUCCEEDED, finished=DONE), serving=serving()),
                       None, T0)
    assert s["lastCompile"] == {"job": "j", "key": "new", "outcome": "Succeeded", "durationSeconds": 1300,
                                "finishedAt": "2026-01-01T00:21:40Z"}
    assert render_status(s) == s  # the CRD's schema (generated from the model) has every field
    again = compute_status(inputs(compile=CompileObservation("j", JOB_SUCCEEDED, finished=DONE), serving=serving()),
                           s, T1)
    assert again == s  # stable: an idle operator writes nothing


def test_last_compile_is_absent_until_a_compile_finishes():
    s = compute_status(inputs(compile=CompileObservation("j", JOB_RUNNING)), None, T0)
    assert "lastCompile" not in s


def test_the_previous_compile_stays_reported_while_a_new_one_runs_or_the_spec_is_invalid():
    first = compute_status(inputs(compile=CompileObservation("j", JOB_SUCCEEDED, finished=DONE), serving=serving()),
                           None, T0)
    recompiling = compute_status(inputs(key="newer", compile=CompileObservation("j2", JOB_RUNNING),
                                        serving=serving(key="new")), first, T1)
    assert recompiling["lastCompile"] == first["lastCompile"] and recompiling["compileJob"] == "j2"
    problem = Problem("spec.tensorParallelSize", "InvalidTensorParallelSize", "3 is not ...")
    stalled = compute_status(inputs(problems=[problem], key=None), recompiling, T1)
    assert stalled["lastCompile"] == first["lastCompile"]
    failed = CompileResult(job_name="j2", outcome="Failed", key="newer", duration_seconds=60)
    after = compute_status(inputs(key="newer", compile=CompileObservation("j2", JOB_FAILED, failure="x",
                                                                        finished=failed),
                                  serving=serving(key="new")), recompiling, T1)
    assert after["lastCompile"] == {"job": "j2", "key": "newer", "outcome": "Failed", "durationSeconds": 60}
    assert render_status(after) == after
