"""The resolved plan for one NeuronInferenceService: everything the child builders need, derived once.

`plan_for` turns the typed spec plus the catalog and operator config into plain values (device counts, the
compile spec and its key, the artifact store, pod overrides). Builders take a ServicePlan and do no lookups,
so each is a pure function with a golden test.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Optional

from neuron_runtime.compile_spec import CompileSpec, compile_key
from neuron_runtime.stacks import PROFILES, PluginStackProfile, Stack

from . import constants as C
from .catalog import Catalog, InstanceType
from .model_size import cpu_compile_size, neuron_compile_memory


@dataclass(frozen=True)
class ArtifactStore:
    """Where compiled artifacts live: a PVC mounted into pods, or an S3 prefix the runtime syncs."""

    kind: str  # "pvc" | "s3"
    claim_name: str = ""
    sub_path: str = ""
    uri: str = ""

    @property
    def location(self) -> str:
        if self.kind == "pvc":
            return f"pvc://{self.claim_name}/{self.sub_path}".rstrip("/")
        return self.uri.rstrip("/")

    @property
    def runtime_root(self) -> str:
        """The store root as the runtime sees it (NEURON_OPERATOR_ARTIFACT_STORE)."""
        return C.ARTIFACT_STORE_MOUNT if self.kind == "pvc" else self.uri.rstrip("/")

    def artifact_location(self, key: str) -> str:
        return f"{self.location}/{key}"

    @classmethod
    def parse(cls, text: str) -> "ArtifactStore":
        """'pvc://claim[/sub/path]' or 's3://bucket/prefix' (the operator's default store setting)."""
        if text.startswith("pvc://"):
            claim, _, sub = text[len("pvc://"):].partition("/")
            if not claim:
                raise ValueError(f"artifact store {text!r}: expected pvc://<claim>[/<subPath>]")
            return cls(kind="pvc", claim_name=claim, sub_path=sub.strip("/"))
        if text.startswith("s3://") and len(text) > len("s3://"):
            return cls(kind="s3", uri=text)
        raise ValueError(f"artifact store {text!r}: expected pvc://<claim>[/<subPath>] or s3://<bucket>/<prefix>")


@dataclass(frozen=True)
class CompilePlacement:
    """Where and how big the compile pod is. On CPU nodes (stacks that compile on CPU) it holds no Neuron device."""

    on_cpu: bool
    resources: dict[str, dict[str, Any]]
    node_selector: Mapping[str, str] = field(default_factory=dict)  # CPU pool only; Neuron: the instance type
    tolerations: tuple[Mapping[str, Any], ...] = ()  # CPU pool only; Neuron: the Neuron taint
    reason: str = ""  # shown in the Job's annotation: why it compiles where it does


@dataclass(frozen=True)
class AutoscalingPlan:
    """spec.autoscaling resolved against the operator's autoscaler setting (builders/autoscaling.py)."""

    provider: str  # C.AUTOSCALER_KEDA | C.AUTOSCALER_HPA
    min_replicas: int
    max_replicas: int
    target_queue_depth: int
    scale_down_stabilization_seconds: int
    served_model_name: str  # vLLM's model_name label on the queue gauge
    metric_name: str  # the HPA's custom metric
    prometheus_server_address: str = ""  # KEDA's trigger


@dataclass(frozen=True)
class ServicePlan:
    name: str
    namespace: str
    uid: str
    instance: InstanceType
    tensor_parallel_size: int
    nodes_per_replica: int
    replicas: int
    compile_spec: CompileSpec
    key: str
    store: ArtifactStore
    image: str
    serve_config: dict[str, Any]
    stack: Stack
    compile_placement: CompilePlacement
    image_pull_policy: Optional[str] = None
    image_pull_secrets: tuple[str, ...] = ()
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: tuple[dict[str, Any], ...] = ()
    scheduler_name: Optional[str] = None
    service_account_name: Optional[str] = None
    env: tuple[dict[str, Any], ...] = ()
    pod_labels: dict[str, str] = field(default_factory=dict)
    pod_annotations: dict[str, str] = field(default_factory=dict)
    token_secret: Optional[tuple[str, str]] = None  # (secret name, key) holding the Hugging Face token
    startup_timeout_seconds: int = 1800
    allow_surge: bool = False
    lend_replica_to_compile: bool = False
    lent_to_compile: Optional[str] = None  # the compile Job one replica's node is lent to (see lending_to)
    topology_key: Optional[str] = None
    compile_backoff_limit: int = 2
    compile_active_deadline_seconds: int = 4 * 3600
    autoscaling: Optional[AutoscalingPlan] = None

    @property
    def tp_per_node(self) -> int:
        return self.tensor_parallel_size // self.nodes_per_replica

    @property
    def cores_per_pod(self) -> int:
        """Logical NeuronCores one serving pod's engines use: TP per node times the data-parallel engines."""
        return self.tp_per_node * self.compile_spec.data_parallel_size

    @property
    def devices_per_pod(self) -> int:
        # A multi-node rank owns its whole node: collectives span every device, and no other pod may share
        # the node's EFA/NeuronLink bandwidth (the AWS multi-node samples request all 16 devices).
        if self.multi_node:
            return self.instance.devices
        return self.instance.devices_for_tp(self.cores_per_pod)

    @property
    def warnings(self) -> tuple[str, ...]:
        """Advisories for a spec the operator serves but upstream does not fully support (status.warnings, and a
        Warning Event when one appears)."""
        out = []
        if self.multi_node and self.stack.features.multi_node_experimental:
            # SDK23 libraries/nxd-inference/nxdi-overview.rst: "Pipeline parallelism and multi-node inference will
            # be supported in future Neuron releases"; developer_guides/migrate-from-tnx-to-nxdi.rst lists
            # Multi-Node Inference among the features "not supported in NxD Inference through vLLM".
            out.append(f"spec.nodesPerReplica: multi-node tensor parallelism on {self.stack.id} is experimental "
                       "upstream (Neuron SDK 2.23 documents multi-node inference as a future feature); verify it "
                       "on your hardware before production")
        return tuple(out)

    @property
    def plugin_stack(self) -> Optional[PluginStackProfile]:
        """The stack's profile when it is a vllm-neuron one (whose env and volumes differ), else None."""
        return self.stack if isinstance(self.stack, PluginStackProfile) else None

    @property
    def efa_per_pod(self) -> int:
        # EFA only matters when ranks talk across nodes; a single-node replica leaves it to others.
        return self.instance.efa if self.nodes_per_replica > 1 else 0

    @property
    def multi_node(self) -> bool:
        return self.nodes_per_replica > 1

    @property
    def model_pvc_claims(self) -> tuple[str, ...]:
        """PVCs that model/adapter/draft URIs of the form pvc://claim/path refer to (mounted read-only)."""
        uris = [self.compile_spec.model_uri, *(a.uri for a in self.compile_spec.lora_adapters)]
        if self.compile_spec.speculative:
            uris.append(self.compile_spec.speculative.model_uri)
        claims = {u[len("pvc://"):].split("/", 1)[0] for u in uris if u.startswith("pvc://")}
        return tuple(sorted(claims))

    def lending_to(self, job_name: str, replicas: int) -> "ServicePlan":
        """This (serving) plan at ``replicas`` (fewer than it wants), a replica's node lent to compile Job
        ``job_name``."""
        return replace(self, replicas=replicas, lent_to_compile=job_name)

    def with_serving_artifact(self, compile_spec: CompileSpec, instance: InstanceType) -> "ServicePlan":
        """The same plan, serving a previous artifact on the instance type it was built for: used while a new
        artifact compiles, so non-compile changes (replicas, resources, labels) still roll out meanwhile."""
        return replace(self, compile_spec=compile_spec, key=compile_key(compile_spec), instance=instance,
                       tensor_parallel_size=compile_spec.tp_degree, nodes_per_replica=compile_spec.world_size,
                       stack=PROFILES.get(compile_spec.stack, self.stack))


def compile_spec_from_annotation(text: Optional[str]) -> Optional[CompileSpec]:
    if not text:
        return None
    try:
        return CompileSpec.from_json(text)
    except (ValueError, TypeError, KeyError, json.JSONDecodeError):
        return None  # written by an older/incompatible operator: treat as unknown, roll to the new artifact


def default_resources(instance: InstanceType, devices: int) -> dict[str, dict[str, str]]:
    """CPU/memory proportional to the share of the node's devices the pod holds, leaving headroom for the
    kubelet and daemons (~15%): a whole-node pod on trn1.32xlarge asks 108 CPUs / 435Gi."""
    share = devices / instance.devices
    cpu = max(1, int(instance.vcpu * share * 0.85))
    memory = max(2, int(instance.memory_gib * share * 0.85))
    return {"requests": {"cpu": str(cpu), "memory": f"{memory}Gi"}, "limits": {"memory": f"{memory}Gi"}}


def merge_resources(defaults: dict[str, dict[str, Any]], overrides: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {k: dict(v) for k, v in defaults.items()}
    for section, values in (overrides or {}).items():
        out.setdefault(section, {}).update({k: str(v) for k, v in (values or {}).items()})
    return out


def served_model_name(service_name: str, model_uri: str) -> str:
    """What clients put in the OpenAI `model` field: the Hugging Face id for hf:// models, else the service."""
    if model_uri.startswith("hf://"):
        return model_uri[len("hf://"):]
    return service_name


def resolve_store(spec, config) -> ArtifactStore:
    """The spec's store, else the operator's default; validation reports a missing store before this runs."""
    artifacts = spec.artifacts
    if artifacts is not None and artifacts.pvc is not None:
        return ArtifactStore(kind="pvc", claim_name=artifacts.pvc.claim_name, sub_path=(artifacts.pvc.sub_path or "").strip("/"))
    if artifacts is not None and artifacts.s3 is not None:
        return ArtifactStore(kind="s3", uri=artifacts.s3.uri)
    if config.default_artifact_store:
        return ArtifactStore.parse(config.default_artifact_store)
    raise ValueError("no artifact store: set spec.artifacts or the operator's default store")


def compile_placement(spec, instance: InstanceType, stack: Stack, config, devices: int) -> CompilePlacement:
    """CPU nodes when the stack compiles on CPU (and can, for this spec); else the target instance type."""
    overrides = {"requests": dict(spec.runtime.compile_resources.requests),
                 "limits": dict(spec.runtime.compile_resources.limits)}
    speculative = spec.speculative_decoding is not None
    if stack.features.cpu_compile and (not speculative or stack.features.cpu_compile_speculative):
        size = cpu_compile_size(spec.model.uri)
        return CompilePlacement(
            on_cpu=True, resources=merge_resources(size.resources(), overrides),
            node_selector=dict(config.compile_node_selector),
            tolerations=tuple(dict(t) for t in config.compile_tolerations),
            reason=f"cpu: {stack.id} compiles on CPU nodes; sized for {size.basis}")
    if stack.features.cpu_compile:
        reason = (f"neuron: {stack.id} cannot compile speculative decoding on CPU "
                  "(vllm-neuron design/compilation/cpu_compilation.md Limitations), so it compiles on "
                  f"{instance.name}")
    else:
        reason = f"neuron: {stack.id} compiles on the target instance type ({instance.name}, LNC={instance.lnc})"
    # Sized for the model, not only for the devices held: NxD Inference loads the checkpoint to shard it (a TP=2
    # compile of a 70B model holds 2 devices but needs the whole checkpoint in memory).
    defaults = default_resources(instance, devices)
    share = int(defaults["limits"]["memory"].removesuffix("Gi"))
    memory, basis = neuron_compile_memory(spec.model.uri, spec.engine.dtype, instance.memory_gib, share,
                                          spec.nodes_per_replica)
    defaults["requests"]["memory"] = defaults["limits"]["memory"] = f"{memory}Gi"
    # The seed stack's compile pods have always taken the serving pods' resource overrides; compileResources wins.
    serving = {"requests": dict(spec.runtime.resources.requests), "limits": dict(spec.runtime.resources.limits)}
    resources = merge_resources(merge_resources(defaults, serving), overrides)
    return CompilePlacement(on_cpu=False, resources=resources, reason=f"{reason}; memory sized for {basis}")


def autoscaling_plan(spec, config, model_name: str) -> Optional[AutoscalingPlan]:
    scaling = spec.autoscaling
    if scaling is None:
        return None
    return AutoscalingPlan(
        provider=config.autoscaler, min_replicas=scaling.min_replicas, max_replicas=scaling.max_replicas,
        target_queue_depth=scaling.target_queue_depth,
        scale_down_stabilization_seconds=scaling.scale_down_stabilization_seconds,
        served_model_name=model_name, metric_name=config.hpa_metric_name,
        prometheus_server_address=config.prometheus_server_address or "")


def plan_for(name: str, namespace: str, uid: str, spec, catalog: Catalog, config) -> ServicePlan:
    """Resolve a validated spec (api.spec.NeuronInferenceServiceSpec) into a ServicePlan."""
    from .compile_inputs import compile_spec_for, extra_args_split  # local: compile_inputs imports the api models
    from .validation import resolve_stack

    instance = catalog.instance_at(spec.instance_type, spec.logical_neuron_core_config)
    stack_id = resolve_stack(spec, instance, config)
    stack = PROFILES[stack_id]
    compile_spec = compile_spec_for(spec, catalog, stack_id)
    runtime = spec.runtime
    token = spec.model.token_secret_ref
    serve_config: dict[str, Any] = {
        "port": C.HTTP_PORT,
        "served_model_name": spec.engine.served_model_name or served_model_name(name, spec.model.uri),
        "extra_args": list(extra_args_split(spec, stack_id)[1]),
        "enable_lora": bool(spec.lora_adapters),
        "max_loras": len(spec.lora_adapters) or None,
    }
    if isinstance(stack, PluginStackProfile):
        # The engine's own start-up waits follow the startup probe (the 2.23 runtime has no such setting).
        serve_config["startup_timeout_seconds"] = runtime.startup_timeout_seconds
    per_node = spec.tensor_parallel_size // spec.nodes_per_replica
    devices = instance.devices if spec.nodes_per_replica > 1 else instance.devices_for_tp(
        per_node * spec.data_parallel_size)
    return ServicePlan(
        name=name,
        namespace=namespace,
        uid=uid,
        instance=instance,
        tensor_parallel_size=spec.tensor_parallel_size,
        nodes_per_replica=spec.nodes_per_replica,
        replicas=spec.replicas,
        compile_spec=compile_spec,
        key=compile_key(compile_spec),
        store=resolve_store(spec, config),
        image=runtime.image or config.image_for(stack_id),
        serve_config=serve_config,
        stack=stack,
        compile_placement=compile_placement(spec, instance, stack, config, devices),
        image_pull_policy=runtime.image_pull_policy,
        image_pull_secrets=tuple(s.name for s in runtime.image_pull_secrets),
        resources={"requests": dict(runtime.resources.requests), "limits": dict(runtime.resources.limits)},
        node_selector=dict(runtime.node_selector),
        tolerations=tuple(t.model_dump(by_alias=True, exclude_none=True) for t in runtime.tolerations),
        scheduler_name=runtime.scheduler_name,
        service_account_name=runtime.service_account_name,
        env=tuple(e.model_dump(by_alias=True) for e in runtime.env),
        pod_labels=dict(runtime.pod_labels),
        pod_annotations=dict(runtime.pod_annotations),
        token_secret=(token.name, token.key) if token else None,
        startup_timeout_seconds=runtime.startup_timeout_seconds,
        allow_surge=runtime.allow_surge,
        lend_replica_to_compile=runtime.lend_replica_to_compile,
        topology_key=spec.placement.topology_key if spec.placement else None,
        compile_backoff_limit=config.compile_backoff_limit,
        compile_active_deadline_seconds=config.compile_active_deadline_seconds,
        autoscaling=autoscaling_plan(spec, config, serve_config["served_model_name"]),
    )
