"""Print the simulated cluster's Node manifests (YAML stream) from the Neuron instance catalog.

Each Neuron node advertises what the Neuron device plugin and the EFA device plugin would report on the real
instance (aws.amazon.com/neuron devices, aws.amazon.com/neuroncore cores, vpc.amazonaws.com/efa), carries the
usual EKS labels and the Neuron taint; kwok then keeps them Ready. The catalog's untainted CPU nodes (a small
system node and a larger one for CPU compiles) run everything else.
"""

from __future__ import annotations

import argparse
import sys

import yaml

from neuron_operator.catalog import (
    EFA_RESOURCE,
    NEURON_CORE_RESOURCE,
    NEURON_DEVICE_RESOURCE,
    CpuNode,
    InstanceType,
    load_catalog,
)

ZONES = ("us-west-2a", "us-west-2b", "us-west-2c", "us-west-2d")
NEURON_TAINT = {"key": "aws.amazon.com/neuron", "value": "true", "effect": "NoSchedule"}
KWOK_ANNOTATIONS = {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"}


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


def neuron_node(instance: InstanceType, index: int, tag: str = "") -> dict:
    short = instance.name.replace(".", "-")
    name = f"{short}-{tag}{index}"
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


def cpu_node(node: CpuNode) -> dict:
    capacity = {"cpu": str(node.vcpu), "memory": f"{node.memory_gib}Gi", "pods": "110", "ephemeral-storage": "500Gi"}
    group = "ng-" + node.instance_type.replace(".", "-")
    return _node(node.name, _labels(node.name, node.instance_type, ZONES[0], group), capacity, [])


def cluster_nodes(spec: list[tuple[str, int]], cpu_nodes: int | None = None, tag: str = "") -> list[dict]:
    """Neuron nodes per ``spec`` plus the first ``cpu_nodes`` CPU nodes of the catalog (all when None); ``tag``
    goes into the Neuron node names so extra nodes never replace the default ones."""
    catalog = load_catalog()
    nodes = [neuron_node(catalog.get(t), i, tag) for t, count in spec for i in range(count)]
    nodes += [cpu_node(n) for n in catalog.cpu_nodes[:cpu_nodes]]
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
    parser.add_argument("--cpu-nodes", type=int, default=None, help="how many of the catalog's CPU nodes (default: all)")
    parser.add_argument("--tag", default="", help="infix of the Neuron node names, e.g. 'bench-' -> inf2-xlarge-bench-0")
    args = parser.parse_args(argv)
    spec = _parse_spec(args.nodes) if args.nodes else list(load_catalog().default_cluster)
    yaml.safe_dump_all(cluster_nodes(spec, args.cpu_nodes, args.tag), sys.stdout, sort_keys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
