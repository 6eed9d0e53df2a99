"""``neuron-runtime serve``: pick the stack's serving path, and run single-node serving on the 2.23 stack.

The vllm-neuron stacks serve through :mod:`neuron_runtime.vllm_neuron_run`; ``spec.world_size > 1`` goes to
:mod:`neuron_runtime.multinode`. Single node: fetch (S3) or mount the artifacts and verify them (exit 3 instead of
vLLM's silent in-pod recompile), make the model's config/tokenizer, LoRA adapters and draft model available
locally, then run the server built by :mod:`neuron_runtime.nxdi_server` as a child with signals forwarded
(:mod:`neuron_runtime.process`).
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Mapping, TextIO

from neuron_runtime import artifacts, model_source, multinode, vllm_neuron_run
from neuron_runtime.contract import Contract, local_artifacts_dir, read_serve_config
from neuron_runtime.dryrun import env_diff, print_plan
from neuron_runtime.neuron_config import build_neuron_config_kwargs
from neuron_runtime.nxdi_server import (
    build_serve_env,
    build_server_argv,
    check_version_drift,
    materialize_models,
    planned_models,
)
from neuron_runtime.process import run_and_forward
from neuron_runtime.serving_paths import serving_artifact_dir
from neuron_runtime.stacks import ENGINE_VLLM_NEURON
from neuron_runtime.termination import write_termination_message
from neuron_runtime.testhooks import engine_command

log = logging.getLogger(__name__)


def run_serve(
    contract: Contract,
    env: Mapping[str, str],
    *,
    dry_run: bool = False,
    out: TextIO = sys.stdout,
    s3_client=None,
    runner=run_and_forward,
) -> int:
    if contract.profile.engine == ENGINE_VLLM_NEURON:
        return vllm_neuron_run.run_serve(contract, env, dry_run=dry_run, out=out, s3_client=s3_client)
    spec, key, profile = contract.spec, contract.key, contract.profile
    if spec.world_size > 1:
        return multinode.run_multinode_serve(contract, env, dry_run=dry_run, out=out, s3_client=s3_client)
    serve_config = read_serve_config(env)
    cache = model_source.model_cache_dir(env)
    artifact_dir = serving_artifact_dir(contract, env)

    if dry_run:
        models = planned_models(spec, env)
        server_env = build_serve_env(env, spec, profile, artifact_dir)
        plan = {
            "command": "serve",
            "key": key,
            "stack": profile.id,
            "artifact": artifact_dir,
            "argv": build_server_argv(
                spec, serve_config, profile, model_path=models.model_path, adapter_paths=models.adapter_paths,
                draft_path=models.draft_path, python=sys.executable,
            ),
            "env": env_diff(env, server_env),
            "neuron_config": build_neuron_config_kwargs(spec, profile, model_cache=cache),
        }  # fmt: skip
        return print_plan(plan, out)

    artifact_dir = artifacts.local_copy(artifacts.open_store(contract.store, local_artifacts_dir(env), s3_client),
                                        key, artifact_dir)
    manifest = artifacts.verify_artifact_dir(artifact_dir, key, spec, profile)
    check_version_drift(profile, manifest, env)
    models = materialize_models(spec, manifest, env)
    argv = build_server_argv(
        spec, serve_config, profile, model_path=models.model_path, adapter_paths=models.adapter_paths,
        draft_path=models.draft_path, python=sys.executable,
    )  # fmt: skip
    argv = engine_command(argv, env, "leader", "", serve_config.port)
    server_env = build_serve_env(env, spec, profile, artifact_dir)
    log.info("starting server: %s", " ".join(argv))
    log.info("server env changes: %s", json.dumps(env_diff(env, server_env)["set"], sort_keys=True))
    code = runner(argv, server_env)
    if code != 0:
        write_termination_message(f"vLLM server exited with code {code}", env)
    return code
