"""Print the simulated cluster's Node manifests (YAML stream) from the Neuron instance catalog.

Each Neuron node advertises what the Neuron device plugin and the EFA device plugin would report on the real
instance (aws.amazon.com/neuron devices, aws.amazon.com/neuroncore cores, vpc.amazonaws.com/efa), carries the
usual EKS labels and the Neuron taint; kwok then keeps them Ready. One untainted CPU node runs everything else.
"""

from __future__ import annotations

import argparse
import sys

import yaml

from neuron_operator.catalog import (
    EFA_RESOURCE,
    NEURON_CORE_RESOURCE,
    NEURON_DEVICE_RESOURCE,
    InstanceType,
    load_catalog,
)

ZONES = ("us-west-2a", "us-west-2b", "us-west-2c", "us-west-2d")
NEURON_TAINT = {"key": "aws.amazon.com/neuron", "value": "true", "effect": "NoSchedule"}
KWOK_ANNOTATIONS = {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"}
CPU_NODE_INSTANCE_TYPE = "m5.2xlarge"  # 8 vCPU, 32 GiB: a plain system node without accelerators


def _labels(name: str, instance_type: str, zone: str, nodegroup: str) -> dict:
    return {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "type": "kwok",
        "node.kubernetes.io/instance-type": instance_type,
        "topology.kubernetes.io/zone": zone,
        "topology.kubernetes.io/region": "us-west-2",
        "eks.amazonaws.com/nodegroup": nodegroup,
    }


def _node(name: str, labels: dict, capacity: dict, taints: list) -> dict:
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels, "annotations": dict(KWOK_ANNOTATIONS)},
        "spec": {"taints": taints} if taints else {},
        "status": {"capacity": capacity, "allocatable": dict(capacity)},
    }
    return node


def neuron_node(instance: InstanceType, index: int) -> dict:
    short = instance.name.replace(".", "-")
    name = f"{short}-{index}"
    capacity = {
        "cpu": str(instance.vcpu),
        "memory": f"{instance.memory_gib}Gi",
        "pods": "110",
        "ephemeral-storage": "1Ti",
        NEURON_DEVICE_RESOURCE: str(instance.devices),
        NEURON_CORE_RESOURCE: str(instance.physical_cores),
    }
    if instance.efa:
        capacity[EFA_RESOURCE] = str(instance.efa)
    # Every node of one instance type shares a zone and node group, like an EKS managed node group would.
    zone = ZONES[sorted(load_catalog().instance_types).index(instance.name) % len(ZONES)]
    labels = _labels(name, instance.name, zone, f"ng-{short}")
    return _node(name, labels, capacity, [dict(NEURON_TAINT)])


def cpu_node(index: int) -> dict:
    name = f"cpu-{index}"
    capacity = {"cpu": "8", "memory": "32Gi", "pods": "110", "ephemeral-storage": "200Gi"}
    return _node(name, _labels(name, CPU_NODE_INSTANCE_TYPE, ZONES[0], "ng-system"), capacity, [])


def cluster_nodes(spec: list[tuple[str, int]], cpu_nodes: int = 1) -> list[dict]:
    catalog = load_catalog()
    nodes = [neuron_node(catalog.get(t), i) for t, count in spec for i in range(count)]
    nodes += [cpu_node(i) for i in range(cpu_nodes)]
    return nodes


def _parse_spec(text: str) -> list[tuple[str, int]]:
    """'trn1.32xlarge=2,inf2.xlarge=1' -> [('trn1.32xlarge', 2), ('inf2.xlarge', 1)]"""
    out = []
    for item in filter(None, (p.strip() for p in text.split(","))):
        name, _, count = item.partition("=")
        out.append((name, int(count or 1)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", help="instance types and counts, e.g. 'trn1.32xlarge=2,inf2.xlarge=1' "
                        "(default: the catalog's defaultCluster)")
    parser.add_argument("--cpu-nodes", type=int, default=1)
    args = parser.parse_args(argv)
    spec = _parse_spec(args.nodes) if args.nodes else list(load_catalog().default_cluster)
    yaml.safe_dump_all(cluster_nodes(spec, args.cpu_nodes), sys.stdout, sort_keys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
