"""The ``neuron-runtime`` entrypoint (console script and ``python -m neuron_runtime.cli``).

Subcommands ``compile`` and ``serve`` read their inputs from the operator's env contract (constants.py). Any
RuntimeFailure becomes a one-line termination message plus its exit code; see constants for the codes.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import List, Optional

from neuron_runtime import __version__, constants
from neuron_runtime.contract import read_contract
from neuron_runtime.errors import RuntimeFailure
from neuron_runtime.termination import write_termination_message

log = logging.getLogger("neuron_runtime")

EPILOG = (
    f"exit codes: {constants.EXIT_FAILURE} compile or runtime failure, {constants.EXIT_BAD_SPEC} bad spec / key "
    f"mismatch / wrong stack, {constants.EXIT_ARTIFACT_INVALID} compiled artifacts missing or invalid, "
    f"{constants.EXIT_RENDEZVOUS_TIMEOUT} multi-node group did not form in time, {constants.EXIT_PEER_LOST} "
    f"multi-node group lost a member, {constants.EXIT_CACHE_MISS} compile-cache miss while serving cache-hit-only, "
    f"{constants.EXIT_FABRIC_UNAVAILABLE} multi-node pod without a usable EFA (libfabric) provider; "
    f"{constants.EXIT_COMPILE_MEMORY} compile whose checkpoint exceeds the pod's memory limit; "
    "serve otherwise exits with the server's code"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neuron-runtime",
        description="Compile models for AWS Neuron and serve them with vLLM (stack profiles: see neuron_runtime.stacks).",
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("compile", "compile the model in NEURON_OPERATOR_COMPILE_SPEC and publish the artifacts"),
        ("serve", "verify the compiled artifacts and run the OpenAI-compatible server"),
    ):
        sub = commands.add_parser(name, help=text, description=text, epilog=EPILOG)
        sub.add_argument(
            "--dry-run",
            action="store_true",
            help="print what would run (argv, env changes, NeuronConfig kwargs) as JSON and exit",
        )
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    env = dict(os.environ)
    try:
        contract = read_contract(env)
        if args.command == "compile":
            from neuron_runtime.compile import run_compile

            return run_compile(contract, env, dry_run=args.dry_run)
        from neuron_runtime.serve import run_serve

        return run_serve(contract, env, dry_run=args.dry_run)
    except RuntimeFailure as e:
        log.error("%s", e)
        write_termination_message(str(e), env)
        return e.exit_code
    except Exception as e:  # a bug: keep the traceback in the log, give the pod a readable reason
        log.exception("unexpected error")
        write_termination_message(f"unexpected error in neuron-runtime {args.command}: {type(e).__name__}: {e}", env)
        return constants.EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
