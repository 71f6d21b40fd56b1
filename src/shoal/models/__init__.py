"""Model backends, profiles and model references (layer L2)."""

from shoal.models.base import (
    FinishReason,
    Model,
    ModelRequestParameters,
    ModelResponse,
    ModelStreamEvent,
    ResponseDone,
    TextDelta,
)
from shoal.models.guard import allow_model_requests, model_requests_allowed
from shoal.models.llamacpp import LlamaCppModel, engine_info
from shoal.models.profiles import FAMILY_PROFILES, ModelProfile, profile_from_gguf_metadata
from shoal.models.registry import ALIASES, DEFAULT_MODEL, PackagedModel, resolve_model
from shoal.models.residency import (
    ResidencyManager,
    ResidencySettings,
    ResidencySnapshot,
    Resident,
    ResidentStatus,
    default_residency,
    residency_settings,
    set_default_residency,
)
from shoal.models.test import FunctionModel, ModelRequest, TestModel, sample_from_schema
from shoal.models.worker import WorkerModel

__all__ = [
    "ALIASES",
    "DEFAULT_MODEL",
    "FAMILY_PROFILES",
    "FinishReason",
    "FunctionModel",
    "LlamaCppModel",
    "Model",
    "ModelProfile",
    "ModelRequest",
    "ModelRequestParameters",
    "ModelResponse",
    "ModelStreamEvent",
    "PackagedModel",
    "ResidencyManager",
    "ResidencySettings",
    "ResidencySnapshot",
    "Resident",
    "ResidentStatus",
    "ResponseDone",
    "TestModel",
    "TextDelta",
    "WorkerModel",
    "allow_model_requests",
    "default_residency",
    "engine_info",
    "model_requests_allowed",
    "profile_from_gguf_metadata",
    "residency_settings",
    "resolve_model",
    "sample_from_schema",
    "set_default_residency",
]
