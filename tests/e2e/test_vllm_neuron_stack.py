"""The vllm-neuron stack on the real control plane: a trn2 service compiles on the CPU compile pool without holding a
Neuron device and serves cache-hit-only; a serving pod's compile-cache miss becomes Stalled naming the key; a trn1
service asking for the stack is rejected at apply naming the stacks that fit; trn3 gets the stack by default."""

from __future__ import annotations

import pytest

from . import nis
from .conftest import COMPILE_POOL_LABEL, COMPILE_POOL_VALUE
from .kube import kubectl, kubectl_json, wait_until

pytestmark = pytest.mark.usefixtures("operator")

STACK = "neuron-2.32-vllm-neuron-0.24"
NEURON = "aws.amazon.com/neuron"


def plugin_service(name: str, **overrides):
    spec = {"instanceType": "trn2.48xlarge", "tensorParallelSize": 16, "runtime": {"stack": STACK},
            "model": {"uri": "hf://meta-llama/Llama-3.3-70B-Instruct"}}
    spec.update(overrides)
    return nis.service(name, **spec)


def env_of(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def compile_pod(namespace: str) -> dict:
    pods = kubectl_json("get", "pods", "-n", namespace, "-l", "app.kubernetes.io/component=compile")["items"]
    return pods[0] if pods and pods[0]["spec"].get("nodeName") else None


def test_trn2_compiles_on_a_cpu_node_and_serves_cache_hit_only(namespace, artifact_store):
    nis.apply(namespace, plugin_service("llama-70b"))
    pod = wait_until(lambda: compile_pod(namespace), timeout=60, message="compile pod scheduled")
    node = kubectl_json("get", "node", pod["spec"]["nodeName"])
    assert NEURON not in node["status"]["allocatable"], pod["spec"]["nodeName"]  # a CPU node
    assert node["metadata"]["labels"][COMPILE_POOL_LABEL] == COMPILE_POOL_VALUE  # the configured compile pool
    compile_container = pod["spec"]["containers"][0]
    requested = {**compile_container["resources"].get("requests", {}), **compile_container["resources"].get("limits", {})}
    assert not any(k.startswith("aws.amazon.com/") or k.startswith("vpc.amazonaws.com/") for k in requested)
    assert not any(t.get("key") == NEURON for t in pod["spec"].get("tolerations") or [])
    compile_env = env_of(compile_container)
    assert compile_env["VLLM_NEURON_CPU_COMPILE"] == "1" and compile_env["NEURON_PLATFORM_TARGET_OVERRIDE"] == "trn2"

    obj = nis.wait_ready(namespace, "llama-70b")
    key = obj["status"]["artifact"]["key"]
    assert obj["status"]["artifact"]["stack"] == STACK
    [job] = nis.compile_jobs(namespace)
    assert job["metadata"]["annotations"]["inference.neuron-operator.io/compile-target"].startswith("cpu:")
    engine = nis.deployment(namespace, "llama-70b")["spec"]["template"]["spec"]["containers"][0]
    assert engine["resources"]["limits"][NEURON] == "4"
    env = env_of(engine)
    assert env["NEURON_LIBTORCH_REMOTE_CACHE"] == f"/var/lib/neuron-operator/artifacts/{key}"
    assert env["VLLM_NEURON_DISABLE_WARMUP_COMPILE"] == "1" and env["NEURON_LIBTORCH_DISABLE_GRAPH_CAPTURE_BACKEND"] == "1"
    assert "NEURON_COMPILED_ARTIFACTS" not in env and "VLLM_NEURON_FRAMEWORK" not in env
    serving = kubectl_json("get", "pods", "-n", namespace, "-l", "app.kubernetes.io/component=serving")["items"]
    assert serving and all(p["spec"]["nodeName"].startswith("trn2-48xlarge-") for p in serving)


def test_a_cache_miss_while_serving_is_stalled_with_the_key(namespace, artifact_store):
    message = "compile-cache miss serving artifact: RuntimeError: local compile cache miss for key 0123abcd"
    nis.apply(namespace, plugin_service("miss", runtime={"stack": STACK, "podAnnotations": {
        "sim.neuron-operator.io/serve-fail-exit-code": "6", "sim.neuron-operator.io/serve-fail-message": message}}))
    obj = nis.wait_condition(namespace, "miss", "Stalled", reason="ArtifactCacheMiss", timeout=120)
    stalled = nis.cond(obj, "Stalled")["message"]
    key = obj["status"]["artifact"]["key"]
    assert f"artifact {key}" in stalled and "0123abcd" in stalled
    assert "Serving pods never compile on Neuron nodes" in stalled
    assert obj["status"]["phase"] == "Failed"
    assert nis.cond(obj, "Compiled")["status"] == "True"  # the compile itself succeeded
    events = kubectl_json("get", "events", "-n", namespace, "--field-selector", "involvedObject.name=miss")["items"]
    assert "ArtifactCacheMiss" in {e["reason"] for e in events}


def test_trn1_asking_for_the_new_stack_is_rejected_naming_the_stacks_that_fit(namespace):
    result = nis.apply(namespace, nis.service("old", runtime={"stack": STACK}), check=False)
    assert result.returncode != 0
    assert f"spec.runtime.stack: {STACK} runs on trn2, trn3 instance types only" in result.stderr
    assert "trn1: neuron-2.23-vllm-0.7.2" in result.stderr
    assert kubectl("get", "nis", "-n", namespace, "-o", "name").stdout.strip() == ""


def test_trn3_uses_the_vllm_neuron_stack_by_default(namespace, artifact_store):
    nis.apply(namespace, nis.service("gpt-oss", instanceType="trn3.48xlarge", tensorParallelSize=64,
                                     model={"uri": "hf://openai/gpt-oss-120b"},
                                     engine={"maxNumSeqs": 16, "maxModelLen": 8192,
                                             "overrideNeuronConfig": {"quantization": "mxfp4"}}))
    obj = nis.wait_ready(namespace, "gpt-oss")
    assert obj["status"]["artifact"]["stack"] == STACK
    engine = nis.deployment(namespace, "gpt-oss")["spec"]["template"]["spec"]["containers"][0]
    assert engine["resources"]["limits"][NEURON] == "16"
