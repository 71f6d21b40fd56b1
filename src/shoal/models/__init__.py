"""Model backends, profiles and model references (layer L2)."""

from shoal.models.balanced import BalancedModel
from shoal.models.base import (
    FinishReason,
    Model,
    ModelRequestParameters,
    ModelResponse,
    ModelStreamEvent,
    ResponseDone,
    RouteDecision,
    TextDelta,
)
from shoal.models.capabilities import Capabilities
from shoal.models.guard import allow_model_requests, model_requests_allowed
from shoal.models.llamacpp import LlamaCppModel, engine_info
from shoal.models.openai_compat import OpenAICompatModel
from shoal.models.profiles import FAMILY_PROFILES, ModelProfile, profile_from_gguf_metadata
from shoal.models.providers import PROVIDERS, is_remote_reference, remote_model
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
from shoal.models.routing import (
    EscalatingModel,
    FallbackModel,
    RouterModel,
    RouteRule,
    Validator,
    check_response,
)
from shoal.models.test import FunctionModel, ModelRequest, TestModel, sample_from_schema
from shoal.models.worker import WorkerModel

__all__ = [
    "ALIASES",
    "DEFAULT_MODEL",
    "FAMILY_PROFILES",
    "PROVIDERS",
    "BalancedModel",
    "Capabilities",
    "EscalatingModel",
    "FallbackModel",
    "FinishReason",
    "FunctionModel",
    "LlamaCppModel",
    "Model",
    "ModelProfile",
    "ModelRequest",
    "ModelRequestParameters",
    "ModelResponse",
    "ModelStreamEvent",
    "OpenAICompatModel",
    "PackagedModel",
    "ResidencyManager",
    "ResidencySettings",
    "ResidencySnapshot",
    "Resident",
    "ResidentStatus",
    "ResponseDone",
    "RouteDecision",
    "RouteRule",
    "RouterModel",
    "TestModel",
    "TextDelta",
    "Validator",
    "WorkerModel",
    "allow_model_requests",
    "check_response",
    "default_residency",
    "engine_info",
    "is_remote_reference",
    "model_requests_allowed",
    "profile_from_gguf_metadata",
    "remote_model",
    "residency_settings",
    "resolve_model",
    "sample_from_schema",
    "set_default_residency",
]
