"""Declarative agent specs and systems: agents, models and flows described by YAML (layer L4)."""

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
from shoal.spec.schema import AgentSpec, RouteSpec, ToolSpec
from shoal.spec.system import AgentDef, FlowDef, SystemSpec, is_system_file, load_system
from shoal.spec.system_build import System

__all__ = [
    "AgentDef",
    "AgentSpec",
    "BalanceEntry",
    "DeploymentSpec",
    "EscalateEntry",
    "FallbackEntry",
    "FlowDef",
    "ModelEntry",
    "ProviderEntry",
    "ReferenceEntry",
    "RouteSpec",
    "RouterEntry",
    "RouterSpec",
    "RuleSpec",
    "System",
    "SystemSpec",
    "ToolSpec",
    "build_models",
    "is_system_file",
    "load_agent_spec",
    "load_deployment",
    "load_system",
]
