"""Golden tests of the pure child builders: examples/llama.yaml -> the exact manifests, no cluster.

Regenerate after an intended change with: UPDATE_GOLDEN=1 python -m pytest tests/unit/test_builders.py
"""

from __future__ import annotations

import json
import os
import pathlib

import pytest
import yaml

from neuron_operator.api.spec import parse_spec
from neuron_operator.builders import (build_compile_job, build_pod_disruption_budget, build_service,
                                      build_serving_deployment)
from neuron_operator import constants as C
from neuron_operator.builders.multinode import build_group_statefulset
from neuron_operator.catalog import load_catalog
from neuron_operator.config import OperatorConfig
from neuron_operator.plan import ArtifactStore, plan_for
from neuron_operator.render import render_documents

ROOT = pathlib.Path(__file__).resolve().parents[2]
GOLDEN = pathlib.Path(__file__).parent / "golden"
UID = "11111111-2222-3333-4444-555555555555"


def plan_from(spec: dict, name: str = "llama", config: OperatorConfig | None = None):
    return plan_for(name, "ml", UID, parse_spec(spec), load_catalog(), config or OperatorConfig())


def example_spec() -> dict:
    return yaml.safe_load((ROOT / "examples" / "llama.yaml").read_text())["spec"]


def check_golden(name: str, objects: list[dict]) -> None:
    text = yaml.safe_dump_all(objects, sort_keys=False)
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") or not path.exists():
        path.write_text(text)
    assert text == path.read_text(), f"{name} drifted; rerun with UPDATE_GOLDEN=1 if intended"


def test_llama_example_children_golden():
    plan = plan_from(example_spec())
    check_golden("llama-children.yaml", [build_compile_job(plan), build_serving_deployment(plan),
                                         build_service(plan), build_pod_disruption_budget(plan)])


def test_builders_are_pure():
    plan = plan_from(example_spec())
    assert build_serving_deployment(plan) == build_serving_deployment(plan)
    first = build_compile_job(plan)
    first["spec"]["template"]["spec"]["containers"][0]["env"].clear()
    assert build_compile_job(plan)["spec"]["template"]["spec"]["containers"][0]["env"]


@pytest.mark.parametrize("instance,tp,devices", [
    ("trn1.32xlarge", 32, 16), ("trn1.32xlarge", 8, 4), ("trn1.32xlarge", 2, 1), ("trn1.32xlarge", 16, 8),
    ("trn2.48xlarge", 64, 16), ("trn2.48xlarge", 16, 4), ("inf2.48xlarge", 24, 12), ("inf2.48xlarge", 8, 4),
    ("inf2.xlarge", 2, 1),
])
def test_devices_are_derived_from_tp_and_catalog(instance, tp, devices):
    spec = {**example_spec(), "instanceType": instance, "tensorParallelSize": tp}
    plan = plan_from(spec)
    container = build_serving_deployment(plan)["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["aws.amazon.com/neuron"] == str(devices)
    assert container["resources"]["requests"]["aws.amazon.com/neuron"] == str(devices)
    assert "vpc.amazonaws.com/efa" not in container["resources"]["limits"]  # single node: no EFA claimed


def test_allow_surge_changes_the_rollout_strategy():
    spec = example_spec()
    assert build_serving_deployment(plan_from(spec))["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    spec["runtime"] = {"allowSurge": True}
    assert build_serving_deployment(plan_from(spec))["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}


def test_s3_store_downloads_to_a_local_dir():
    spec = {**example_spec(), "artifacts": {"s3": {"uri": "s3://bucket/compiled"}}}
    plan = plan_from(spec)
    container = build_serving_deployment(plan)["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["NEURON_OPERATOR_ARTIFACT_STORE"] == "s3://bucket/compiled"
    assert env["NEURON_COMPILED_ARTIFACTS"] == f"/var/lib/neuron-runtime/artifacts/{plan.key}"
    assert plan.store.artifact_location(plan.key) == f"s3://bucket/compiled/{plan.key}"


def test_user_env_cannot_override_the_runtime_contract():
    spec = {**example_spec(), "runtime": {"env": [{"name": "NEURON_OPERATOR_ARTIFACT_KEY", "value": "evil"},
                                                  {"name": "FI_LOG_LEVEL", "value": "warn"}]}}
    plan = plan_from(spec)
    env = build_serving_deployment(plan)["spec"]["template"]["spec"]["containers"][0]["env"]
    values = [e.get("value") for e in env if e["name"] == "NEURON_OPERATOR_ARTIFACT_KEY"]
    assert values == [plan.key]
    assert {"name": "FI_LOG_LEVEL", "value": "warn"} in env


def test_pvc_model_is_mounted_read_only():
    spec = {**example_spec(), "model": {"uri": "pvc://models/llama-3.1-8b"}}
    pod = build_serving_deployment(plan_from(spec))["spec"]["template"]["spec"]
    assert {"name": "model-0", "persistentVolumeClaim": {"claimName": "models", "readOnly": True}} in pod["volumes"]


def test_default_store_from_operator_config():
    spec = example_spec()
    spec.pop("artifacts")
    plan = plan_from(spec, config=OperatorConfig(default_artifact_store="s3://team-bucket/neuron"))
    assert plan.store == ArtifactStore(kind="s3", uri="s3://team-bucket/neuron")


def test_render_matches_the_builders():
    text = render_documents(yaml.safe_load_all((ROOT / "examples" / "llama.yaml").read_text()), load_catalog(),
                            OperatorConfig(), "ml")
    kinds = [d["kind"] for d in yaml.safe_load_all(text)]
    assert kinds == ["Job", "Deployment", "Service", "PodDisruptionBudget"]


def multinode_spec() -> dict:
    return yaml.safe_load((ROOT / "examples" / "llama-405b-multinode.yaml").read_text())["spec"]


def test_multinode_example_children_golden():
    text = render_documents(yaml.safe_load_all((ROOT / "examples" / "llama-405b-multinode.yaml").read_text()),
                            load_catalog(), OperatorConfig(), "ml")
    check_golden("llama-405b-multinode-children.yaml", list(yaml.safe_load_all(text)))


def test_multinode_ranks_share_one_leader_and_request_whole_nodes():
    from neuron_operator.builders.multinode import build_group_statefulset

    plan = plan_from(multinode_spec(), name="big")
    sts = build_group_statefulset(plan, 1)
    assert sts["metadata"]["name"] == "big-g1" and sts["spec"]["replicas"] == 4
    assert sts["spec"]["updateStrategy"] == {"type": "OnDelete"}
    container = sts["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MASTER_ADDR"] == "big-g1-0.big-peers.ml.svc.cluster.local"
    assert env["NEURON_OPERATOR_PEER_ADDRESSES"].split(",")[3] == "big-g1-3.big-peers.ml.svc.cluster.local"
    assert env["NEURON_LOCAL_TP"] == "32" and env["WORLD_SIZE"] == "4"
    names = [e["name"] for e in container["env"]]
    # $(NEURON_RANK_ID) in NEURON_COMPILED_ARTIFACTS only expands if the rank is defined earlier
    assert names.index("NEURON_RANK_ID") < names.index("NEURON_COMPILED_ARTIFACTS")
    assert container["resources"]["limits"]["aws.amazon.com/neuron"] == "16"
    assert container["resources"]["limits"]["vpc.amazonaws.com/efa"] == "8"
    affinity = sts["spec"]["template"]["spec"]["affinity"]
    assert affinity["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]["topologyKey"] == \
        "eks.amazonaws.com/nodegroup"


# --- logical NeuronCore config: pods go only to nodes at the LNC the artifact was compiled for ---------------------


def _node_affinity_expressions(pod_spec: dict) -> list[dict]:
    terms = pod_spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert len(terms) == 1
    return terms[0]["matchExpressions"]


def _trn2(**extra) -> dict:
    return {"model": {"uri": "hf://meta-llama/Llama-3.1-8B-Instruct"}, "instanceType": "trn2.48xlarge",
            "tensorParallelSize": 64, "artifacts": {"pvc": {"claimName": "neuron-artifacts"}}, **extra}


def test_default_lnc_avoids_nodes_labelled_with_the_other_lnc():
    plan = plan_from(_trn2())
    pod = build_serving_deployment(plan)["spec"]["template"]["spec"]
    assert _node_affinity_expressions(pod) == [{"key": C.LNC_NODE_LABEL, "operator": "NotIn", "values": ["1"]}]
    assert plan.devices_per_pod == 16  # 64 logical cores at LNC=2


def test_lnc1_needs_nodes_labelled_lnc1_and_counts_physical_cores():
    plan = plan_from(_trn2(tensorParallelSize=128, logicalNeuronCoreConfig=1))
    assert plan.devices_per_pod == 16 and plan.compile_spec.lnc == 1
    pod = build_serving_deployment(plan)["spec"]["template"]["spec"]
    assert _node_affinity_expressions(pod) == [{"key": C.LNC_NODE_LABEL, "operator": "In", "values": ["1"]}]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert json.loads(env[C.ENV_COMPILE_SPEC])["lnc"] == 1
    # half the devices at LNC=1 for the same degree: 64 ranks on 8 devices of 8 physical cores
    assert plan_from(_trn2(logicalNeuronCoreConfig=1)).devices_per_pod == 8


def test_lnc_is_a_compile_input():
    assert plan_from(_trn2(logicalNeuronCoreConfig=1)).key != plan_from(_trn2()).key
    assert plan_from(_trn2(logicalNeuronCoreConfig=2)).key == plan_from(_trn2()).key  # the default, said explicitly


def test_single_lnc_types_get_no_node_affinity():
    pod = build_serving_deployment(plan_from(example_spec()))["spec"]["template"]["spec"]
    assert "affinity" not in pod


def test_multinode_merges_lnc_node_affinity_with_one_pod_per_node():
    plan = plan_from(_trn2(tensorParallelSize=128, nodesPerReplica=2))
    sts = build_group_statefulset(plan, 0)
    affinity = sts["spec"]["template"]["spec"]["affinity"]
    assert set(affinity) == {"nodeAffinity", "podAntiAffinity"}
    assert not plan.compile_placement.on_cpu  # the 2.23 stack compiles on the target nodes, so at their LNC too
    job_affinity = build_compile_job(plan)["spec"]["template"]["spec"]["affinity"]
    assert set(job_affinity) == {"nodeAffinity", "podAntiAffinity"}
