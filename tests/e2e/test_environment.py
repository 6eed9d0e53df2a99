"""Proofs that the local control plane is the real thing: scheduling of Neuron extended resources, Jobs,
garbage collection, CRD CEL validation, RBAC with TokenRequest tokens, and helm."""

from __future__ import annotations

import json
import pathlib
import subprocess

import yaml

from neuron_operator.catalog import load_catalog

from .kube import condition, kubectl, kubectl_json, wait_until

TESTDATA = pathlib.Path(__file__).parent / "testdata"
NEURON_TOLERATION = {"key": "aws.amazon.com/neuron", "operator": "Exists", "effect": "NoSchedule"}


def neuron_deployment(name: str, devices: int) -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "tolerations": [NEURON_TOLERATION],
                    "containers": [{
                        "name": "main",
                        "image": "example.invalid/neuron:1",
                        "resources": {"limits": {"aws.amazon.com/neuron": str(devices)}},
                    }],
                },
            },
        },
    }


def apply(namespace: str, *objects: dict) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(objects))


def test_version_is_stamped(cluster):
    env = (pathlib.Path(__file__).resolve().parents[2] / "hack" / "testenv.env").read_text()
    expected = next(line.split("=", 1)[1] for line in env.splitlines() if line.startswith("K8S_VERSION="))
    version = json.loads(kubectl("get", "--raw", "/version").stdout)
    assert version["gitVersion"] == f"v{expected}", version
    assert (version["major"], version["minor"]) == ("1", expected.split(".")[1]), version


def test_kubectl_and_helm_match_the_server(cluster):
    versions = json.loads(kubectl("version", "-o", "json").stdout)
    client, server = versions["clientVersion"], versions["serverVersion"]
    assert (client["major"], client["minor"]) == (server["major"], server["minor"]), versions
    helm = subprocess.run(["helm", "version", "--template", "{{.Version}}"], capture_output=True, text=True, check=True)
    assert helm.stdout.startswith(("v3.", "v4.")), helm.stdout


def test_simulated_neuron_nodes_advertise_catalog_capacity(cluster):
    nodes = kubectl_json("get", "nodes")["items"]
    by_type: dict[str, list[dict]] = {}
    for node in nodes:
        by_type.setdefault(node["metadata"]["labels"]["node.kubernetes.io/instance-type"], []).append(node)
    assert len(by_type["trn1.32xlarge"]) == 2 and len(by_type["trn2.48xlarge"]) == 2
    trn1 = by_type["trn1.32xlarge"][0]
    assert trn1["status"]["allocatable"]["aws.amazon.com/neuron"] == "16"
    assert trn1["status"]["allocatable"]["aws.amazon.com/neuroncore"] == "32"
    assert trn1["status"]["allocatable"]["vpc.amazonaws.com/efa"] == "8"
    assert {"key": "aws.amazon.com/neuron", "value": "true", "effect": "NoSchedule"} in trn1["spec"]["taints"]
    assert "vpc.amazonaws.com/efa" not in by_type["inf2.xlarge"][0]["status"]["allocatable"]
    assert all(condition(n, "Ready")["status"] == "True" for n in nodes)


def test_sixteen_devices_schedule_on_a_sixteen_device_node(namespace):
    apply(namespace, neuron_deployment("fits", 16))
    kubectl("wait", "-n", namespace, "--for=condition=Available", "deployment/fits", "--timeout=90s", timeout=100)
    pod = kubectl_json("get", "pods", "-n", namespace, "-l", "app=fits")["items"][0]
    node = kubectl_json("get", "node", pod["spec"]["nodeName"])
    # Any catalog type with 16 devices will do (trn1.32xlarge, trn2.48xlarge, trn3.48xlarge ...); the scheduler picks.
    sixteen = {t.name for t in load_catalog().instance_types.values() if t.devices == 16}
    assert node["metadata"]["labels"]["node.kubernetes.io/instance-type"] in sixteen
    assert node["status"]["allocatable"]["aws.amazon.com/neuron"] == "16"


def test_seventeen_devices_stay_pending_with_a_reason(namespace):
    apply(namespace, neuron_deployment("too-big", 17))

    def failed_scheduling():
        events = kubectl_json("get", "events", "-n", namespace, "--field-selector", "reason=FailedScheduling")["items"]
        return [e for e in events if "aws.amazon.com/neuron" in e.get("message", "")]

    events = wait_until(failed_scheduling, timeout=60, message="FailedScheduling naming aws.amazon.com/neuron")
    assert "Insufficient aws.amazon.com/neuron" in events[0]["message"]
    pod = kubectl_json("get", "pods", "-n", namespace, "-l", "app=too-big")["items"][0]
    assert pod["status"]["phase"] == "Pending" and not pod["spec"].get("nodeName")


def test_job_pod_succeeds_and_job_completes(namespace):
    job = {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "once"},
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": "example.invalid/job:1"}],
        }}},
    }
    apply(namespace, job)
    kubectl("wait", "-n", namespace, "--for=condition=Complete", "job/once", "--timeout=90s", timeout=100)
    pods = kubectl_json("get", "pods", "-n", namespace, "-l", "job-name=once")["items"]
    assert [p["status"]["phase"] for p in pods] == ["Succeeded"]


def test_simulated_failure_stage_fails_job_pods(namespace):
    """Our kwok stage (hack/kwok-stages-neuron.yaml) turns an annotated Job pod into a real failure."""
    annotations = {"sim.neuron-operator.io/fail-reason": "OOMKilled", "sim.neuron-operator.io/fail-exit-code": "137",
                   "pod-complete.stage.kwok.x-k8s.io/weight": "0"}
    job = {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "doomed"},
        "spec": {"backoffLimit": 0, "template": {"metadata": {"annotations": annotations}, "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": "example.invalid/job:1"}],
        }}},
    }
    apply(namespace, job)
    kubectl("wait", "-n", namespace, "--for=condition=Failed", "job/doomed", "--timeout=90s", timeout=100)
    pod = kubectl_json("get", "pods", "-n", namespace, "-l", "job-name=doomed")["items"][0]
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["reason"], terminated["exitCode"]) == ("OOMKilled", 137)


def test_deleting_an_owner_garbage_collects_children(namespace):
    owner = kubectl_json("create", "configmap", "owner", "-n", namespace, "--from-literal=a=b")
    child = {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "child", "ownerReferences": [{
            "apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"],
        }]},
    }
    apply(namespace, child)
    kubectl("delete", "configmap", "owner", "-n", namespace)
    wait_until(lambda: kubectl("get", "configmap", "child", "-n", namespace, check=False).returncode != 0,
               timeout=60, message="garbage collection of the child ConfigMap")


CEL_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.testenv.neuron-operator.io"},
    "spec": {
        "group": "testenv.neuron-operator.io", "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
            "type": "object",
            "properties": {"spec": {
                "type": "object",
                "properties": {"min": {"type": "integer"}, "max": {"type": "integer"}},
                "x-kubernetes-validations": [{"rule": "self.min <= self.max", "message": "spec.min must not exceed spec.max"}],
            }},
        }}}],
    },
}


def test_crd_cel_rule_rejects_bad_object(namespace):
    kubectl("apply", "-f", "-", input=yaml.safe_dump(CEL_CRD))
    kubectl("wait", "--for=condition=Established", "crd/widgets.testenv.neuron-operator.io", "--timeout=60s")
    good = {"apiVersion": "testenv.neuron-operator.io/v1", "kind": "Widget", "metadata": {"name": "ok"},
            "spec": {"min": 1, "max": 2}}
    bad = {**good, "metadata": {"name": "bad"}, "spec": {"min": 3, "max": 2}}
    wait_until(lambda: kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(good), check=False).returncode == 0,
               timeout=30, message="CRD served")
    proc = kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(bad), check=False)
    assert proc.returncode != 0
    assert "spec.min must not exceed spec.max" in proc.stderr


def token_only_args(cluster, token: str) -> tuple[str, ...]:
    """kubectl flags that authenticate with nothing but the token (no admin client certificate)."""
    server = kubectl("config", "view", "-o", "jsonpath={.clusters[0].cluster.server}").stdout
    return ("--kubeconfig", "/dev/null", "--server", server,
            "--certificate-authority", str(cluster["dir"] / "pki" / "ca.crt"), "--token", token)


def test_rbac_denies_then_allows_a_service_account_token(cluster, namespace):
    kubectl("create", "serviceaccount", "reader", "-n", namespace)
    # kubectl create token uses the TokenRequest API.
    token = kubectl("create", "token", "reader", "-n", namespace, "--duration=10m").stdout.strip()
    as_reader = token_only_args(cluster, token)

    def list_configmaps():
        return kubectl("get", "configmaps", "-n", namespace, *as_reader, check=False)

    denied = list_configmaps()
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower(), denied.stderr
    kubectl("create", "role", "cm-reader", "-n", namespace, "--verb=get,list", "--resource=configmaps")
    kubectl("create", "rolebinding", "cm-reader", "-n", namespace, "--role=cm-reader",
            f"--serviceaccount={namespace}:reader")
    wait_until(lambda: list_configmaps().returncode == 0, timeout=30, message="RBAC to allow the token")


def test_helm_installs_a_chart(namespace):
    chart = TESTDATA / "tiny-chart"
    proc = subprocess.run(["helm", "install", "tiny", str(chart), "-n", namespace, "--set", "greeting=hi", "--wait"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    data = kubectl_json("get", "configmap", "tiny-tiny", "-n", namespace)["data"]
    assert data == {"greeting": "hi"}
    status = subprocess.run(["helm", "status", "tiny", "-n", namespace, "-o", "json"], capture_output=True, text=True)
    assert json.loads(status.stdout)["info"]["status"] == "deployed"
