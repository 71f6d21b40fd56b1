"""Declarative agent specs: an agent described by a YAML file (layer L4)."""

from shoal.spec.loader import load_agent_spec
from shoal.spec.schema import AgentSpec, ToolSpec

__all__ = ["AgentSpec", "ToolSpec", "load_agent_spec"]
