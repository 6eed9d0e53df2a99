"""Spec checks that need the instance catalog, the stack profiles, the operator's configuration, arithmetic, or
free-form fields the CRD schema cannot see.

:func:`validate` is pure: it returns every :class:`Problem` (field path, reason constant, message saying what
to change) and the reconciler reports them as ``Stalled`` instead of creating children. It also repeats the
CRD's CEL rules so a spec rendered offline (``neuron-operator render``) or admitted before a CRD upgrade gets
the same verdict as the API server.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from neuron_runtime import vllm_neuron
from neuron_runtime.stacks import PROFILES, PluginStackProfile, Stack, stacks_for_family

from neuron_operator.api.spec import (
    OPERATOR_OWNED_ARGS,
    OPERATOR_OWNED_OVERRIDE_KEYS,
    OPERATOR_OWNED_RESOURCES,
    STACK_FEATURE_RULES,
    NeuronInferenceServiceSpec,
    per_node_tp_choices,
)
from neuron_operator.api.status import Reason
from neuron_operator.catalog import Catalog, InstanceType
from neuron_operator.config import OperatorConfig

MIN_MAX_MODEL_LEN = 128  # NxDI's smallest bucket; auto-bucketing starts at 128
BUCKET_OVERRIDE_KEYS = ("context_encoding_buckets", "token_generation_buckets")


@dataclass(frozen=True)
class Problem:
    """One reason the spec cannot be served. ``field`` is the camelCase path, e.g. ``spec.tensorParallelSize``."""

    field: str
    reason: str
    message: str


def resolve_stack(spec: NeuronInferenceServiceSpec, instance: InstanceType, config: OperatorConfig) -> str | None:
    """The stack id a service runs on: its own choice, else the operator's default for the instance family."""
    return spec.runtime.stack or config.default_stack(instance.family)


def validate(spec: NeuronInferenceServiceSpec, catalog: Catalog, config: OperatorConfig) -> list[Problem]:
    """Every problem with ``spec`` on this catalog and operator configuration; empty when it can be served."""
    instance = catalog.get(spec.instance_type)
    stack_problems, stack = _check_stack(spec, instance, config)
    problems: list[Problem] = list(stack_problems)
    problems += _check_parallelism(spec, catalog)
    problems += _check_engine(spec)
    if stack is not None:
        problems += _check_overrides(spec, stack, instance)
        problems += _check_extra_args(spec, stack)
    problems += _check_speculative(spec)
    problems += _check_lending(spec)
    problems += _check_uris(spec)
    problems += _check_resources(spec)
    problems += _check_artifacts(spec, config)
    return problems


def _check_stack(spec: NeuronInferenceServiceSpec, instance: InstanceType,
                 config: OperatorConfig) -> tuple[list[Problem], Stack | None]:
    """The service's stack fits its instance family and every feature the spec uses; else say which would."""
    fitting = stacks_for_family(instance.family)
    stack_id = resolve_stack(spec, instance, config)
    chosen = "spec.runtime.stack" if spec.runtime.stack else f"the operator's default stack for {instance.family}"
    if stack_id is None:
        return [Problem("spec.runtime.stack", Reason.INVALID_STACK,
                        f"spec.runtime.stack: the operator has no default stack for {instance.family}; set "
                        f"spec.runtime.stack to one of {', '.join(fitting) or 'none (no stack supports it)'}")], None
    stack = PROFILES[stack_id]
    if not stack.supports_family(instance.family):
        return [Problem("spec.runtime.stack", Reason.INVALID_STACK,
                        f"spec.runtime.stack: {stack_id} ({chosen}) does not run on {instance.name} ({instance.family});"
                        f" stacks that fit {instance.family}: {', '.join(fitting)}")], None
    problems = []
    for feature in STACK_FEATURE_RULES:
        if feature.used(spec) and stack_id not in feature.stacks:
            would = [s for s in feature.stacks if s in fitting]
            advice = (f"set spec.runtime.stack to {' or '.join(would)}" if would
                      else f"no stack offers it on {instance.family}")
            problems.append(Problem(
                f"spec{feature.field}", Reason.UNSUPPORTED_BY_STACK,
                f"spec{feature.field}: {feature.what} is not supported by stack {stack_id} ({chosen}); {advice}"
                + (f": {feature.why}" if feature.why else "")))
    return problems, stack


def _other_lnc_hint(instance: InstanceType, per_node: int) -> str:
    """Where the degree fits at the type's other LNC, say so: TP 128 on trn2 needs LNC=1."""
    fits = [lnc for lnc in instance.lnc_options if lnc != instance.lnc
            and per_node in per_node_tp_choices(instance.at_lnc(lnc))]
    return "".join(f"; at spec.logicalNeuronCoreConfig: {lnc} it fits" for lnc in fits)


def _check_parallelism(spec: NeuronInferenceServiceSpec, catalog: Catalog) -> list[Problem]:
    tp, nodes = spec.tensor_parallel_size, spec.nodes_per_replica
    base = catalog.get(spec.instance_type)
    if spec.logical_neuron_core_config is not None and spec.logical_neuron_core_config not in (
            base.lnc_options or (base.lnc,)):
        return [Problem("spec.logicalNeuronCoreConfig", Reason.INVALID_TENSOR_PARALLEL_SIZE,
                        f"spec.logicalNeuronCoreConfig: {base.name} supports LNC "
                        f"{', '.join(map(str, base.lnc_options or (base.lnc,)))}; leave it unset for the default")]
    instance = base.at_lnc(spec.logical_neuron_core_config)
    problems = []
    if nodes > 1 and instance.efa == 0:
        with_efa = [name for name, it in catalog.instance_types.items() if it.efa > 0]
        problems.append(
            Problem(
                "spec.nodesPerReplica",
                Reason.INVALID_NODES_PER_REPLICA,
                f"spec.nodesPerReplica: {nodes} needs EFA between nodes, but {instance.name} has none; use "
                f"nodesPerReplica: 1 or one of {', '.join(with_efa)}",
            )
        )
    if tp % nodes != 0:
        problems.append(
            Problem(
                "spec.tensorParallelSize",
                Reason.INVALID_TENSOR_PARALLEL_SIZE,
                f"spec.tensorParallelSize: {tp} is not a multiple of spec.nodesPerReplica ({nodes}); each node runs "
                "tensorParallelSize / nodesPerReplica ranks",
            )
        )
        return problems
    per_node = tp // nodes
    choices = per_node_tp_choices(instance)
    cores = per_node * spec.data_parallel_size
    if per_node not in instance.tp_degrees or per_node > instance.logical_cores:
        allowed = ", ".join(str(c) for c in choices)
        totals = ", ".join(str(c * nodes) for c in choices)
        problems.append(
            Problem(
                "spec.tensorParallelSize",
                Reason.INVALID_TENSOR_PARALLEL_SIZE,
                f"spec.tensorParallelSize: per-node tensor-parallel degree {per_node} (tensorParallelSize {tp} / "
                f"nodesPerReplica {nodes}) is not supported on {instance.name} ({instance.logical_cores} NeuronCores "
                f"at LNC={instance.lnc}, family {instance.family} degrees "
                f"{', '.join(str(d) for d in instance.tp_degrees)}); allowed per-node values: {allowed} "
                f"(tensorParallelSize {totals} with nodesPerReplica {nodes}){_other_lnc_hint(instance, per_node)}",
            )
        )
        return problems
    try:
        devices = instance.devices_for_tp(cores)
    except ValueError as exc:
        devices, detail = None, str(exc)
    else:
        detail = f"{devices} devices"
    what = (f"per-node degree {per_node}" if spec.data_parallel_size == 1 else
            f"tensorParallelSize {per_node} x dataParallelSize {spec.data_parallel_size} = {cores} NeuronCores")
    field = "spec.tensorParallelSize" if spec.data_parallel_size == 1 else "spec.dataParallelSize"
    if devices is None or devices not in instance.allowed_device_counts or devices > instance.devices:
        problems.append(
            Problem(
                field,
                Reason.INVALID_DEVICE_COUNT,
                f"{field}: {what} on {instance.name} needs {detail}; a pod may "
                f"request only {', '.join(str(c) for c in instance.allowed_device_counts)} of its "
                f"{instance.devices} Neuron devices",
            )
        )
    return problems


def _check_engine(spec: NeuronInferenceServiceSpec) -> list[Problem]:
    if spec.engine.max_model_len < MIN_MAX_MODEL_LEN:
        return [
            Problem(
                "spec.engine.maxModelLen",
                Reason.INVALID_MAX_MODEL_LEN,
                f"spec.engine.maxModelLen: {spec.engine.max_model_len} is below {MIN_MAX_MODEL_LEN}, the smallest "
                f"Neuron sequence bucket; use at least {MIN_MAX_MODEL_LEN}",
            )
        ]
    return []


def _check_overrides(spec: NeuronInferenceServiceSpec, stack: Stack, instance: InstanceType) -> list[Problem]:
    if isinstance(stack, PluginStackProfile):
        return _check_plugin_overrides(spec, stack, instance)
    return _check_nxdi_overrides(spec)


def _check_plugin_overrides(spec: NeuronInferenceServiceSpec, stack: PluginStackProfile,
                            instance: InstanceType) -> list[Problem]:
    """The plugin's neuron_config vocabulary and bucket rules (one definition, shared with the runtime)."""
    found = vllm_neuron.neuron_config_problems(
        stack, spec.engine.override_neuron_config, family=instance.family, max_num_seqs=spec.engine.max_num_seqs,
        max_model_len=spec.engine.max_model_len, max_num_batched_tokens=spec.engine.max_num_batched_tokens)
    return [Problem(f"spec.engine.overrideNeuronConfig.{key}", Reason.INVALID_OVERRIDE,
                    f"spec.engine.overrideNeuronConfig.{message}") for key, message in found]


def _check_nxdi_overrides(spec: NeuronInferenceServiceSpec) -> list[Problem]:
    overrides = spec.engine.override_neuron_config
    problems = []
    for key, use_instead in OPERATOR_OWNED_OVERRIDE_KEYS.items():
        if key in overrides:
            problems.append(
                Problem(
                    f"spec.engine.overrideNeuronConfig.{key}",
                    Reason.INVALID_OVERRIDE,
                    f"spec.engine.overrideNeuronConfig.{key}: derived by the operator; set {use_instead} instead",
                )
            )
    max_len = spec.engine.max_model_len
    for key in BUCKET_OVERRIDE_KEYS:
        if key not in overrides:
            continue
        field = f"spec.engine.overrideNeuronConfig.{key}"
        buckets = overrides[key]
        if (
            not isinstance(buckets, list)
            or not buckets
            or not all(isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in buckets)
        ):
            problems.append(
                Problem(field, Reason.INVALID_OVERRIDE, f"{field}: must be a non-empty list of positive integers")
            )
            continue
        too_big = [b for b in buckets if b > max_len]
        if too_big:
            problems.append(
                Problem(
                    field,
                    Reason.INVALID_OVERRIDE,
                    f"{field}: buckets {', '.join(map(str, too_big))} exceed spec.engine.maxModelLen ({max_len}); "
                    f"every bucket must be at most {max_len}",
                )
            )
        if any(a >= b for a, b in itertools.pairwise(buckets)):
            problems.append(
                Problem(
                    field,
                    Reason.INVALID_OVERRIDE,
                    f"{field}: buckets must be strictly increasing, e.g. {sorted(set(buckets))}",
                )
            )
    return problems


def _check_speculative(spec: NeuronInferenceServiceSpec) -> list[Problem]:
    speculative = spec.speculative_decoding
    if speculative is None:
        return []
    problems = []
    if spec.lora_adapters:
        problems.append(
            Problem(
                "spec.speculativeDecoding",
                Reason.INVALID_SPECULATIVE_DECODING,
                "spec.speculativeDecoding: cannot be combined with spec.loraAdapters (the Neuron vLLM stack does "
                "not support LoRA with speculative decoding); remove one of them",
            )
        )
    if speculative.method == "eagle3" and speculative.max_model_len is not None:
        problems.append(
            Problem(
                "spec.speculativeDecoding.maxModelLen",
                Reason.INVALID_SPECULATIVE_DECODING,
                "spec.speculativeDecoding.maxModelLen: not used by eagle3 (the draft follows the target model); "
                "remove it",
            )
        )
    elif speculative.max_model_len is not None and speculative.max_model_len > spec.engine.max_model_len:
        problems.append(
            Problem(
                "spec.speculativeDecoding.maxModelLen",
                Reason.INVALID_SPECULATIVE_DECODING,
                f"spec.speculativeDecoding.maxModelLen: {speculative.max_model_len} exceeds spec.engine.maxModelLen "
                f"({spec.engine.max_model_len}); use at most {spec.engine.max_model_len}",
            )
        )
    return problems


def _check_lending(spec: NeuronInferenceServiceSpec) -> list[Problem]:
    if not spec.runtime.lend_replica_to_compile:
        return []
    field = "spec.runtime.lendReplicaToCompile"
    problems = []
    if spec.nodes_per_replica > 1:
        problems.append(Problem(field, Reason.INVALID_NODES_PER_REPLICA,
                                f"{field}: lends one Deployment replica; multi-node groups (nodesPerReplica > 1) "
                                "are never lent"))
    if spec.autoscaling is not None:
        problems.append(Problem(field, Reason.INVALID_SPEC,
                                f"{field}: cannot be combined with spec.autoscaling (the autoscaler owns the replica "
                                "count)"))
    return problems


def _check_uris(spec: NeuronInferenceServiceSpec) -> list[Problem]:
    # (field, uri, the spec field that pins its revision, if any)
    uris: list[tuple[str, str, str | None]] = [("spec.model.uri", spec.model.uri, "spec.model.revision")]
    if spec.speculative_decoding is not None:
        uris.append(
            (
                "spec.speculativeDecoding.draftModel.uri",
                spec.speculative_decoding.draft_model.uri,
                "spec.speculativeDecoding.draftModel.revision",
            )
        )
    # Adapters have no revision field: hf://org/name@revision is how to pin one.
    uris += [(f"spec.loraAdapters[{i}].uri", adapter.uri, None) for i, adapter in enumerate(spec.lora_adapters)]
    problems = []
    for field, uri, revision_field in uris:
        message = _uri_problem(uri, revision_field)
        if message:
            problems.append(Problem(field, Reason.INVALID_MODEL_URI, f"{field}: {message}"))
    return problems


def _uri_problem(uri: str, revision_field: str | None) -> str | None:
    scheme, _, rest = uri.partition("://")
    if scheme == "pvc":
        claim, _, path = rest.partition("/")
        if not claim or not path.strip("/"):
            return (
                f"{uri!r} must have the form pvc://<claim>/<path> (the claim name, then the checkpoint directory "
                "inside it)"
            )
    if scheme == "hf":
        repo, at, revision = rest.partition("@")
        if not repo or repo.count("/") > 1 or repo.startswith("/") or repo.endswith("/"):
            return f"{uri!r} must have the form hf://<org>/<name> (a Hugging Face repository id)"
        if at and revision_field:
            return f"{uri!r} pins a revision with '@'; set {revision_field}: {revision or 'main'} instead"
    if ".." in rest.split("/"):
        return f"the path in {uri!r} must not contain '..'"
    return None


def _check_extra_args(spec: NeuronInferenceServiceSpec, stack: Stack) -> list[Problem]:
    owned_by_stack = vllm_neuron.owned_flags(stack) if isinstance(stack, PluginStackProfile) else set()
    problems = []
    for i, arg in enumerate(spec.engine.extra_args):
        flag = arg.split("=", 1)[0]
        if flag in OPERATOR_OWNED_ARGS:
            problems.append(
                Problem(
                    f"spec.engine.extraArgs[{i}]",
                    Reason.INVALID_EXTRA_ARGS,
                    f"spec.engine.extraArgs[{i}]: {flag} is set by the operator; use "
                    f"{OPERATOR_OWNED_ARGS[flag]} instead",
                )
            )
        elif flag in owned_by_stack:
            problems.append(Problem(
                f"spec.engine.extraArgs[{i}]", Reason.INVALID_EXTRA_ARGS,
                f"spec.engine.extraArgs[{i}]: {flag} is not for stack {stack.id}: it is derived by the operator or "
                "belongs to the previous stack's engine"))
    return problems


def _check_resources(spec: NeuronInferenceServiceSpec) -> list[Problem]:
    problems = []
    for field, resources in (("resources", spec.runtime.resources), ("compileResources", spec.runtime.compile_resources)):
        for which, values in (("requests", resources.requests), ("limits", resources.limits)):
            for name in values:
                if name in OPERATOR_OWNED_RESOURCES:
                    problems.append(
                        Problem(
                            f"spec.runtime.{field}.{which}",
                            Reason.INVALID_RESOURCES,
                            f"spec.runtime.{field}.{which}: {name} is derived by the operator from spec.instanceType, "
                            "spec.tensorParallelSize and spec.nodesPerReplica; remove it",
                        )
                    )
    return problems


def _check_artifacts(spec: NeuronInferenceServiceSpec, config: OperatorConfig) -> list[Problem]:
    if spec.artifacts is None and not config.default_artifact_store:
        return [
            Problem(
                "spec.artifacts",
                Reason.NO_ARTIFACT_STORE,
                "spec.artifacts: no artifact store: set spec.artifacts.pvc or spec.artifacts.s3, or configure a "
                "default store for the operator",
            )
        ]
    pvc = spec.artifacts.pvc if spec.artifacts is not None else None
    if pvc is not None and pvc.sub_path and ".." in pvc.sub_path.split("/"):
        return [
            Problem(
                "spec.artifacts.pvc.subPath",
                Reason.INVALID_ARTIFACT_STORE,
                "spec.artifacts.pvc.subPath: must be a relative path without '..'",
            )
        ]
    return []
