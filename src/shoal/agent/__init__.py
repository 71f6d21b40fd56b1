"""The agent and its run loop (layer L3)."""

from shoal.agent.agent import Agent
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

__all__ = [
    "Agent",
    "FinalEvent",
    "RunEvent",
    "RunResult",
    "StopReason",
    "TextEvent",
    "ToolCallEvent",
    "ToolCallRecord",
    "ToolResultEvent",
]
