"""Composing agents in code (layer L4): routers, teams with handoffs, pipelines, fan-out,
critic loops and mini-chains, built on the public Agent API. See docs/orchestration.md."""

from shoal.models import RouteRule
from shoal.orchestration.agent_tool import agent_tool
from shoal.orchestration.base import AgentFlow, Flow, FlowResult, RouteChoice, as_flow
from shoal.orchestration.chain import Chain, Step
from shoal.orchestration.critic import CriticLoop, CriticVerdict
from shoal.orchestration.pipeline import FanOut, Pipeline
from shoal.orchestration.router import Router
from shoal.orchestration.running import FLOW_KEY
from shoal.orchestration.team import APPROVAL_TRANSFER_TOOL, TEAM_KEY, TRANSFER_TOOL, Team

__all__ = [
    "APPROVAL_TRANSFER_TOOL",
    "FLOW_KEY",
    "TEAM_KEY",
    "TRANSFER_TOOL",
    "AgentFlow",
    "Chain",
    "CriticLoop",
    "CriticVerdict",
    "FanOut",
    "Flow",
    "FlowResult",
    "Pipeline",
    "RouteChoice",
    "RouteRule",
    "Router",
    "Step",
    "Team",
    "agent_tool",
    "as_flow",
]
