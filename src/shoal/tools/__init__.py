"""Tools: Python functions a model may call, with schemas built from their signatures."""

from shoal.tools.selection import (
    ToolScore,
    mentioned_parameters,
    narrow_to_mentioned,
    rank_tools,
    relevant_tools,
)
from shoal.tools.tool import Tool, as_tool, format_tool_result, tool

__all__ = [
    "Tool",
    "ToolScore",
    "as_tool",
    "format_tool_result",
    "mentioned_parameters",
    "narrow_to_mentioned",
    "rank_tools",
    "relevant_tools",
    "tool",
]
