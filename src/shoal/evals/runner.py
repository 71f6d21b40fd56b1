"""Run a tool-calling suite through the ordinary agent path and score it.

Each question becomes one :class:`~shoal.agent.Agent` run with the question's functions
declared as external tools (:meth:`~shoal.tools.Tool.external`): the run stops at the first
validated call and hands it back, exactly as an API client's tools are handled. No special
decoding path exists for the evaluator: the agent loop, the model profile's tool strategy, the
grammar, the parser and the re-ask budget are those a user's agent runs with.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, get_args

from shoal.agent import Agent
from shoal.evals.bfcl import BfclItem, ErrorBucket, Score, score_calls
from shoal.exceptions import ModelBehaviorError, UserError
from shoal.models import Model
from shoal.settings import ModelSettings
from shoal.tools import Tool

__all__ = [
    "BUCKETS",
    "STRATEGIES",
    "CategorySummary",
    "EvalReport",
    "ItemOutcome",
    "evaluate",
]

#: the error buckets, in the order reports list them
BUCKETS: tuple[str, ...] = get_args(ErrorBucket)

#: ``--strategy`` values: how the model decides whether and what to call (see docs)
STRATEGIES = ("auto", "grammar", "relevance", "gated", "two-phase", "parse")

#: greedy decoding (reproducible); text answers capped as the baseline's (only calls are scored)
_GREEDY = ModelSettings(temperature=0.0, max_tokens=256)


@dataclass(frozen=True)
class ItemOutcome:
    """What happened on one question."""

    id: str
    category: str
    correct: bool
    bucket: str | None
    detail: str
    calls: list[dict[str, Any]]
    text: str
    seconds: float
    retries: int
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class CategorySummary:
    category: str
    total: int
    correct: int
    accuracy: float
    median_seconds: float
    buckets: dict[str, int]


@dataclass(frozen=True)
class EvalReport:
    """A whole run: per-item outcomes and per-category summaries."""

    model: str
    strategy: str
    outcomes: list[ItemOutcome]

    @property
    def categories(self) -> list[CategorySummary]:
        by_category: dict[str, list[ItemOutcome]] = {}
        for outcome in self.outcomes:
            by_category.setdefault(outcome.category, []).append(outcome)
        return [_summarize(name, items) for name, items in by_category.items()]

    @property
    def overall(self) -> CategorySummary:
        return _summarize("all", self.outcomes)

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "strategy": self.strategy,
            "overall": asdict(self.overall),
            "categories": [asdict(summary) for summary in self.categories],
            "items": [asdict(outcome) for outcome in self.outcomes],
        }


def _summarize(name: str, outcomes: Sequence[ItemOutcome]) -> CategorySummary:
    correct = sum(1 for o in outcomes if o.correct)
    buckets = Counter(o.bucket for o in outcomes if o.bucket is not None)
    return CategorySummary(
        category=name,
        total=len(outcomes),
        correct=correct,
        accuracy=correct / len(outcomes) if outcomes else 0.0,
        median_seconds=statistics.median(o.seconds for o in outcomes) if outcomes else 0.0,
        buckets={bucket: buckets.get(bucket, 0) for bucket in BUCKETS},
    )


def _check_strategy(strategy: str) -> None:
    if strategy not in STRATEGIES:
        raise UserError(f"unknown strategy {strategy!r}; choose one of: {', '.join(STRATEGIES)}")


def agent_for_item(item: BfclItem, model: Model, strategy: str = "auto") -> Agent[str]:
    """The agent a question runs on: its functions as external tools, greedy decoding."""
    _check_strategy(strategy)
    instructions = "\n".join(m["content"] for m in item.messages if m.get("role") == "system")
    tools = [
        Tool.external(t.name, description=t.description, parameters=t.parameters)
        for t in item.tools
    ]
    return Agent(
        "bfcl",
        model,
        instructions=instructions,
        tools=tools,
        settings=_GREEDY,
        tool_strategy=None if strategy == "auto" else strategy,
    )


async def evaluate_item(item: BfclItem, model: Model, strategy: str = "auto") -> ItemOutcome:
    """Run one question through an agent and score the calls it ends with."""
    agent = agent_for_item(item, model, strategy)
    started = time.perf_counter()
    calls: list[dict[str, Any]] = []
    text = ""
    retries = 0
    notes: list[str] = []
    try:
        result = await agent.run(item.question)
    except ModelBehaviorError as exc:
        retries = agent.retries + 1  # the whole budget, and the attempt that exhausted it
        notes.append(str(exc))
        score = score_calls(item, [], invalid_output=True)
    else:
        retries = result.retries
        notes = list(result.notes)
        text = result.output if isinstance(result.output, str) else ""
        calls = [{"name": c.name, "arguments": c.arguments} for c in result.pending_calls]
        score = score_calls(item, result.pending_calls, invalid_output=result.retries > 0)
    return _outcome(item, score, calls, text, time.perf_counter() - started, retries, notes)


def _outcome(
    item: BfclItem,
    score: Score,
    calls: list[dict[str, Any]],
    text: str,
    seconds: float,
    retries: int,
    notes: list[str],
) -> ItemOutcome:
    return ItemOutcome(
        id=item.id,
        category=item.category,
        correct=score.correct,
        bucket=score.bucket,
        detail=score.detail,
        calls=calls,
        text=text[:500],
        seconds=round(seconds, 4),
        retries=retries,
        notes=notes,
    )


async def evaluate(
    items: Sequence[BfclItem],
    model: Model,
    *,
    strategy: str = "auto",
    on_item: Callable[[ItemOutcome], None] | None = None,
) -> EvalReport:
    """Evaluate every item in order (one model, one request at a time)."""
    _check_strategy(strategy)
    await model.prepare()
    outcomes = []
    for item in items:
        outcome = await evaluate_item(item, model, strategy)
        outcomes.append(outcome)
        if on_item is not None:
            on_item(outcome)
    return EvalReport(model=model.name, strategy=strategy, outcomes=outcomes)
