"""Logical NeuronCore config on the real scheduler: a service at LNC=1 lands only on a trn2 node labelled LNC=1 and
its engine is told LNC=1; a default (LNC=2) service never lands there; the LNC is part of the compile key."""

from __future__ import annotations

import pytest

from neuron_operator import constants as C

from . import nis
from .kube import kubectl, kubectl_json

pytestmark = pytest.mark.usefixtures("operator")

STACK = "neuron-2.32-vllm-neuron-0.24"
LNC1_NODE = "trn2-48xlarge-1"


@pytest.fixture
def lnc1_node():
    """One of the two simulated trn2 nodes runs at LNC=1 for this test, as its node group's launch template would."""
    kubectl("label", "node", LNC1_NODE, f"{C.LNC_NODE_LABEL}=1", "--overwrite")
    yield LNC1_NODE
    kubectl("label", "node", LNC1_NODE, f"{C.LNC_NODE_LABEL}-")


def service(name: str, **overrides):
    spec = {"instanceType": "trn2.48xlarge", "runtime": {"stack": STACK},
            "model": {"uri": "hf://meta-llama/Llama-3.1-8B-Instruct"}, **overrides}
    return nis.service(name, **spec)


def serving_pods(namespace: str, name: str) -> list[dict]:
    return kubectl_json("get", "pods", "-n", namespace, "-l",
                        f"{C.LABEL_COMPONENT}={C.COMPONENT_SERVING},{C.LABEL_INSTANCE}={name}")["items"]


def engine_env(pod: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}


def test_pods_only_meet_nodes_at_their_lnc(namespace, artifact_store, lnc1_node):
    # 32 ranks at LNC=1 are 4 devices (8 physical cores each); at the default LNC=2 the same TP would be 8.
    nis.apply(namespace, service("lnc1", tensorParallelSize=32, logicalNeuronCoreConfig=1))
    nis.apply(namespace, service("lnc2", tensorParallelSize=16, replicas=2))
    lnc1 = nis.wait_ready(namespace, "lnc1")
    lnc2 = nis.wait_ready(namespace, "lnc2")
    assert lnc1["status"]["artifact"]["key"] != lnc2["status"]["artifact"]["key"]

    [pod] = serving_pods(namespace, "lnc1")
    assert pod["spec"]["nodeName"] == lnc1_node
    assert pod["spec"]["containers"][0]["resources"]["limits"][C.NEURON_TAINT_KEY] == "4"
    assert engine_env(pod)["NEURON_LOGICAL_NC_CONFIG"] == "1"

    pods = serving_pods(namespace, "lnc2")
    assert len(pods) == 2 and all(p["spec"]["nodeName"] != lnc1_node for p in pods), [
        p["spec"]["nodeName"] for p in pods]
    assert all(engine_env(p)["NEURON_LOGICAL_NC_CONFIG"] == "2" for p in pods)
