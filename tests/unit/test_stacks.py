"""Stack profiles in the operator: the stack a service gets, what each stack rejects, the vllm-neuron children
(compile on CPU, cache-hit-only serving), the compile key across stacks, `neuron-operator stacks`, and the status a
serving pod's compile-cache miss produces. Goldens of the two vllm-neuron examples; no cluster."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest
import yaml

from neuron_runtime import constants as runtime_constants
from neuron_runtime.compile_spec import compile_key

from neuron_operator.api.spec import parse_spec
from neuron_operator.api.status import Reason
from neuron_operator.builders import build_compile_job, build_serving_deployment
from neuron_operator.catalog import load_catalog
from neuron_operator.compile_inputs import compile_spec_for
from neuron_operator.conditions import JOB_SUCCEEDED, CompileObservation, RuntimeFailure, ServingObservation, \
    StatusInputs, compute_status
from neuron_operator.config import OperatorConfig
from neuron_operator.observe import serving_pod_failure
from neuron_operator.plan import plan_for
from neuron_operator.render import render_documents
from neuron_operator.stacks_report import stack_entry
from neuron_operator.validation import resolve_stack, validate

ROOT = pathlib.Path(__file__).resolve().parents[2]
GOLDEN = pathlib.Path(__file__).parent / "golden"
CATALOG = load_catalog()
SEED, PLUGIN = "neuron-2.23-vllm-0.7.2", "neuron-2.32-vllm-neuron-0.24"
CONFIG = OperatorConfig(default_artifact_store="pvc://neuron-artifacts")


def trn2(**extra) -> dict:
    raw = {"model": {"uri": "hf://meta-llama/Llama-3.3-70B-Instruct"}, "instanceType": "trn2.48xlarge",
           "tensorParallelSize": 16, "runtime": {"stack": PLUGIN}}
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return raw


def plan(raw: dict, config: OperatorConfig = CONFIG, name: str = "svc"):
    spec = parse_spec(raw)
    assert validate(spec, CATALOG, config) == []
    return plan_for(name, "ml", "uid-1", spec, CATALOG, config)


def problems(raw: dict, config: OperatorConfig = CONFIG) -> list:
    return validate(parse_spec(raw), CATALOG, config)


def container(obj: dict) -> dict:
    return obj["spec"]["template"]["spec"]["containers"][0]


def env_of(obj: dict) -> dict:
    return {e["name"]: e.get("value") for e in container(obj)["env"]}


# --- which stack ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("instance,expected", [
    ("trn1.32xlarge", SEED), ("inf2.48xlarge", SEED), ("trn2.48xlarge", SEED), ("trn3.48xlarge", PLUGIN)])
def test_default_stack_per_family(instance, expected):
    spec = parse_spec({"model": {"uri": "hf://o/m"}, "instanceType": instance, "tensorParallelSize": 1})
    assert resolve_stack(spec, CATALOG.get(instance), CONFIG) == expected


def test_the_operator_config_can_move_a_family_to_another_stack():
    config = OperatorConfig(default_stacks={"trn2": PLUGIN})
    spec = parse_spec({"model": {"uri": "hf://o/m"}, "instanceType": "trn2.48xlarge", "tensorParallelSize": 16})
    assert resolve_stack(spec, CATALOG.get("trn2.48xlarge"), config) == PLUGIN
    assert compile_spec_for(spec, CATALOG, PLUGIN).stack == PLUGIN


def test_a_feature_the_default_stack_lacks_is_stalled_naming_the_stack_that_has_it():
    # eagle3 on trn2 passes CEL (a trn2 stack has it) but trn2's default stack is the 2.23 one
    raw = {"model": {"uri": "hf://o/m"}, "instanceType": "trn2.48xlarge", "tensorParallelSize": 16,
           "speculativeDecoding": {"method": "eagle3", "draftModel": {"uri": "hf://o/eagle3"}},
           "engine": {"maxNumSeqs": 1}}
    (p,) = problems(raw)
    assert p.reason == Reason.UNSUPPORTED_BY_STACK and p.field == "spec.speculativeDecoding.method"
    assert "not supported by stack neuron-2.23-vllm-0.7.2 (the operator's default stack for trn2)" in p.message
    assert "set spec.runtime.stack to neuron-2.32-vllm-neuron-0.24" in p.message


def test_a_stack_that_does_not_fit_the_family_names_the_stacks_that_do():
    (p,) = problems({"model": {"uri": "hf://o/m"}, "instanceType": "trn1.32xlarge", "tensorParallelSize": 32,
                     "runtime": {"stack": PLUGIN}})
    assert p.reason == Reason.INVALID_STACK
    assert "does not run on trn1.32xlarge (trn1); stacks that fit trn1: neuron-2.23-vllm-0.7.2" in p.message


@pytest.mark.parametrize("extra,field,fragment", [
    ({"loraAdapters": [{"name": "a", "uri": "hf://o/a"}]}, "spec.loraAdapters", "not supported by stack"),
    ({"engine": {"overrideNeuronConfig": {"context_encoding_buckets": [128, 256]}}},
     "spec.engine.overrideNeuronConfig.context_encoding_buckets", "use num_batched_tokens_buckets"),
    ({"engine": {"overrideNeuronConfig": {"num_seqs_buckets": [1, 4]}}},
     "spec.engine.overrideNeuronConfig.num_seqs_buckets", "must equal spec.engine.maxNumSeqs (8)"),
    ({"engine": {"overrideNeuronConfig": {"quantization": "mxfp4"}}},
     "spec.engine.overrideNeuronConfig.quantization", "supported on trn3 only"),
    ({"engine": {"extraArgs": ["--override-neuron-config={}"]}}, "spec.engine.extraArgs[0]", "is set by the operator"),
    ({"engine": {"extraArgs": ["--device", "neuron"]}}, "spec.engine.extraArgs[0]", "is set by the operator"),
    ({"engine": {"extraArgs": ["--max-lora-rank=8"]}}, "spec.engine.extraArgs[0]", "is set by the operator"),
    ({"tensorParallelSize": 64, "dataParallelSize": 2}, "spec.dataParallelSize", "128 NeuronCores"),
])
def test_vllm_neuron_rejections(extra, field, fragment):
    found = problems(trn2(**extra))
    assert any(p.field == field and fragment in p.message for p in found), found


def test_the_seed_stack_keeps_its_nxdi_vocabulary():
    raw = {"model": {"uri": "hf://o/m"}, "instanceType": "trn1.32xlarge", "tensorParallelSize": 32,
           "engine": {"overrideNeuronConfig": {"context_encoding_buckets": [128, 256], "fused_qkv": True}}}
    assert problems(raw) == []


# --- vllm-neuron children ------------------------------------------------------------------------------------


@pytest.mark.parametrize("example", ["llama-70b-trn2-vllm-neuron.yaml", "gpt-oss-120b-trn3.yaml"])
def test_vllm_neuron_example_children_golden(example):
    text = render_documents(yaml.safe_load_all((ROOT / "examples" / example).read_text()), CATALOG, OperatorConfig())
    path = GOLDEN / example.replace(".yaml", "-children.yaml")
    if not path.exists() or __import__("os").environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"{path.name} drifted; rerun with UPDATE_GOLDEN=1 if intended"


def test_compile_runs_on_cpu_and_holds_no_neuron_device():
    config = OperatorConfig(default_artifact_store="pvc://neuron-artifacts",
                            compile_node_selector={"pool": "compile"},
                            compile_tolerations=({"key": "dedicated", "value": "compile", "effect": "NoSchedule"},))
    job = build_compile_job(plan(trn2(), config))
    pod = job["spec"]["template"]["spec"]
    resources = container(job)["resources"]
    assert all("aws.amazon.com" not in k and "efa" not in k for section in resources.values() for k in section)
    assert resources["requests"] == {"cpu": "32", "memory": "128Gi"}  # 70B by its name
    assert pod["nodeSelector"] == {"pool": "compile"}  # no instance-type selector: not a Neuron node
    assert pod["tolerations"] == [{"key": "dedicated", "value": "compile", "effect": "NoSchedule"}]
    env = env_of(job)
    assert env["VLLM_NEURON_CPU_COMPILE"] == "1" and env["NEURON_PLATFORM_TARGET_OVERRIDE"] == "trn2"
    assert env["NEURON_LIBTORCH_PARALLEL_COMPILE_WORKERS"] == "32"  # one worker per requested CPU
    assert job["metadata"]["annotations"]["inference.neuron-operator.io/compile-target"].startswith("cpu:")


def test_compile_resources_override_and_follow_into_workers():
    job = build_compile_job(plan(trn2(runtime={"compileResources": {"requests": {"cpu": "48"}}})))
    assert container(job)["resources"]["requests"]["cpu"] == "48"
    assert env_of(job)["NEURON_LIBTORCH_PARALLEL_COMPILE_WORKERS"] == "48"


def test_speculative_decoding_compiles_on_the_target_instance_and_says_why():
    raw = trn2(speculativeDecoding={"method": "eagle3", "draftModel": {"uri": "hf://o/eagle3"}},
               engine={"overrideNeuronConfig": {"on_device_sampling_config": {"all_greedy": True}}})
    job = build_compile_job(plan(raw))
    assert container(job)["resources"]["limits"]["aws.amazon.com/neuron"] == "4"
    assert job["spec"]["template"]["spec"]["nodeSelector"] == {"node.kubernetes.io/instance-type": "trn2.48xlarge"}
    assert "VLLM_NEURON_CPU_COMPILE" not in env_of(job)
    reason = job["metadata"]["annotations"]["inference.neuron-operator.io/compile-target"]
    assert reason.startswith("neuron:") and "cpu_compilation.md Limitations" in reason


def test_serving_pods_are_cache_hit_only_from_the_key():
    p = plan(trn2(runtime={"startupTimeoutSeconds": 2400}))
    deployment = build_serving_deployment(p)
    env = env_of(deployment)
    assert env["NEURON_LIBTORCH_REMOTE_CACHE"] == f"/var/lib/neuron-operator/artifacts/{p.key}"
    assert env["VLLM_NEURON_DISABLE_WARMUP_COMPILE"] == "1"
    assert env["NEURON_LIBTORCH_DISABLE_GRAPH_CAPTURE_BACKEND"] == "1"
    assert env["VLLM_ENGINE_READY_TIMEOUT_S"] == "2400"
    assert "NEURON_COMPILED_ARTIFACTS" not in env and "VLLM_NEURON_FRAMEWORK" not in env
    assert json.loads(env["NEURON_OPERATOR_SERVE_CONFIG"])["startup_timeout_seconds"] == 2400
    mounts = {m["name"]: m["mountPath"] for m in container(deployment)["volumeMounts"]}
    assert mounts["engine-cache"] == env["VLLM_CACHE_ROOT"]
    assert container(deployment)["resources"]["limits"]["aws.amazon.com/neuron"] == "4"


def test_data_parallel_engines_hold_their_cores():
    p = plan(trn2(dataParallelSize=2))
    assert container(build_serving_deployment(p))["resources"]["limits"]["aws.amazon.com/neuron"] == "8"


# --- the compile key across stacks ---------------------------------------------------------------------------


def key(raw: dict) -> str:
    return plan(raw).key


def test_server_only_extra_args_never_recompile_but_engine_flags_do():
    base = key(trn2())
    assert key(trn2(engine={"extraArgs": ["--disable-log-requests", "--max-log-len=100"]})) == base
    assert key(trn2(engine={"extraArgs": ["--block-size=64"]})) != base
    assert key(trn2(dataParallelSize=2)) != base
    assert key(trn2(engine={"maxNumBatchedTokens": 4096})) != base


def test_the_stack_is_a_compile_input():
    raw = {"model": {"uri": "hf://o/m-8B"}, "instanceType": "trn2.48xlarge", "tensorParallelSize": 16}
    assert key(raw) != key({**raw, "runtime": {"stack": PLUGIN}})


def test_seed_keys_do_not_move_with_the_new_fields():
    # The fields added for vllm-neuron stay out of the hashed document at their defaults (compile_spec.py).
    spec = compile_spec_for(parse_spec({"model": {"uri": "hf://o/m"}, "instanceType": "trn1.32xlarge",
                                        "tensorParallelSize": 32}), CATALOG, SEED)
    assert "data_parallel_size" not in spec.to_json() and "engine_args" not in spec.to_json()
    assert compile_key(spec) == compile_key(type(spec).from_json(spec.to_json()))


# --- the stacks command ---------------------------------------------------------------------------------------


def test_stacks_command_lists_every_profile_with_its_defaults():
    out = subprocess.run([sys.executable, "-m", "neuron_operator.cli", "stacks", "-o", "json"], capture_output=True,
                         text=True, check=True, env={**__import__("os").environ,
                                                     "NEURON_OPERATOR_DEFAULT_STACKS": json.dumps({"trn2": PLUGIN})})
    stacks = {s["id"]: s for s in json.loads(out.stdout)["stacks"]}
    assert stacks[PLUGIN]["defaultFor"] == ["trn2", "trn3"] and stacks[SEED]["defaultFor"] == ["inf2", "trn1"]
    assert stacks[PLUGIN]["features"]["cpuCompile"] and not stacks[PLUGIN]["features"]["lora"]
    assert stacks[PLUGIN]["versions"]["vllm-neuron"] == "0.24.0.1.1.0"
    assert stacks[SEED]["features"]["speculativeMethods"] == ["draft", "eagle"]
    table = subprocess.run([sys.executable, "-m", "neuron_operator.cli", "stacks"], capture_output=True, text=True,
                           check=True).stdout
    assert table.splitlines()[0].split()[:3] == ["STACK", "SDK", "STATUS"] and PLUGIN in table


def test_stack_entry_shows_the_configured_image():
    config = OperatorConfig(runtime_images={PLUGIN: "registry.example/rt@sha256:" + "a" * 64})
    from neuron_runtime.stacks import PROFILES

    assert stack_entry(PROFILES[PLUGIN], config)["image"].startswith("registry.example/rt@")


# --- a serving pod's cache miss ------------------------------------------------------------------------------


def crashlooping_pod(code: int, message: str) -> dict:
    return {"metadata": {"name": "svc-abc"}, "status": {"phase": "Running", "containerStatuses": [{
        "name": "engine", "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {"terminated": {"exitCode": code, "reason": "Error", "message": message}}}]}}


def test_serving_pod_failure_reads_the_last_termination():
    pod = crashlooping_pod(runtime_constants.EXIT_CACHE_MISS, "compile-cache miss serving artifact k")
    assert serving_pod_failure(pod) == RuntimeFailure("svc-abc", 6, "compile-cache miss serving artifact k")
    assert serving_pod_failure(crashlooping_pod(137, "OOMKilled")) is None  # restarts may help: not permanent


@pytest.mark.parametrize("code,reason", [(6, Reason.ARTIFACT_CACHE_MISS), (3, Reason.ARTIFACT_INVALID),
                                         (2, Reason.RUNTIME_REJECTED_SPEC), (7, Reason.FABRIC_UNAVAILABLE)])
def test_a_permanent_serving_failure_is_stalled(code, reason):
    inputs = StatusInputs(
        generation=2, replicas=1, key="k1", artifact_location="pvc://a/k1", stack=PLUGIN,
        compile=CompileObservation(job_name="nis-compile-1", state=JOB_SUCCEEDED),
        serving=ServingObservation(exists=True, artifact_key="k1", desired=1, ready=0, available=0, updated=1,
                                   rolled_out=True, failure=RuntimeFailure("svc-abc", code, "the runtime said so")))
    status = compute_status(inputs, None, "2026-12-01T00:00:00Z")
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", reason)
    assert "svc-abc" in stalled["message"] and "the runtime said so" in stalled["message"]
    assert status["phase"] == "Failed"
    if code == 6:
        assert "never compile on Neuron nodes" in stalled["message"] and "nis-compile-1" in stalled["message"]
        assert "artifact k1" in stalled["message"]
