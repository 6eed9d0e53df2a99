"""Multi-node tensor parallelism on the real control plane: replica groups as StatefulSets over a headless
Service, consistent ranks, gang recreation on member loss (pod or node), whole-group scaling, and a clear
condition when a group cannot be placed."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest
import yaml

from . import nis
from .kube import kubectl, kubectl_json, wait_until

pytestmark = pytest.mark.usefixtures("operator")
ROOT = pathlib.Path(__file__).resolve().parents[2]
EXTRA_NODES = 2  # the default cluster has 2 trn1.32xlarge; groups of 2 plus spares need more


def fake_nodes(spec: str) -> list[dict]:
    out = subprocess.run([sys.executable, str(ROOT / "hack" / "fake_nodes.py"), "--nodes", spec, "--cpu-nodes", "0"],
                         capture_output=True, text=True, check=True).stdout
    return [n for n in yaml.safe_load_all(out) if n]


@pytest.fixture
def spare_trn1_nodes(cluster):
    yield from _spare_nodes(EXTRA_NODES)


@pytest.fixture
def more_spare_trn1_nodes(cluster):
    yield from _spare_nodes(4)  # two groups of two, plus two free nodes for their recompile


def _spare_nodes(count: int):
    """Extra simulated trn1.32xlarge nodes (named -x<i>); every default node is restored afterwards."""
    extra = fake_nodes(f"trn1.32xlarge={count}")
    for node in extra:
        node["metadata"]["name"] = node["metadata"]["name"].replace("trn1-32xlarge-", "trn1-32xlarge-x")
        node["metadata"]["labels"]["kubernetes.io/hostname"] = node["metadata"]["name"]
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(extra))
    yield [n["metadata"]["name"] for n in extra]
    kubectl("delete", "node", *[n["metadata"]["name"] for n in extra], "--wait=false", check=False)
    default = fake_nodes("trn1.32xlarge=2")  # a test may have deleted one: recreate
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(default))


def group_service(name: str, **overrides):
    # 2 nodes × 32 NeuronCores: each rank holds a whole trn1.32xlarge (16 devices, 8 EFA).
    return nis.service(name, tensorParallelSize=64, nodesPerReplica=2, **overrides)


def group_pods(namespace: str, name: str, group: int | None = None) -> list[dict]:
    selector = f"inference.neuron-operator.io/service={name},app.kubernetes.io/component=serving"
    if group is not None:
        selector += f",inference.neuron-operator.io/group-index={group}"
    pods = kubectl_json("get", "pods", "-n", namespace, "-l", selector)["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def env_of(pod: dict) -> dict[str, object]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in pod["spec"]["containers"][0]["env"]}


def test_group_becomes_ready_with_consistent_ranks(namespace, artifact_store, spare_trn1_nodes):
    nis.apply(namespace, group_service("big"))
    obj = nis.wait_ready(namespace, "big", timeout=180)
    assert (obj["status"]["replicas"], obj["status"]["readyReplicas"]) == (1, 1)
    # experimental upstream on this stack: said in the status and once as a Warning Event
    [warning] = obj["status"]["warnings"]
    assert "multi-node tensor parallelism on neuron-2.23-vllm-0.7.2 is experimental upstream" in warning
    events = kubectl_json("get", "events", "-n", namespace, "--field-selector",
                          "involvedObject.name=big,reason=ExperimentalFeature")["items"]
    assert [(e["type"], e["message"]) for e in events] == [("Warning", warning)]

    [job] = nis.compile_jobs(namespace)
    assert (job["spec"]["completionMode"], job["spec"]["completions"]) == ("Indexed", 2)

    pods = sorted(group_pods(namespace, "big"), key=lambda p: p["metadata"]["name"])
    assert [p["metadata"]["name"] for p in pods] == ["big-g0-0", "big-g0-1"]
    assert len({p["spec"]["nodeName"] for p in pods}) == 2  # one rank per node
    leader = f"big-g0-0.big-peers.{namespace}.svc.cluster.local"
    for rank, pod in enumerate(pods):
        assert pod["metadata"]["labels"]["apps.kubernetes.io/pod-index"] == str(rank)
        env = env_of(pod)
        assert env["NEURON_RANK_ID"] == {"fieldRef": {"apiVersion": "v1",
                                                      "fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}}
        assert env["WORLD_SIZE"] == "2" and env["NEURON_LOCAL_TP"] == "32"
        assert env["MASTER_ADDR"] == leader and env["NEURON_RT_ROOT_COMM_ID"] == f"{leader}:63423"
        assert env["ENABLE_NEURON_MULTI_NODE"] == "true" and env["FI_PROVIDER"] == "efa"
        limits = pod["spec"]["containers"][0]["resources"]["limits"]
        assert (limits["aws.amazon.com/neuron"], limits["vpc.amazonaws.com/efa"]) == ("16", "8")

    headless = kubectl_json("get", "service", "big-peers", "-n", namespace)
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True
    client = kubectl_json("get", "service", "big", "-n", namespace)
    assert client["spec"]["selector"]["apps.kubernetes.io/pod-index"] == "0"  # leaders only


def _uids(namespace: str, name: str, group: int = 0) -> set[str]:
    return {p["metadata"]["uid"] for p in group_pods(namespace, name, group)}


def _wait_group_recreated(namespace: str, name: str, before: set[str], timeout: float = 180):
    def recreated():
        obj = nis.get(namespace, name)
        uids = _uids(namespace, name)
        ready = obj["status"].get("readyReplicas") == obj["spec"]["replicas"]
        return ready and len(uids) == 2 and not (uids & before) and obj
    return wait_until(recreated, timeout=timeout, message="the whole group recreated and ready")


def test_deleting_a_worker_recreates_the_whole_group(namespace, artifact_store, spare_trn1_nodes):
    nis.apply(namespace, group_service("gang"))
    nis.wait_ready(namespace, "gang", timeout=180)
    before = _uids(namespace, "gang")
    kubectl("delete", "pod", "gang-g0-1", "-n", namespace, "--wait=false")
    _wait_group_recreated(namespace, "gang", before)
    events = kubectl_json("get", "events", "-n", namespace, "--field-selector", "reason=GroupRecreated")["items"]
    assert events and "lost" in events[0]["message"]


def test_losing_a_node_recreates_the_whole_group(namespace, artifact_store, spare_trn1_nodes):
    nis.apply(namespace, group_service("nodeloss"))
    nis.wait_ready(namespace, "nodeloss", timeout=180)
    before = _uids(namespace, "nodeloss")
    worker = [p for p in group_pods(namespace, "nodeloss") if p["metadata"]["name"].endswith("-1")][0]
    kubectl("delete", "node", worker["spec"]["nodeName"], "--wait=false")
    # The pod garbage collector removes pods bound to a node that no longer exists; the group comes back on
    # the spare nodes.
    obj = _wait_group_recreated(namespace, "nodeloss", before, timeout=240)
    nodes = {p["spec"]["nodeName"] for p in group_pods(namespace, "nodeloss")}
    assert worker["spec"]["nodeName"] not in nodes and obj["status"]["phase"] == "Ready"


def test_scaling_adds_and_removes_whole_groups(namespace, artifact_store, spare_trn1_nodes):
    nis.apply(namespace, group_service("elastic"))
    nis.wait_ready(namespace, "elastic", timeout=180)
    kubectl("scale", "-n", namespace, "nis/elastic", "--replicas=2")
    obj = wait_until(lambda: (o := nis.get(namespace, "elastic"))["status"].get("readyReplicas") == 2 and o,
                     timeout=180, message="two ready groups")
    assert {p["metadata"]["name"] for p in group_pods(namespace, "elastic")} == {
        "elastic-g0-0", "elastic-g0-1", "elastic-g1-0", "elastic-g1-1"}
    assert obj["status"]["phase"] == "Ready"
    kubectl("scale", "-n", namespace, "nis/elastic", "--replicas=1")
    wait_until(lambda: not kubectl("get", "statefulset", "elastic-g1", "-n", namespace, check=False).stdout,
               timeout=60, message="group 1 StatefulSet removed")
    wait_until(lambda: {p["metadata"]["name"] for p in group_pods(namespace, "elastic")} == {
        "elastic-g0-0", "elastic-g0-1"}, timeout=90, message="group 1 pods gone")
    nis.wait_ready(namespace, "elastic")
    assert len(nis.compile_jobs(namespace)) == 1  # scaling never recompiles


def test_not_enough_nodes_is_reported(namespace, artifact_store):
    # 3 ranks on trn2.48xlarge (16 devices each) but the cluster has only two such nodes.
    nis.apply(namespace, nis.service("toolarge", instanceType="trn2.48xlarge", tensorParallelSize=192,
                                     nodesPerReplica=3))
    def reported():
        obj = nis.get(namespace, "toolarge")
        available = nis.cond(obj, "Available")
        return available and available["status"] == "False" and "unschedulable" in available["message"] and obj
    obj = wait_until(reported, timeout=120, message="Available=False naming the missing capacity")
    message = nis.cond(obj, "Available")["message"]
    assert "aws.amazon.com/neuron" in message or "didn't match pod anti-affinity" in message or "nodes are available" in message
    assert nis.cond(obj, "Ready")["status"] == "False"


def test_compile_input_change_rolls_one_group_at_a_time(namespace, artifact_store, more_spare_trn1_nodes):
    nis.apply(namespace, group_service("rolling", replicas=2))
    old_key = nis.wait_ready(namespace, "rolling", timeout=240)["status"]["artifact"]["key"]
    nis.apply(namespace, group_service("rolling", replicas=2, engine={"maxNumSeqs": 4, "maxModelLen": 4096}))

    compiling = nis.wait_condition(namespace, "rolling", "Compiled", "False", timeout=60)
    new_key = compiling["status"]["artifact"]["key"]
    assert new_key != old_key and compiling["status"]["servingArtifact"]["key"] == old_key
    assert nis.cond(compiling, "Ready")["status"] == "True"

    # From now until both groups serve the new artifact, at least one whole group keeps serving.
    lowest = 2
    def rolled():
        nonlocal lowest
        obj = nis.get(namespace, "rolling")
        lowest = min(lowest, obj["status"].get("readyReplicas", 0))
        done = (obj["status"].get("phase") == "Ready" and obj["status"].get("servingArtifact", {}).get("key") == new_key
                and obj["status"].get("observedGeneration") == obj["metadata"]["generation"])
        return done and obj
    wait_until(rolled, timeout=300, interval=0.2, message="both groups on the new artifact")
    assert lowest >= 1, "both groups were down at the same time"
    events = kubectl_json("get", "events", "-n", namespace, "--field-selector", "reason=GroupRolled")["items"]
    assert sum(e.get("count", 1) for e in events) == 2
    keys = {p["metadata"]["labels"]["inference.neuron-operator.io/artifact-key"] for p in group_pods(namespace, "rolling")}
    assert keys == {new_key}
