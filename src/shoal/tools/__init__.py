"""Tools: Python functions a model may call, with schemas built from their signatures."""

from shoal.tools.selection import (
    ToolScore,
    mentioned_parameters,
    narrow_to_mentioned,
    rank_tools,
    relevant_tools,
)
from shoal.tools.tool import (
    Tool,
    as_tool,
    check_output_schema,
    decode_answer,
    format_tool_result,
    schema_problem,
    tool,
)

__all__ = [
    "Tool",
    "ToolScore",
    "as_tool",
    "check_output_schema",
    "decode_answer",
    "format_tool_result",
    "mentioned_parameters",
    "narrow_to_mentioned",
    "rank_tools",
    "relevant_tools",
    "schema_problem",
    "tool",
]
