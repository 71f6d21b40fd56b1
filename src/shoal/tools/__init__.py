"""Tools: Python functions a model may call, with schemas built from their signatures."""

from shoal.tools.selection import ToolScore, rank_tools, relevant_tools
from shoal.tools.tool import Tool, as_tool, format_tool_result, tool

__all__ = [
    "Tool",
    "ToolScore",
    "as_tool",
    "format_tool_result",
    "rank_tools",
    "relevant_tools",
    "tool",
]
