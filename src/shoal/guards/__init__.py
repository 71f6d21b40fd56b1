"""Guards: checks on a run's input, tool calls, tool results and output.

The interface and the combinators the agent loop calls are in ``base``; the built-ins are size
and rate limits (``limits``), prompt-injection markers (``injection``), personal data redaction
(``pii``), and tool permissions by role and approvals (``permissions``).
"""

from shoal.guards.base import (
    Action,
    Guard,
    GuardContext,
    Screened,
    Stage,
    TextStage,
    Verdict,
    permitted_tools,
    screen_call,
    screen_text,
)
from shoal.guards.injection import DEFAULT_INJECTION_MARKERS, InjectionGuard
from shoal.guards.limits import RateLimitGuard, SizeLimitGuard
from shoal.guards.permissions import ApprovalGuard, ToolPermissionGuard
from shoal.guards.pii import PIIRedactionGuard, luhn_valid, redact_pii

__all__ = [
    "DEFAULT_INJECTION_MARKERS",
    "Action",
    "ApprovalGuard",
    "Guard",
    "GuardContext",
    "InjectionGuard",
    "PIIRedactionGuard",
    "RateLimitGuard",
    "Screened",
    "SizeLimitGuard",
    "Stage",
    "TextStage",
    "ToolPermissionGuard",
    "Verdict",
    "luhn_valid",
    "permitted_tools",
    "redact_pii",
    "screen_call",
    "screen_text",
]
