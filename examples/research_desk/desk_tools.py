"""Tools of the research desk: a small keyword search over the markdown documents in ``docs/``.

The documents (``$SHOAL_DESK_DOCS`` to use another directory) are split into passages, one per
paragraph or list, each remembered with its document's file name. A query's words are scored
against a passage's words (a light stemmer folds ``panels``/``panel``, ``costs``/``cost``; a
word also in the document's title counts double), and the best passages come back with the
file name to cite. There is no index and no model: 12 short files are read once per process.

Each specialist agent gets its own search tool over its own documents (its *scope*):
``search_technology`` (how the options work and what they cost to install) and
``search_money_and_rules`` (grants, prices, planning rules, the grid, a worked example). A tool
returns ``{"passages": [{"doc", "text"}, ...]}`` or ``{"error": ...}`` when nothing matches.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shoal.tools import tool

__all__ = [
    "MONEY_DOCS",
    "TECHNOLOGY_DOCS",
    "list_documents",
    "search",
    "search_money_and_rules",
    "search_technology",
]

DOCS_ENV = "SHOAL_DESK_DOCS"

TECHNOLOGY_DOCS = (
    "solar-panels.md",
    "heat-pumps.md",
    "home-batteries.md",
    "insulation.md",
    "district-heating.md",
    "ev-charging.md",
    "community-wind.md",
)
MONEY_DOCS = (
    "grants.md",
    "export-tariffs.md",
    "planning-rules.md",
    "grid-connection.md",
    "case-study-mill-lane.md",
)
#: passages returned per search
TOP = 3
_STOP = frozenset(
    "a an and are as at be by can do does for from how i if in is it its my of on or our "
    "should the their them there these this to we what when which who will with would you "
    "your about much many get".split()
)


@dataclass(frozen=True)
class Passage:
    doc: str
    title: str
    text: str


def docs_path() -> Path:
    explicit = os.environ.get(DOCS_ENV)
    return Path(explicit).expanduser() if explicit else Path(__file__).with_name("docs")


def _stem(word: str) -> str:
    for suffix in ("ies", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)] + ("y" if suffix == "ies" else "")
    return word


def _terms(text: str) -> set[str]:
    words = re.findall(r"[a-z0-9]+", text.lower().replace("-", " "))
    return {_stem(w) for w in words if w not in _STOP and len(w) > 1}


@functools.cache
def _passages(directory: Path) -> tuple[Passage, ...]:
    out: list[Passage] = []
    for path in sorted(directory.glob("*.md")):
        lines = path.read_text(encoding="utf-8").strip().splitlines()
        title = lines[0].lstrip("# ").strip() if lines else path.stem
        for block in re.split(r"\n\s*\n", "\n".join(lines[1:])):
            text = " ".join(line.strip() for line in block.splitlines() if line.strip())
            if text:
                out.append(Passage(path.name, title, text))
    return tuple(out)


def list_documents() -> list[str]:
    """Every document's file name."""
    return sorted({p.doc for p in _passages(docs_path())})


def search(query: str, scope: Sequence[str] | None = None, *, top: int = TOP) -> dict[str, Any]:
    """The best passages for ``query`` among the documents named in ``scope`` (all if None)."""
    wanted = _terms(query)
    if not wanted:
        return {"error": "give a few words to search for"}
    scored = []
    for index, passage in enumerate(_passages(docs_path())):
        if scope is not None and passage.doc not in scope:
            continue
        score = 2 * len(wanted & _terms(passage.title)) + len(wanted & _terms(passage.text))
        if score:
            scored.append((score, -index, passage))
    scored.sort(reverse=True)
    if not scored:
        return {"error": f"nothing about {query!r} in these documents; try other words"}
    return {"passages": [{"doc": p.doc, "text": p.text} for _, _, p in scored[:top]]}


@tool
def search_technology(query: str) -> dict[str, Any]:
    """Search the documents on solar panels, heat pumps, batteries, insulation, district
    heating, car charging and community wind.

    Args:
        query: A few keywords, for example "heat pump cost".
    """
    return search(query, TECHNOLOGY_DOCS)


@tool
def search_money_and_rules(query: str) -> dict[str, Any]:
    """Search the documents on grants, electricity prices, planning rules, grid connection
    and a household's case study.

    Args:
        query: A few keywords, for example "heat pump grant".
    """
    return search(query, MONEY_DOCS)
