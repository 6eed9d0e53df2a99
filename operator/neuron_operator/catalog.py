"""The Neuron instance catalog: device, NeuronCore, EFA and size figures per EC2 instance type.

Loaded once from ``data/instance_types.yaml`` (figures and their sources live there). Everything that
turns a tensor-parallel degree into devices to request goes through this module, so the operator, the
CRD's CEL rules and the simulated nodes all agree.
"""

from __future__ import annotations

import functools
import importlib.resources
from dataclasses import dataclass, replace
from typing import Optional

import yaml

NEURON_DEVICE_RESOURCE = "aws.amazon.com/neuron"
NEURON_CORE_RESOURCE = "aws.amazon.com/neuroncore"
EFA_RESOURCE = "vpc.amazonaws.com/efa"


@dataclass(frozen=True)
class InstanceType:
    name: str
    family: str
    devices: int
    cores_per_device: int
    lnc: int
    hbm_gib: int
    efa: int
    vcpu: int
    memory_gib: int
    allowed_device_counts: tuple[int, ...]
    tp_degrees: tuple[int, ...]
    lnc_options: tuple[int, ...] = ()  # logical NeuronCore configs the instance supports; () = only ``lnc``

    @property
    def default_lnc(self) -> int:
        """The LNC of a node that sets none (the catalog's ``lnc``); ``lnc`` itself may be a chosen one."""
        return self._default_lnc if self._default_lnc is not None else self.lnc

    _default_lnc: Optional[int] = None

    def at_lnc(self, lnc: Optional[int]) -> "InstanceType":
        """This instance type with ``lnc`` logical cores per NeuronCore group (None or the default: itself)."""
        if lnc is None or lnc == self.lnc:
            return self
        if lnc not in self.lnc_options:
            raise ValueError(f"{self.name} supports LNC {', '.join(map(str, self.lnc_options or (self.lnc,)))}")
        return replace(self, lnc=lnc, _default_lnc=self.default_lnc)

    @property
    def lnc_configurable(self) -> bool:
        return len(self.lnc_options) > 1

    @property
    def physical_cores(self) -> int:
        return self.devices * self.cores_per_device

    @property
    def logical_cores(self) -> int:
        """NeuronCores as NxDI sees them at the node's LNC (trn2: 64 of 128 physical at LNC=2)."""
        return self.physical_cores // self.lnc

    @property
    def logical_cores_per_device(self) -> int:
        return self.cores_per_device // self.lnc

    def devices_for_tp(self, tp_per_node: int) -> int:
        """Whole devices a pod needs to hold ``tp_per_node`` logical cores, rounded up to an allowed count.

        Raises ValueError when the degree does not fit the node.
        """
        if tp_per_node < 1 or tp_per_node > self.logical_cores:
            raise ValueError(
                f"tensor-parallel degree {tp_per_node} per node does not fit {self.name} "
                f"({self.logical_cores} NeuronCores at LNC={self.lnc})"
            )
        needed = -(-tp_per_node // self.logical_cores_per_device)
        for count in self.allowed_device_counts:
            if count >= needed:
                return count
        raise ValueError(f"{needed} devices exceed {self.name}'s {self.devices}")  # unreachable by construction


@dataclass(frozen=True)
class CpuNode:
    """An untainted node of the simulated cluster without accelerators (system pods, CPU compiles)."""

    name: str
    instance_type: str
    vcpu: int
    memory_gib: int


@dataclass(frozen=True)
class Catalog:
    instance_types: dict[str, InstanceType]
    tp_degrees: dict[str, tuple[int, ...]]
    default_cluster: tuple[tuple[str, int], ...]
    cpu_nodes: tuple[CpuNode, ...] = ()

    def types_of_families(self, families) -> tuple[str, ...]:
        """Instance type names whose family is one of ``families``, sorted."""
        return tuple(sorted(n for n, it in self.instance_types.items() if it.family in families))

    def get(self, name: str) -> InstanceType:
        try:
            return self.instance_types[name]
        except KeyError:
            raise KeyError(
                f"unknown instance type {name!r}; known: {', '.join(sorted(self.instance_types))}"
            ) from None

    def instance_at(self, name: str, lnc: Optional[int]) -> InstanceType:
        """``name`` at a service's chosen LNC (None: the type's default)."""
        return self.get(name).at_lnc(lnc)

    @property
    def families(self) -> tuple[str, ...]:
        return tuple(sorted(self.tp_degrees))


def _parse(raw: dict) -> Catalog:
    tp_degrees = {fam: tuple(vals) for fam, vals in raw["tensorParallelDegrees"].items()}
    types = {}
    for name, fields in raw["instanceTypes"].items():
        devices = fields["devices"]
        types[name] = InstanceType(
            name=name,
            family=fields["family"],
            devices=devices,
            cores_per_device=fields["coresPerDevice"],
            lnc=fields["lnc"],
            hbm_gib=fields["hbmGiB"],
            efa=fields["efa"],
            vcpu=fields["vcpu"],
            memory_gib=fields["memoryGiB"],
            allowed_device_counts=tuple(fields.get("allowedDeviceCounts", range(1, devices + 1))),
            tp_degrees=tuple(t for t in tp_degrees[fields["family"]]),
            lnc_options=tuple(fields.get("lncOptions", ())),
        )
    default_cluster = tuple((item["instanceType"], item["count"]) for item in raw["defaultCluster"])
    cpu_nodes = tuple(CpuNode(name=n["name"], instance_type=n["instanceType"], vcpu=n["vcpu"], memory_gib=n["memoryGiB"])
                      for n in raw.get("cpuNodes") or ())
    return Catalog(instance_types=types, tp_degrees=tp_degrees, default_cluster=default_cluster, cpu_nodes=cpu_nodes)


@functools.cache
def load_catalog() -> Catalog:
    text = importlib.resources.files("neuron_operator").joinpath("data/instance_types.yaml").read_text()
    return _parse(yaml.safe_load(text))
