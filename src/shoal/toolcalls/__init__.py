"""How tool calls are written in a prompt, constrained by a grammar and parsed back (layer L1)."""

from shoal.toolcalls.grammar import (
    CALL_TAIL,
    NO_CALL_GRAMMAR,
    SchemaConverter,
    build_arguments_grammar,
    build_output_grammar,
    build_tool_grammar,
    build_value_grammar,
    call_head,
    required_fields,
)
from shoal.toolcalls.hermes import (
    TOOL_CALL_CLOSE,
    TOOL_CALL_OPEN,
    render_call,
    render_tool_result,
    render_tools_section,
)
from shoal.toolcalls.parse import ParsedOutput, TextStreamSplitter, parse_model_output
from shoal.toolcalls.repair import coerce_arguments, validate_arguments

__all__ = [
    "CALL_TAIL",
    "NO_CALL_GRAMMAR",
    "TOOL_CALL_CLOSE",
    "TOOL_CALL_OPEN",
    "ParsedOutput",
    "SchemaConverter",
    "TextStreamSplitter",
    "build_arguments_grammar",
    "build_output_grammar",
    "build_tool_grammar",
    "build_value_grammar",
    "call_head",
    "coerce_arguments",
    "parse_model_output",
    "render_call",
    "render_tool_result",
    "render_tools_section",
    "required_fields",
    "validate_arguments",
]
