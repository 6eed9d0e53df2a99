"""Which node of a replica this pod is: the seam for multi-node serving.

Single node is the only implemented topology. Multi-node serving (rank discovery from the pod identity, rendezvous
through the headless Service) will construct a NodeRole with rank/world_size > 1 and pass it to the same pure
builders in serve.py and neuron_config.py; until then serve refuses world_size > 1 with a clear message.
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
