"""Tools: Python functions a model may call, with schemas built from their signatures."""

from shoal.tools.sandbox import SandboxError, Workspace, file_tools
from shoal.tools.selection import (
    ToolScore,
    mentioned_parameters,
    narrow_to_mentioned,
    rank_tools,
    relevant_tools,
)
from shoal.tools.shell import shell_tool
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
    "SandboxError",
    "Tool",
    "ToolScore",
    "Workspace",
    "as_tool",
    "check_output_schema",
    "decode_answer",
    "file_tools",
    "format_tool_result",
    "mentioned_parameters",
    "narrow_to_mentioned",
    "rank_tools",
    "relevant_tools",
    "schema_problem",
    "shell_tool",
    "tool",
]
