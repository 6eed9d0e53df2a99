"""The NeuronInferenceService API (inference.neuron-operator.io/v1alpha1): names, typed models, parsing.

The pydantic models in ``spec.py`` and ``status.py`` are the single source of truth; ``crd.py`` generates the
CRD from them. Handlers parse the raw body once with :func:`parse_resource` / :func:`parse_spec` and work on
typed objects from then on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from neuron_operator.constants import API_GROUP as GROUP
from neuron_operator.constants import CRD_NAME, GROUP_VERSION, KIND, PLURAL, SHORT_NAMES, SINGULAR, VERSION

from neuron_operator.api.spec import (
    ArtifactsSpec,
    DraftModelSource,
    EngineSpec,
    EnvVar,
    InvalidSpecError,
    LocalObjectReference,
    LoraAdapterSpec,
    ModelSource,
    NeuronInferenceServiceSpec,
    PlacementSpec,
    PVCArtifactStore,
    ResourceRequirements,
    RuntimeSpec,
    S3ArtifactStore,
    SecretKeyRef,
    SpeculativeDecodingSpec,
    Toleration,
    format_validation_error,
    parse_spec,
)
from neuron_operator.api.status import (
    ArtifactStatus,
    Condition,
    ConditionStatus,
    ConditionType,
    NeuronInferenceServiceStatus,
    Phase,
    Reason,
    ServingArtifactStatus,
)


class ObjectMeta(BaseModel):
    """The metadata fields builders need (owner references, names, labels). Lenient: other fields ignored."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)

    name: str = Field(description="Object name.")
    namespace: str | None = Field(None, description="Object namespace.")
    uid: str | None = Field(None, description="Object UID, for owner references.")
    generation: int | None = Field(None, description="Spec generation.")
    labels: dict[str, str] = Field(default_factory=dict, description="Labels.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Annotations.")


class NeuronInferenceService(BaseModel):
    """A whole NeuronInferenceService object: metadata, typed spec and (possibly empty) status."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)

    api_version: str = Field(GROUP_VERSION, description="inference.neuron-operator.io/v1alpha1")
    kind: str = Field(KIND, description="NeuronInferenceService")
    metadata: ObjectMeta
    spec: NeuronInferenceServiceSpec
    status: NeuronInferenceServiceStatus = Field(default_factory=NeuronInferenceServiceStatus)


def parse_resource(body: Mapping[str, Any]) -> NeuronInferenceService:
    """Parse a whole object (e.g. kopf's ``body``), or raise :class:`InvalidSpecError` naming each bad field."""
    raw = {
        "apiVersion": body.get("apiVersion", GROUP_VERSION),
        "kind": body.get("kind", KIND),
        "metadata": dict(body.get("metadata") or {}),
        "spec": dict(body.get("spec") or {}),
        "status": dict(body.get("status") or {}),
    }
    try:
        return NeuronInferenceService.model_validate(raw)
    except ValidationError as exc:
        raise InvalidSpecError(format_validation_error(exc, "", NeuronInferenceService)) from None


__all__ = [
    "GROUP_VERSION",
    "CRD_NAME",
    "GROUP",
    "KIND",
    "PLURAL",
    "SHORT_NAMES",
    "SINGULAR",
    "VERSION",
    "ArtifactStatus",
    "ArtifactsSpec",
    "Condition",
    "ConditionStatus",
    "ConditionType",
    "DraftModelSource",
    "EngineSpec",
    "EnvVar",
    "InvalidSpecError",
    "LocalObjectReference",
    "LoraAdapterSpec",
    "ModelSource",
    "NeuronInferenceService",
    "NeuronInferenceServiceSpec",
    "NeuronInferenceServiceStatus",
    "ObjectMeta",
    "PVCArtifactStore",
    "Phase",
    "PlacementSpec",
    "Reason",
    "ResourceRequirements",
    "RuntimeSpec",
    "S3ArtifactStore",
    "SecretKeyRef",
    "ServingArtifactStatus",
    "SpeculativeDecodingSpec",
    "Toleration",
    "parse_resource",
    "parse_spec",
]
