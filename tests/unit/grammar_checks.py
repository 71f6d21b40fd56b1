"""Helpers for grammar tests: llama.cpp's own converter and parser, no model weights."""

from __future__ import annotations

import llama_cpp
import llama_cpp.llama_grammar
import pytest


def converter() -> llama_cpp.llama_grammar.SchemaConverter:
    return llama_cpp.llama_grammar.SchemaConverter(
        prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False
    )


def llama_cpp_accepts(text: str, capfd: pytest.CaptureFixture[str]) -> tuple[bool, str]:
    """Whether llama.cpp parses ``text`` as a GBNF grammar, and what it printed.

    ``LlamaGrammar.from_string`` alone accepts undefined rules, so a grammar sampler is built
    too and llama.cpp's stderr is read for parse errors.
    """
    capfd.readouterr()
    llama_cpp.LlamaGrammar.from_string(text, verbose=False)
    sampler = llama_cpp.llama_sampler_init_grammar(None, text.encode("utf-8"), b"root")
    if sampler:
        llama_cpp.llama_sampler_free(sampler)
    err = capfd.readouterr().err
    ok = bool(sampler) and "parse: error" not in err and "failed to parse" not in err
    return ok, err


def assert_parses(text: str, capfd: pytest.CaptureFixture[str]) -> None:
    ok, err = llama_cpp_accepts(text, capfd)
    assert ok, f"llama.cpp rejected the grammar:\n{err}\n--- grammar ---\n{text}"


def rules_of(grammar: str) -> dict[str, str]:
    """The grammar's rules by name (a rule defined twice fails the test)."""
    rules: dict[str, str] = {}
    for line in grammar.splitlines():
        if " ::= " in line:
            name, body = line.split(" ::= ", 1)
            assert name not in rules, f"rule {name} defined twice"
            rules[name] = body
    return rules
