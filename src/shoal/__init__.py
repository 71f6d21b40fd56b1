"""Shoal: agents with tools on small language models, on your own machine.

The public API is what ``__all__`` lists; everything else lives in private implementation
modules and may change. ``import shoal`` loads no engine: llama.cpp is imported when a model
is first loaded.
"""

from shoal.agent import (
    Agent,
    FinalEvent,
    Route,
    RunEvent,
    RunResult,
    TextEvent,
    ToolCallEvent,
    ToolCallRecord,
    ToolResultEvent,
)
from shoal.exceptions import ShoalError
from shoal.messages import (
    AssistantMessage,
    Message,
    SystemMessage,
    ToolCall,
    ToolMessage,
    Usage,
    UserMessage,
)
from shoal.models import FunctionModel, LlamaCppModel, Model, TestModel, resolve_model
from shoal.settings import ModelSettings
from shoal.threads import InMemoryThreadStore, SQLiteThreadStore, Thread, ThreadStore
from shoal.tools import Tool, tool

__version__ = "0.1.0"

__all__ = [
    "Agent",
    "AssistantMessage",
    "FinalEvent",
    "FunctionModel",
    "InMemoryThreadStore",
    "LlamaCppModel",
    "Message",
    "Model",
    "ModelSettings",
    "Route",
    "RunEvent",
    "RunResult",
    "SQLiteThreadStore",
    "ShoalError",
    "SystemMessage",
    "TestModel",
    "TextEvent",
    "Thread",
    "ThreadStore",
    "Tool",
    "ToolCall",
    "ToolCallEvent",
    "ToolCallRecord",
    "ToolMessage",
    "ToolResultEvent",
    "Usage",
    "UserMessage",
    "__version__",
    "resolve_model",
    "tool",
]
