"""``shoal eval tools``: measure tool calling on a BFCL-format suite.

The questions run through the same agent path a user's agent runs through (see
:mod:`shoal.evals.runner`); the report gives accuracy, error buckets and median latency per
category, and ``--output`` writes every item's outcome as JSON.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from shoal.evals import (
    BUCKETS,
    STRATEGIES,
    EvalReport,
    ItemOutcome,
    evaluate,
    irrelevance_items,
    load_suite,
)
from shoal.exceptions import UserError
from shoal.models import resolve_model

__all__ = ["eval_group", "format_report"]


@click.group(name="eval")
def eval_group() -> None:
    """Measure agents and models."""


@eval_group.command(name="tools")
@click.option(
    "--suite",
    "suite",
    required=True,
    type=click.Path(path_type=Path),
    help="Directory of BFCL-format files (BFCL_v4_<category>.json + possible_answer/).",
)
@click.option("--model", "model_ref", default="smollm2-135m", show_default=True)
@click.option(
    "--strategy",
    type=click.Choice(STRATEGIES),
    default="auto",
    show_default=True,
    help="How tool calls are decided: auto = what the model's profile recommends.",
)
@click.option(
    "--category",
    "categories",
    multiple=True,
    help="A category to run (repeatable; default: every file in the suite).",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help="At most N questions per category, spread evenly over the file.",
)
@click.option(
    "--irrelevance/--no-irrelevance",
    default=True,
    show_default=True,
    help="Add generated cases where no offered tool fits (a question with another's tools).",
)
@click.option(
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Write the full report (every item) as JSON to this file.",
)
def eval_tools(
    suite: Path,
    model_ref: str,
    strategy: str,
    categories: tuple[str, ...],
    limit: int | None,
    irrelevance: bool,
    output: Path | None,
) -> None:
    """Score tool calls on a BFCL-format suite (AST matching), in auto mode."""
    items = load_suite(suite, categories=categories or None, limit=limit)
    if irrelevance:
        extra = irrelevance_items(items)
        if limit is not None and len(extra) > limit:
            step = len(extra) / limit
            extra = [extra[int(i * step)] for i in range(limit)]
        items = [*items, *extra]
    if not items:
        raise UserError(f"no questions to run in {suite}")
    if output is not None:
        _check_writable(output)
    model = resolve_model(model_ref)
    progress = _Progress(len(items), f"{model_ref} ({strategy})")

    async def run() -> EvalReport:
        try:
            return await evaluate(items, model, strategy=strategy, on_item=progress.advance)
        finally:
            await model.close()

    report = asyncio.run(run())
    progress.close()
    click.echo(format_report(report))
    if output is not None:
        output.write_text(json.dumps(report.to_json(), indent=1) + "\n", encoding="utf-8")
        click.echo(f"report written to {output}", err=True)


class _Progress:
    """A one-line progress bar on stderr (a line per tenth of the run when not a terminal)."""

    def __init__(self, total: int, label: str) -> None:
        self.total = total
        self.label = label
        self.done = 0
        self.correct = 0
        self.started = time.monotonic()
        self.stream = sys.stderr
        self.tty = self.stream.isatty()

    def advance(self, outcome: ItemOutcome) -> None:
        self.done += 1
        self.correct += outcome.correct
        every = max(1, self.total // 10)
        if self.tty or self.done % every == 0 or self.done == self.total:
            self._show()

    def _show(self) -> None:
        elapsed = time.monotonic() - self.started
        left = elapsed / self.done * (self.total - self.done)
        width = 24
        filled = width * self.done // self.total
        line = (
            f"{self.label} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
            f"accuracy {self.correct / self.done:.0%}, {elapsed:.0f}s elapsed, ~{left:.0f}s left"
        )
        self.stream.write(("\r" + line) if self.tty else line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _check_writable(path: Path) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(f"cannot write the report: directory {parent} does not exist")


def format_report(report: EvalReport) -> str:
    """The report as a plain-text table: one row per category, then the total."""
    short = {
        "no_call": "no call",
        "wrong_function": "wrong fn",
        "wrong_arguments": "wrong args",
        "wrong_count": "wrong n",
        "invalid_output": "invalid",
        "called_when_should_not": "called",
    }
    header = ["category", "n", "accuracy", "median s", *(short[b] for b in BUCKETS)]
    rows: list[list[Any]] = []
    for summary in [*report.categories, report.overall]:
        rows.append(
            [
                summary.category,
                summary.total,
                f"{summary.accuracy:.1%}",
                f"{summary.median_seconds:.2f}",
                *(summary.buckets[b] for b in BUCKETS),
            ]
        )
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = [f"model {report.model}, strategy {report.strategy}"]
    for row in [header, *rows]:
        lines.append(
            "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True))
        )
    return "\n".join(lines)
