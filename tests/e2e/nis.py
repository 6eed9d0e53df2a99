"""Helpers to create and inspect NeuronInferenceServices in e2e tests."""

from __future__ import annotations

import copy
from typing import Any, Optional

import yaml

from .kube import condition, kubectl, kubectl_json, wait_until

GROUP_VERSION = "inference.neuron-operator.io/v1alpha1"
# kwok simulation knobs passed through spec.runtime.podAnnotations (see hack/kwok-stages-neuron.yaml)
SLOW_COMPILE = {"pod-complete.stage.kwok.x-k8s.io/delay": "8s", "pod-complete.stage.kwok.x-k8s.io/jitter-delay": "8s"}


def failing_compile(reason: str = "OOMKilled", exit_code: int = 137, message: str = "") -> dict[str, str]:
    annotations = {"sim.neuron-operator.io/fail-reason": reason, "sim.neuron-operator.io/fail-exit-code": str(exit_code),
                   "pod-complete.stage.kwok.x-k8s.io/weight": "0"}
    if message:
        annotations["sim.neuron-operator.io/fail-message"] = message
    return annotations


def service(name: str, claim: str = "artifacts", **spec_overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": {"uri": "hf://meta-llama/Llama-3.1-8B-Instruct"},
        "instanceType": "trn1.32xlarge",
        # TP 8 = 4 of a trn1.32xlarge's 16 devices, so several services fit the two simulated nodes.
        "tensorParallelSize": 8,
        "replicas": 1,
        "engine": {"maxNumSeqs": 8, "maxModelLen": 4096},
        "artifacts": {"pvc": {"claimName": claim}},
    }
    spec.update(copy.deepcopy(spec_overrides))
    return {"apiVersion": GROUP_VERSION, "kind": "NeuronInferenceService", "metadata": {"name": name}, "spec": spec}


def apply(namespace: str, obj: dict[str, Any], check: bool = True):
    return kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(obj), check=check)


def get(namespace: str, name: str) -> dict[str, Any]:
    return kubectl_json("get", "nis", name, "-n", namespace)


def cond(obj: dict[str, Any], type_: str) -> Optional[dict[str, Any]]:
    return condition(obj, type_)


def wait_condition(namespace: str, name: str, type_: str, status: str = "True", reason: Optional[str] = None,
                   timeout: float = 120) -> dict[str, Any]:
    def check():
        obj = get(namespace, name)
        c = cond(obj, type_)
        ok = c is not None and c["status"] == status and (reason is None or c["reason"] == reason)
        ok = ok and obj.get("status", {}).get("observedGeneration") == obj["metadata"]["generation"]
        return obj if ok else None

    return wait_until(check, timeout=timeout, message=f"nis/{name} {type_}={status}" + (f" ({reason})" if reason else ""))


def wait_ready(namespace: str, name: str, timeout: float = 180) -> dict[str, Any]:
    obj = wait_condition(namespace, name, "Ready", timeout=timeout)
    return wait_until(lambda: (o := get(namespace, name)) and o["status"].get("phase") == "Ready" and o,
                      timeout=timeout, message=f"nis/{name} phase Ready") or obj


def compile_jobs(namespace: str) -> list[dict[str, Any]]:
    return kubectl_json("get", "jobs", "-n", namespace, "-l", "app.kubernetes.io/component=compile")["items"]


def deployment(namespace: str, name: str) -> dict[str, Any]:
    return kubectl_json("get", "deployment", name, "-n", namespace)


def artifact_store_manifests(namespace: str, pv_name: str, claim: str = "artifacts") -> str:
    """A static ReadWriteMany PV pre-bound to a claim: what an RWX store (FSx, EFS) looks like to the operator."""
    return yaml.safe_dump_all([
        {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv_name},
         "spec": {"capacity": {"storage": "1Ti"}, "accessModes": ["ReadWriteMany"], "storageClassName": "",
                  "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": f"/tmp/{pv_name}"},
                  "claimRef": {"namespace": namespace, "name": claim}}},
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": claim, "namespace": namespace},
         "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "", "volumeName": pv_name,
                  "resources": {"requests": {"storage": "1Ti"}}}},
    ])


def create_artifact_store(namespace: str, claim: str = "artifacts") -> str:
    """Create the claim (bound by the real PV controller); returns the PV name for cleanup."""
    pv_name = f"artifacts-{namespace}"[:63]
    kubectl("apply", "-f", "-", input=artifact_store_manifests(namespace, pv_name, claim))
    wait_until(lambda: kubectl_json("get", "pvc", claim, "-n", namespace)["status"].get("phase") == "Bound",
               timeout=60, message=f"{claim} claim Bound")
    return pv_name
