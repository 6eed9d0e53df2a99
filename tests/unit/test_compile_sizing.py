"""Compile pods on Neuron nodes (2.23 stack) are sized for the model NxD Inference loads, not only for the devices
they hold; permanent runtime exit codes fail the Job at once; an OOM kill says which field to raise."""

from __future__ import annotations

from neuron_operator.api.spec import parse_spec
from neuron_operator.builders import build_compile_job
from neuron_operator.catalog import load_catalog
from neuron_operator.conditions import JOB_FAILED, CompileObservation, StatusInputs, compute_status
from neuron_operator.config import OperatorConfig
from neuron_operator.plan import plan_for
from neuron_runtime import constants as RT


def compile_resources(**spec):
    raw = {"model": {"uri": "hf://meta-llama/Llama-3.1-8B-Instruct"}, "instanceType": "trn1.32xlarge",
           "tensorParallelSize": 2, "artifacts": {"pvc": {"claimName": "a"}}, **spec}
    plan = plan_for("m", "ml", "uid", parse_spec(raw), load_catalog(), OperatorConfig())
    job = build_compile_job(plan)
    return job["spec"]["template"]["spec"]["containers"][0]["resources"], job


def test_a_small_tp_compile_gets_the_models_memory_not_the_devices_share():
    resources, job = compile_resources()  # 2 of 16 devices: the devices' share would be 54Gi... of a 16 GB model
    assert resources["limits"]["memory"] == resources["requests"]["memory"] == "46Gi"  # 8B x 2 bytes x 2 + 16 GiB
    assert "memory sized for 8B parameters" in job["metadata"]["annotations"]["inference.neuron-operator.io/compile-target"]
    resources, _ = compile_resources(model={"uri": "hf://meta-llama/Llama-3.1-70B-Instruct"})
    assert resources["limits"]["memory"] == "277Gi"


def test_float32_doubles_the_checkpoint():
    resources, _ = compile_resources(engine={"dtype": "float32"})
    assert resources["limits"]["memory"] == "76Gi"


def test_no_size_in_the_name_takes_the_whole_node_and_large_models_are_capped_at_it():
    assert compile_resources(model={"uri": "pvc://models/mine"})[0]["limits"]["memory"] == "435Gi"  # 85% of 512
    resources, job = compile_resources(model={"uri": "hf://meta-llama/Llama-3.1-405B-Instruct"})
    assert resources["limits"]["memory"] == "435Gi"
    assert "capped at the node's 435Gi" in job["metadata"]["annotations"]["inference.neuron-operator.io/compile-target"]


def test_compile_resources_win():
    resources, _ = compile_resources(runtime={"compileResources": {"limits": {"memory": "300Gi"},
                                                                   "requests": {"memory": "300Gi"}}})
    assert resources["limits"]["memory"] == resources["requests"]["memory"] == "300Gi"


def test_permanent_exit_codes_fail_the_job_without_retries():
    _, job = compile_resources()
    [rule] = job["spec"]["podFailurePolicy"]["rules"]
    assert rule["action"] == "FailJob"
    assert rule["onExitCodes"] == {"containerName": "compile", "operator": "In",
                                   "values": [RT.EXIT_BAD_SPEC, RT.EXIT_COMPILE_MEMORY]}


def test_an_oom_killed_compile_names_the_field_and_the_limit_it_had():
    obs = CompileObservation("nis-compile-x", JOB_FAILED, attempts=3, failure="OOMKilled (exit 137)",
                             memory_limit="46Gi")
    status = compute_status(StatusInputs(generation=1, replicas=1, key="k", compile=obs), None, "t")
    [stalled] = [c for c in status["conditions"] if c["type"] == "Stalled"]
    assert "raise spec.runtime.compileResources.limits.memory (now 46Gi) and requests.memory" in stalled["message"]
