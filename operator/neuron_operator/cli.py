"""`neuron-operator`: run the operator, print the CRDs, list the stacks, or render a service's children offline."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional

import yaml

LIVENESS_DEFAULT = "http://0.0.0.0:8081/healthz"


def _run(args: argparse.Namespace) -> int:
    # Exec kopf with -m (never a file path: a module named `operator` would shadow the stdlib, STYLE.md).
    argv = ["kopf", "run", "-m", "neuron_operator.handlers", f"--liveness={args.liveness}"]
    namespaces = args.namespace or [n for n in os.environ.get("NEURON_OPERATOR_NAMESPACES", "").replace(",", " ").split() if n]
    if namespaces:
        argv += [f"--namespace={ns}" for ns in namespaces]
        os.environ["NEURON_OPERATOR_NAMESPACES"] = ",".join(namespaces)
    else:
        argv.append("--all-namespaces")
    if args.standalone:
        argv.append("--standalone")
    else:
        argv += [f"--peering={args.peering}"] if args.peering else ["--standalone"]
    argv.append(f"--log-format={args.log_format}")
    if args.verbose:
        argv.append("--verbose")
    sys.stdout.flush()
    os.execvp(sys.executable, [sys.executable, "-m", *argv])
    return 0  # unreachable


def _crds(_: argparse.Namespace) -> int:
    from .api.crd import crd_yaml

    sys.stdout.write(crd_yaml())
    return 0


def _reference(_: argparse.Namespace) -> int:
    from .api.reference import reference_markdown

    sys.stdout.write(reference_markdown())
    return 0


def _stacks(args: argparse.Namespace) -> int:
    from .config import OperatorConfig
    from .stacks_report import stacks_json, stacks_table

    config = OperatorConfig.from_env()
    sys.stdout.write(stacks_json(config) if args.output == "json" else stacks_table(config))
    return 0


def _render(args: argparse.Namespace) -> int:
    from .catalog import load_catalog
    from .config import OperatorConfig
    from .render import RenderError, render_documents

    text = sys.stdin.read() if args.file == "-" else open(args.file, encoding="utf-8").read()
    config = OperatorConfig.from_env()
    try:
        sys.stdout.write(render_documents(yaml.safe_load_all(text), load_catalog(), config, args.namespace))
    except RenderError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="neuron-operator", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the operator (kopf) against the current cluster")
    scope = run.add_mutually_exclusive_group()
    scope.add_argument("--namespace", "-n", action="append", help="watch only these namespaces (repeatable)")
    scope.add_argument("--all-namespaces", "-A", action="store_true",
                       help="watch every namespace (the default when no --namespace is given)")
    run.add_argument("--log-format", choices=("plain", "full", "json"), default="full", help="kopf log format")
    run.add_argument("--liveness", default=LIVENESS_DEFAULT, help="kopf liveness endpoint")
    run.add_argument("--peering", help="kopf peering object name for several replicas (default: standalone)")
    run.add_argument("--standalone", action="store_true", help="no peering (single replica)")
    run.add_argument("--verbose", action="store_true")
    run.set_defaults(func=_run)

    crds = sub.add_parser("crds", help="print the CustomResourceDefinition YAML")
    crds.set_defaults(func=_crds)

    reference = sub.add_parser("reference", help="print the resource reference (Markdown) generated from the models")
    reference.set_defaults(func=_reference)

    stacks = sub.add_parser("stacks", help="list the runtime stack profiles (families, features, images, versions)")
    stacks.add_argument("-o", "--output", choices=("table", "json"), default="table")
    stacks.set_defaults(func=_stacks)

    render = sub.add_parser("render", help="print the child manifests of a NeuronInferenceService file")
    render.add_argument("-f", "--file", required=True, help="YAML file with one or more services ('-' for stdin)")
    render.add_argument("-n", "--namespace", default="default", help="namespace when the file names none")
    render.set_defaults(func=_render)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
