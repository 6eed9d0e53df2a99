"""The NeuronInferenceService status: what the operator reports, kstatus-compatible.

kstatus (Argo CD, Flux, kpt) reads ``observedGeneration``, the summary ``Ready`` condition and the abnormal-true
conditions ``Reconciling`` and ``Stalled``; the other conditions and ``phase`` are for people. Condition types,
reasons and phases are constants here and nowhere else. Status models are lenient (unknown fields ignored)
because the operator writes them and older operators may have written other fields.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class ConditionType:
    """Condition types. ``Ready`` summarises the others; GitOps tools key on it."""

    READY = "Ready"  # serving at the desired spec: artifacts compiled and all replicas available
    COMPILED = "Compiled"  # artifacts for the current compile key exist in the store
    AVAILABLE = "Available"  # at least one replica serves (possibly an older artifact during a recompile)
    RECONCILING = "Reconciling"  # kstatus: the operator is working towards the spec (compiling, rolling out)
    STALLED = "Stalled"  # kstatus: progress needs a user change (invalid spec, failed compile)

    ALL = (READY, COMPILED, AVAILABLE, RECONCILING, STALLED)


class ConditionStatus:
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"  # could not check


class Phase:
    """Coarse lifecycle for `kubectl get`; conditions carry the detail."""

    PENDING = "Pending"  # accepted, nothing created yet
    COMPILING = "Compiling"  # the compile Job for the current key runs
    DEPLOYING = "Deploying"  # artifacts exist; serving pods are rolling out or loading
    READY = "Ready"  # all replicas serve the current artifacts
    DEGRADED = "Degraded"  # serving, but fewer replicas than desired or on an older artifact
    FAILED = "Failed"  # stalled: needs a user change

    ALL = (PENDING, COMPILING, DEPLOYING, READY, DEGRADED, FAILED)


PhaseName = Literal["Pending", "Compiling", "Deploying", "Ready", "Degraded", "Failed"]


class Reason:
    """Condition reasons (CamelCase, stable: alerting and docs match on them)."""

    # Stalled=True: the spec must change. From parse_spec (schema) and validation.validate (catalog, arithmetic).
    INVALID_SPEC = "InvalidSpec"
    INVALID_TENSOR_PARALLEL_SIZE = "InvalidTensorParallelSize"
    INVALID_NODES_PER_REPLICA = "InvalidNodesPerReplica"
    INVALID_DEVICE_COUNT = "InvalidDeviceCount"
    INVALID_MAX_MODEL_LEN = "InvalidMaxModelLen"
    INVALID_OVERRIDE = "InvalidOverride"
    INVALID_SPECULATIVE_DECODING = "InvalidSpeculativeDecoding"
    INVALID_MODEL_URI = "InvalidModelURI"
    INVALID_EXTRA_ARGS = "InvalidExtraArgs"
    INVALID_RESOURCES = "InvalidResources"
    INVALID_ARTIFACT_STORE = "InvalidArtifactStore"
    NO_ARTIFACT_STORE = "NoArtifactStore"
    INVALID_STACK = "InvalidStack"  # spec.runtime.stack (or the family default) cannot run on the instance type
    UNSUPPORTED_BY_STACK = "UnsupportedByStack"  # the spec uses a feature its stack lacks
    CHILD_REJECTED = "ChildRejected"  # the API server refused a child manifest (e.g. clashing manual edit)
    CHILD_CONFLICT = "ChildConflict"  # an object with a child's name exists and is not ours: never taken over
    # Stalled=True from a serving pod's runtime exit code (runtime/neuron_runtime/constants.py): no restart helps.
    ARTIFACT_CACHE_MISS = "ArtifactCacheMiss"  # exit 6: a graph is not in the artifact; the pod does not compile
    ARTIFACT_INVALID = "ArtifactInvalid"  # exit 3: the artifact is missing or incomplete
    RUNTIME_REJECTED_SPEC = "RuntimeRejectedSpec"  # exit 2: the image does not provide the stack, or rejects the spec
    FABRIC_UNAVAILABLE = "FabricUnavailable"  # exit 7: a multi-node pod found no EFA (libfabric provider)

    # Compiled
    COMPILE_PENDING = "CompilePending"  # the compile pod cannot be scheduled (or its Job is being replaced)
    COMPILING = "Compiling"
    COMPILE_FAILED = "CompileFailed"
    ARTIFACTS_READY = "ArtifactsReady"

    # Available / Ready
    DEPLOYING = "Deploying"
    ROLLING_OUT = "RollingOut"
    REPLICAS_READY = "ReplicasReady"
    REPLICAS_UNAVAILABLE = "ReplicasUnavailable"
    SERVING_OLD_ARTIFACT = "ServingOldArtifact"  # a recompile is under way; pods still use the previous key
    SCALED_TO_ZERO = "ScaledToZero"

    # Reconciling / Stalled=False
    RECONCILED = "Reconciled"
    VALID_SPEC = "ValidSpec"


class StatusModel(BaseModel):
    """Base for status models: camelCase on the wire, unknown fields ignored."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class Condition(StatusModel):
    """One observation of the resource's state (same shape as metav1.Condition)."""

    type: str = Field(
        description="Condition type: Ready, Compiled, Available, Reconciling or Stalled.",
        min_length=1,
        max_length=316,
    )
    status: Literal["True", "False", "Unknown"] = Field(
        description="True, False, or Unknown when the operator could not check."
    )
    reason: str = Field(
        "",
        description="CamelCase reason for the last transition, stable for matching in alerts.",
        max_length=1024,
    )
    message: str = Field("", description="Human-readable detail: what happened and what to change.", max_length=32768)
    last_transition_time: str | None = Field(
        None,
        description="When status last changed (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )
    observed_generation: int | None = Field(
        None, description="metadata.generation the condition was computed from.", ge=0
    )


class ArtifactStatus(StatusModel):
    """The compiled artifact for the current spec."""

    key: str = Field(description="Compile key: hash of every compile input.", max_length=128)
    location: str | None = Field(
        None, description="Where the artifact lives, e.g. pvc://<claim>/<path>/<key> or s3://<bucket>/<prefix>/<key>."
    )
    stack: str | None = Field(None, description="Runtime stack profile the artifact was compiled with.")


class ServingArtifactStatus(StatusModel):
    """The artifact the running pods load; lags status.artifact while a recompile is under way."""

    key: str = Field(description="Compile key of the artifact the serving pods use.", max_length=128)


class CompileOutcome:
    """Outcome of a finished compile Job, as status.lastCompile reports it."""

    SUCCEEDED = "Succeeded"
    FAILED = "Failed"

    ALL = (SUCCEEDED, FAILED)


CompileOutcomeName = Literal["Succeeded", "Failed"]


class LastCompileStatus(StatusModel):
    """The most recent compile Job of this service that finished, read from the Job itself (stable across passes)."""

    job: str = Field(description="Name of the compile Job.", min_length=1, max_length=63)
    key: str | None = Field(None, description="Compile key of the artifact the Job compiled.", max_length=128)
    outcome: CompileOutcomeName = Field(description="Succeeded or Failed.")
    duration_seconds: int | None = Field(
        None,
        description="Seconds from the Job's start to its completion (or to its Failed condition).",
        ge=0,
    )
    finished_at: str | None = Field(
        None,
        description="When the Job completed or failed (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )


class NeuronInferenceServiceStatus(StatusModel):
    """Observed state of a NeuronInferenceService."""

    observed_generation: int | None = Field(None, description="metadata.generation this status describes.", ge=0)
    phase: PhaseName | None = Field(
        None, description="Coarse lifecycle: Pending, Compiling, Deploying, Ready, Degraded or Failed."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready, Compiled, Available, Reconciling and Stalled conditions.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    artifact: ArtifactStatus | None = Field(None, description="The compiled artifact for the current spec.")
    serving_artifact: ServingArtifactStatus | None = Field(
        None, description="The artifact the serving pods use (may lag status.artifact during a recompile)."
    )
    endpoint: str | None = Field(
        None, description="In-cluster URL of the OpenAI-compatible endpoint, e.g. http://<name>.<namespace>.svc:8000."
    )
    replicas: int | None = Field(None, description="Replicas that exist (for the scale subresource).", ge=0)
    ready_replicas: int | None = Field(None, description="Replicas whose pods are all ready.", ge=0)
    selector: str | None = Field(
        None, description="Label selector of the serving pods (leaders), for the scale subresource and HPA."
    )
    compile_job: str | None = Field(None, description="Name of the compile Job for the current compile key.")
    last_compile: LastCompileStatus | None = Field(
        None,
        description="The last compile Job that finished for this service: outcome and duration. Kept while a newer "
        "compile runs.",
    )

    warnings: list[str] | None = Field(
        None,
        description="Advisories about a spec the operator serves but upstream does not fully support (e.g. "
        "multi-node tensor parallelism on neuron-2.23-vllm-0.7.2, experimental upstream). Each is also posted once "
        "as a Warning Event (reason ExperimentalFeature).",
        max_length=16,
    )

    def condition(self, type_: str) -> Condition | None:
        """The condition of ``type_``, or None."""
        return next((c for c in self.conditions if c.type == type_), None)


def render_status(status: dict) -> dict:
    """The status document to write, through the model that also generates the CRD's status schema: a field the
    operator computes but the model (and so the CRD) lacks is a programming error here, not data the API server
    would silently prune."""
    rendered = NeuronInferenceServiceStatus.model_validate(status).model_dump(by_alias=True, exclude_none=True,
                                                                               mode="json")
    if rendered != status:
        lost = sorted(set(status) - set(rendered)) or "values normalised differently"
        raise ValueError(f"computed status does not round-trip through NeuronInferenceServiceStatus: {lost}")
    return rendered
