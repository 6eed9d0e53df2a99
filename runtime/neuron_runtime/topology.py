"""Which node of a replica this pod is.

Single node is SINGLE_NODE. Multi-node serving (multinode.py: rank from NEURON_OPERATOR_RANK, rendezvous through the
headless Service) builds a NodeRole with rank/world_size > 1 and passes it to the same pure builders in
nxdi_server.py and neuron_config.py.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NodeRole:
    rank: int = 0  # 0 is the leader: the node that runs the OpenAI server
    world_size: int = 1  # nodes in this replica (CompileSpec.world_size)

    @property
    def is_leader(self) -> bool:
        return self.rank == 0

    @property
    def is_multi_node(self) -> bool:
        return self.world_size > 1


SINGLE_NODE = NodeRole()
