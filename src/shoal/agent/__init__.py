"""The agent and its run loop (layer L3)."""

from shoal.agent.agent import TOOL_STRATEGIES, Agent
from shoal.agent.approval import (
    APPROVAL_KEY,
    calls_from_json,
    calls_to_json,
    check_decisions,
    pending_approval,
    stored_role,
)
from shoal.agent.calls import current_role
from shoal.agent.result import (
    ApprovalEvent,
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
    "APPROVAL_KEY",
    "TOOL_STRATEGIES",
    "Agent",
    "ApprovalEvent",
    "FinalEvent",
    "Route",
    "RunEvent",
    "RunResult",
    "StopReason",
    "TextEvent",
    "ToolCallEvent",
    "ToolCallRecord",
    "ToolResultEvent",
    "calls_from_json",
    "calls_to_json",
    "check_decisions",
    "current_role",
    "pending_approval",
    "stored_role",
]
