"""The engine worker of ranks > 0 in a multi-node group, for the pinned fork (F23, see stacks/neuron_2_23.py).

``python -m neuron_runtime.multinode_worker <the leader's OpenAI-server flags>``; started by multinode.py with the
fork's multi-node env (ENABLE_NEURON_MULTI_NODE=true, NEURON_RANK_ID, WORLD_SIZE, MASTER_ADDR/PORT, ...).

Why our own module: the fork's worker (F23 examples/neuron/multi_node/worker.py) lives in the repository's
examples/, which the vllm package does not install. This module does the equivalent with the fork's APIs, imported
lazily (written from reading, not copied):

  1. parse the leader's command line with the OpenAI server's own parser (F23 vllm/entrypoints/openai/cli_args.py
     make_arg_parser, which adds the engine flags via AsyncEngineArgs.add_cli_args), so every rank builds exactly the
     leader's engine config. The fork's example parses with AsyncEngineArgs.add_cli_args alone; but
     AsyncEngineArgs.from_cli_args reads every EngineArgs dataclass field from the namespace, including
     ``lora_modules``, which only the OpenAI parser defines (``--lora-modules``; F23 vllm/engine/arg_utils.py
     EngineArgs.lora_modules / from_cli_args) - so with the example's parser from_cli_args looks like it would fail
     on AttributeError (our reading; unverified at run time);
  2. build the engine like the example: AsyncLLMEngine.from_engine_args(..., usage_context=API_SERVER). Its
     NeuronWorker sees ENABLE_NEURON_MULTI_NODE, takes rank NEURON_RANK_ID (> 0, so it is not the driver), joins the
     leader's torch.distributed group (gloo, env://) and loads this node's slice of the model (start_rank_id /
     local_ranks_size from --override-neuron-config) (F23 vllm/worker/neuron_worker.py);
  3. call ``execute_model()`` on the executor's driver worker forever, like the example. A non-driver worker receives
     each step's inputs from rank 0's broadcast and runs the step in lockstep (F23 vllm/worker/worker_base.py
     LocalOrDistributedWorkerBase.execute_model / _get_worker_input_from_broadcast). An empty broadcast returns None;
     that is not an exit signal here: the fork's single-process executor never sends one (F23
     vllm/executor/executor_base.py stop_remote_worker_execution_loop is a no-op for UniProcExecutor), so unlike
     WorkerBase.start_worker_execution_loop we keep looping.

The runtime (multinode.py) owns the lifecycle: it stops this process when the leader is lost, and exits non-zero
when this process exits.

UNVERIFIED without Neuron hardware: all of the above at run time, in particular that the leader's OpenAI server
(MQLLMEngine in its own process) and this AsyncLLMEngine perform the same collective set-up (they build the same
LLMEngine), and how long an idle worker can block in the broadcast: step metadata goes through vLLM's
MessageQueue (shm_broadcast: zmq from the leader's get_ip() on a random port, so pods of a group must reach each
other on any TCP port), which blocks without a timeout; tensors go through the gloo group.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import List, Optional

log = logging.getLogger("neuron_runtime.multinode_worker")

EXIT_MISCONFIGURED = 2


def check_env(env) -> Optional[str]:
    """Why this process must not run as a worker (None when it may)."""
    if env.get("ENABLE_NEURON_MULTI_NODE", "").lower() != "true":
        return "ENABLE_NEURON_MULTI_NODE is not true: the fork would run a single-node engine"
    rank = env.get("NEURON_RANK_ID", "")
    if not rank.isdigit() or int(rank) == 0:
        return f"NEURON_RANK_ID={rank!r}: workers have rank > 0 (rank 0 runs the OpenAI server)"
    return None


def main(argv: Optional[List[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    problem = check_env(os.environ)
    if problem:
        log.error("%s", problem)
        return EXIT_MISCONFIGURED

    # Lazy: only the runtime image has the fork.
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.engine.async_llm_engine import AsyncLLMEngine
    from vllm.entrypoints.openai.cli_args import make_arg_parser
    from vllm.usage.usage_lib import UsageContext
    from vllm.utils import FlexibleArgumentParser

    parser = make_arg_parser(FlexibleArgumentParser(prog="neuron_runtime.multinode_worker"))
    args = parser.parse_args(argv)
    engine = AsyncLLMEngine.from_engine_args(
        AsyncEngineArgs.from_cli_args(args), usage_context=UsageContext.API_SERVER
    )
    worker = engine.engine.model_executor.driver_worker
    log.info("rank %s loaded its part of the model; executing the steps the leader broadcasts",
             os.environ["NEURON_RANK_ID"])  # fmt: skip
    while True:
        worker.execute_model()


if __name__ == "__main__":
    sys.exit(main())
