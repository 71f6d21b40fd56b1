"""Declarative agent specs: an agent described by a YAML file (layer L4)."""

from shoal.spec.loader import load_agent_spec, load_deployment
from shoal.spec.models import (
    BalanceEntry,
    DeploymentSpec,
    EscalateEntry,
    FallbackEntry,
    ModelEntry,
    ProviderEntry,
    ReferenceEntry,
    RouterEntry,
    RouterSpec,
    RuleSpec,
    build_models,
)
from shoal.spec.schema import AgentSpec, ToolSpec

__all__ = [
    "AgentSpec",
    "BalanceEntry",
    "DeploymentSpec",
    "EscalateEntry",
    "FallbackEntry",
    "ModelEntry",
    "ProviderEntry",
    "ReferenceEntry",
    "RouterEntry",
    "RouterSpec",
    "RuleSpec",
    "ToolSpec",
    "build_models",
    "load_agent_spec",
    "load_deployment",
]
