"""The agent and its run loop (layer L3)."""

from shoal.agent.agent import TOOL_STRATEGIES, Agent
from shoal.agent.result import (
    FinalEvent,
    RunEvent,
    RunResult,
    StopReason,
    TextEvent,
    ToolCallEvent,
    ToolCallRecord,
    ToolResultEvent,
)
from shoal.agent.routes import Route

__all__ = [
    "TOOL_STRATEGIES",
    "Agent",
    "FinalEvent",
    "Route",
    "RunEvent",
    "RunResult",
    "StopReason",
    "TextEvent",
    "ToolCallEvent",
    "ToolCallRecord",
    "ToolResultEvent",
]
