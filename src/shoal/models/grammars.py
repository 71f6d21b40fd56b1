"""The GBNF grammar that constrains a request, shared by every backend that can take one.

:func:`grammar_for` turns a request's offered tools (each with its narrowed call schema, see
``params.call_tools()``) and its answer schema into one GBNF grammar
(:mod:`shoal.toolcalls.grammar`): text or a Hermes call in ``auto`` mode, only a call when one
is required, a JSON value matching ``output_schema`` for a structured answer. The embedded engine
(:mod:`shoal.models.llamacpp`) decodes under it in-process; the HTTP backend
(:mod:`shoal.models.openai_compat`) sends the same text in the body's ``grammar`` field to a
server that honours one (llama-server, llama-cpp-python's server), so a call is
equally impossible to get wrong on both.

The per-schema rules come from llama.cpp's own JSON-schema-to-GBNF converter
(``llama_cpp.llama_grammar.SchemaConverter``, :func:`schema_converter`): the converter the
engine maintains rather than a hand-written one. ``llama_cpp`` is imported lazily, on the first
grammar or model load, here and in :mod:`shoal.models.llamacpp` only.
"""

from __future__ import annotations

from typing import Any

from shoal.exceptions import ModelLoadError
from shoal.models.base import ModelRequestParameters
from shoal.toolcalls import build_output_grammar, build_tool_grammar

__all__ = ["grammar_for", "import_llama_cpp", "schema_converter"]


def import_llama_cpp() -> Any:
    """The ``llama_cpp`` module (with its grammar submodule), or a ModelLoadError saying how to
    install it."""
    try:
        import llama_cpp
        import llama_cpp.llama_grammar
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ModelLoadError(
            "the embedded engine needs llama-cpp-python: pip install llama-cpp-python"
        ) from exc
    return llama_cpp


def schema_converter() -> Any:
    """llama.cpp's own JSON-schema-to-GBNF converter (see :mod:`shoal.toolcalls.grammar`)."""
    llama_cpp = import_llama_cpp()
    return llama_cpp.llama_grammar.SchemaConverter(
        prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False
    )


def grammar_for(params: ModelRequestParameters) -> str | None:
    """The GBNF text that constrains a request, or None for free text."""
    tools = params.call_tools()
    if tools:
        return build_tool_grammar(
            tools,
            allow_text=not params.call_required,
            output_schema=params.output_schema,
            converter_factory=schema_converter,
            copy_sources=params.copy_sources,
        )
    if params.output_schema is not None:
        return build_output_grammar(params.output_schema, converter_factory=schema_converter)
    return None
