"""Which of the offered tools a request is about, decided in code.

A model of a few hundred million parameters is poor at deciding *whether* to call a tool and
*which* one: measured on SmolLM2-135M, it answers in prose when a call is allowed but not
required, and when a call is required it picks a wrong tool for most questions (see
docs/tool-calling.md). It is good at filling in arguments once the tool is fixed. So for such
models the decision is made here, by lexical relevance, and the model fills in the arguments
under a grammar.

The score is a BM25-style sum over the query's content words of their matches in a tool's
name, parameter names and descriptions (name and parameters weigh more than prose), with
light stemming so ``orders`` matches ``order``. A tool is *relevant* when a content word of
the query matches its name or a parameter name, or when at least two match its descriptions.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from shoal.messages import ToolDefinition

__all__ = [
    "ToolScore",
    "mentioned_parameters",
    "narrow_to_mentioned",
    "rank_tools",
    "relevant_tools",
    "terms",
]

_WORD = re.compile(r"[A-Za-z]+|\d+")
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")
_STOPWORDS = frozenset(
    """a about above after again all am an and any are as at be been before being below between
    both but by can could did do does doing down during each few for from further get got had
    has have having he her here hers him his how i if in into is it its itself just me more
    most my myself no nor not now of off on once only or other our ours out over own please
    same she should so some such than that the their theirs them then there these they this
    those through to too under until up very was we were what when where which while who whom
    why will with would you your yours yourself hi hello thanks thank ok okay yes tell know
    want need like give find show let use make new one two""".split()
)

#: weights of the places a word can match in a tool
_NAME, _PARAM, _TEXT = 3.0, 2.0, 1.0


def _stem(word: str) -> str:
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("sses", "xes", "zes", "ches", "shes")):
        return word[:-2]
    for suffix in ("ing", "ed", "s"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix) and not word.endswith("ss"):
            return word[: -len(suffix)]
    return word


def terms(text: str) -> list[str]:
    """Content words of ``text``: split on non-letters and camelCase, lower-cased, stemmed."""
    words = _WORD.findall(_CAMEL.sub(" ", text.replace("_", " ").replace(".", " ")))
    return [
        _stem(w.lower())
        for w in words
        if len(w) > 1 and w.lower() not in _STOPWORDS and not w.isdigit()
    ]


def _schema_text(schema: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Parameter names and descriptions in a JSON schema (nested objects included)."""
    names: list[str] = []
    texts: list[str] = []
    for name, prop in (schema.get("properties") or {}).items():
        names.append(name)
        if isinstance(prop, dict):
            texts.append(str(prop.get("description", "")))
            enum = prop.get("enum")
            if isinstance(enum, list):
                texts.extend(str(v) for v in enum)
            inner_names, inner_texts = _schema_text(prop)
            names.extend(inner_names)
            texts.extend(inner_texts)
    return names, texts


@dataclass(frozen=True)
class ToolScore:
    tool: ToolDefinition
    score: float
    #: query words found in the tool's name or parameter names
    key_matches: tuple[str, ...]
    #: query words found only in its descriptions
    text_matches: tuple[str, ...]

    @property
    def relevant(self) -> bool:
        return bool(self.key_matches) or len(self.text_matches) >= 2


def rank_tools(query: str, tools: Sequence[ToolDefinition]) -> list[ToolScore]:
    """Every tool with its relevance to ``query``, best first (ties keep declaration order)."""
    fields = []
    for tool in tools:
        param_names, param_texts = _schema_text(tool.parameters)
        fields.append(
            (
                set(terms(tool.name)),
                set(terms(" ".join(param_names))),
                set(terms(" ".join([tool.description, *param_texts]))),
            )
        )
    # inverse document frequency over the tools: a word every tool shares decides nothing
    count = len(tools)

    def idf(word: str) -> float:
        hits = sum(1 for f in fields if any(word in part for part in f))
        return math.log(1 + (count - hits + 0.5) / (hits + 0.5))

    query_terms = list(dict.fromkeys(terms(query)))
    scored = []
    for tool, (name, params, text) in zip(tools, fields, strict=True):
        score, keys, texts = 0.0, [], []
        for word in query_terms:
            weight = _NAME if word in name else _PARAM if word in params else 0.0
            if weight:
                keys.append(word)
            elif word in text:
                weight = _TEXT
                texts.append(word)
            score += weight * idf(word)
        scored.append(ToolScore(tool, score, tuple(keys), tuple(texts)))
    order = sorted(range(count), key=lambda i: -scored[i].score)
    return [scored[i] for i in order]


def relevant_tools(
    query: str, tools: Sequence[ToolDefinition], *, limit: int = 3, margin: float = 0.75
) -> list[ToolDefinition]:
    """The relevant tools for ``query``, best first: at most ``limit``, and only those scoring
    at least ``margin`` times the best (a clear winner is offered alone)."""
    ranked = [s for s in rank_tools(query, tools) if s.relevant]
    if not ranked:
        return []
    best = ranked[0].score
    return [s.tool for s in ranked if s.score >= margin * best][:limit]


def mentioned_parameters(query: str, tool: ToolDefinition) -> list[str]:
    """The optional top-level parameters of ``tool`` that ``query`` talks about.

    A parameter is mentioned when one of its enum values appears in the query, or a content
    word of the query matches its name or description but nowhere else in the tool (not the
    tool's name or description, not a required parameter): ``vegan`` selects
    ``dietary_requirements`` ("e.g. vegan, gluten-free"), while a word the whole tool is about
    (``light`` for ``speed_of_light`` of ``light_travel_time``) selects nothing.
    """
    schema = tool.parameters
    properties: dict[str, Any] = schema.get("properties") or {}
    required = set(schema.get("required") or ())
    query_terms = set(terms(query))
    lowered = query.lower()
    common = set(terms(tool.name)) | set(terms(tool.description))
    for name in required:
        prop = properties.get(name)
        common |= set(terms(name))
        if isinstance(prop, dict):
            common |= set(terms(str(prop.get("description", ""))))
    found = []
    for name, prop in properties.items():
        if name in required or not isinstance(prop, dict):
            continue
        enum = prop.get("enum")
        if not isinstance(enum, list):
            enum = []
        if (
            (set(terms(name)) - common) & query_terms
            or any(isinstance(v, str) and v.lower() in lowered for v in enum)
            or (set(terms(str(prop.get("description", "")))) - common) & query_terms
        ):
            found.append(name)
    return found


def narrow_to_mentioned(query: str, tool: ToolDefinition) -> dict[str, Any]:
    """``tool``'s parameter schema for a call answering ``query``: the required parameters and
    the optional ones the query mentions (now required); the others are left out.

    For models that skip optional arguments the user asked for, or fill ones nobody asked for.
    """
    schema = dict(tool.parameters)
    properties: dict[str, Any] = dict(schema.get("properties") or {})
    keep = [*(schema.get("required") or ()), *mentioned_parameters(query, tool)]
    schema["properties"] = {name: prop for name, prop in properties.items() if name in keep}
    schema["required"] = [name for name in properties if name in keep]
    return schema
