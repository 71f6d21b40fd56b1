"""``shoal trace THREAD_ID``, and the trace tree ``shoal run --trace`` prints.

A trace is a list of events (:class:`~shoal.observability.TraceEvent`, or their JSON dicts as
the thread store keeps them): spans (an agent run, a model request, a tool call, a flow) and
point events (a route taken, a handoff, a guard's verdict, an approval asked for). Each names
its enclosing span (``parent_id``), so the tree is drawn by indenting every event under its
parent, children in the order they started; one line per event with its kind, its agent, the
data that matters for that kind, and a span's duration.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import click

from shoal.observability import TraceEvent
from shoal.settings import data_dir
from shoal.threads import SQLiteThreadStore

__all__ = ["format_trace", "trace", "trace_json"]

_TEXT = 80


def trace_json(events: Iterable[TraceEvent | Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The events as JSON dicts, ordered by time, each span once."""
    return [event.to_json() for event in _events(events)]


def format_trace(events: Iterable[TraceEvent | Mapping[str, Any]]) -> list[str]:
    """The trace as indented lines (see the module docstring)."""
    ordered = _events(events)
    spans = {event.span_id for event in ordered}
    children: dict[str | None, list[TraceEvent]] = {}
    for event in ordered:
        parent = event.parent_id if event.parent_id in spans else None
        children.setdefault(parent, []).append(event)
    lines: list[str] = []

    def draw(parent: str | None, depth: int, agent: str) -> None:
        for event in children.get(parent, []):
            lines.append("  " * depth + describe_event(event, show_agent=event.agent != agent))
            draw(event.span_id, depth + 1, event.agent)

    draw(None, 0, "")
    return lines


def _events(events: Iterable[TraceEvent | Mapping[str, Any]]) -> list[TraceEvent]:
    by_span: dict[str, TraceEvent] = {}
    points: list[TraceEvent] = []
    for item in events:
        event = item if isinstance(item, TraceEvent) else TraceEvent.from_json(item)
        if event.span_id:
            by_span[event.span_id] = event  # a span stored twice is drawn once
        else:
            points.append(event)
    return sorted([*by_span.values(), *points], key=lambda e: e.at)


def describe_event(event: TraceEvent, *, show_agent: bool = True) -> str:
    """One line: the kind, what it was about, and how long a span took (``show_agent``: name
    the agent, when it is not the enclosing span's)."""
    d = event.data
    kind = event.kind
    if kind == "system":
        text = f"{kind} {d.get('system', event.agent)}"
        text += _pairs(entry=d.get("entry"), stop=d.get("stop_reason"), answer=d.get("agent"))
        if d.get("message"):
            text += f"  {_quote(d['message'])}"
    elif kind == "run":
        text = f"run {event.agent}"
        text += _pairs(
            model=d.get("model"),
            stop=d.get("stop_reason"),
            steps=d.get("steps"),
            tokens=_tokens(d),
        )
        if d.get("output"):
            text += f"  → {_quote(d['output'])}"
    elif kind == "model.request":
        calls = d.get("calls") or []
        if calls:
            what = "→ " + ", ".join(map(str, calls))
        elif d.get("parse_error"):
            what = f"✗ {_clip(str(d['parse_error']))}"
        else:
            what = f"→ text {_quote(d.get('text') or '')}"
        text = f"{kind}  step {d.get('step', '?')}  {what}"
    elif kind == "tool.call":
        text = f"{kind}  {d.get('tool', '?')}({_arguments(d.get('arguments'))})"
        outcome = d.get("outcome")
        if outcome is not None:
            text += f"  {outcome}"
            detail = d.get("error") or d.get("result")
            if detail:
                text += f" → {_clip(str(detail))}"
    elif kind == "route":
        text = f"{kind}  {d.get('router', '?')}: {d.get('kind', '?')} → {d.get('model', '?')}"
        text += _reason(d)
    elif kind == "agent.route":
        text = f"{kind}  {d.get('router', '?')} → {d.get('target', '?')}  by {d.get('by', '?')}"
        text += _reason(d, ": ")
    elif kind == "handoff":
        text = f"{kind}  {d.get('source', '?')} → {d.get('target', '?')}" + _reason(d)
    elif kind == "pipeline.step":
        text = f"{kind}  {d.get('pipeline', '?')}[{d.get('index', '?')}] {d.get('agent', '')}"
    elif kind == "fanout":
        text = f"{kind}  {d.get('name', '?')}" + _pairs(
            branches=_names(d.get("branches")), limit=d.get("limit")
        )
    elif kind == "critic.round":
        text = f"{kind}  {d.get('loop', '?')} round {d.get('round', '?')}: {d.get('verdict')}"
        if d.get("feedback"):
            text += f"  {_quote(d['feedback'])}"
    elif kind == "chain.step":
        text = f"{kind}  {d.get('chain', '?')}.{d.get('step', '?')}"
    elif kind == "guard":
        text = f"{kind}  {d.get('guard', '?')} {d.get('stage', '?')}: {d.get('action', '?')}"
        if d.get("tool"):
            text += f" ({d['tool']})"
        text += _reason(d)
    elif kind == "approval.requested":
        text = f"{kind}  {d.get('tool', '?')}({_arguments(d.get('arguments'))})"
        text += f"  [{d.get('call_id', '?')}]"
    elif kind == "approval.decided":
        verdict = "approved" if d.get("approved") else "rejected"
        text = f"{kind}  {d.get('tool', '?')} [{d.get('call_id', '?')}] {verdict}" + _reason(d)
    elif kind == "retry":
        text = f"{kind}  {_clip(str(d.get('why', '')))}"
    elif kind == "note":
        text = f"{kind}  {_clip(str(d.get('text', '')))}"
    else:
        text = kind + _pairs(**{k: v for k, v in d.items() if not isinstance(v, dict | list)})
    if show_agent and event.agent and kind not in ("system", "run"):
        text += f"  [{event.agent}]"
    if event.duration is not None:
        text += f"  {event.duration:.2f}s"
    if event.error:
        text += f"  ✗ {_clip(event.error)}"
    return text


def _pairs(**values: Any) -> str:
    return "".join(f"  {k}={v}" for k, v in values.items() if v not in (None, "", []))


def _tokens(data: Mapping[str, Any]) -> str | None:
    prompt, completion = data.get("prompt_tokens"), data.get("completion_tokens")
    if prompt is None and completion is None:
        return None
    return f"{prompt or 0}+{completion or 0}"


def _reason(data: Mapping[str, Any], sep: str = "  ") -> str:
    reason = data.get("reason")
    return f"{sep}{_clip(str(reason))}" if reason else ""


def _names(value: Any) -> str | None:
    if isinstance(value, list | tuple):
        return ",".join(map(str, value))
    return None if value is None else str(value)


def _arguments(arguments: Any) -> str:
    if not isinstance(arguments, Mapping):
        return "" if arguments is None else _clip(str(arguments))
    inner = ", ".join(
        f"{k}={json.dumps(v, ensure_ascii=False, default=str)}" for k, v in arguments.items()
    )
    return _clip(inner)


def _clip(text: str, limit: int = _TEXT) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _quote(text: Any) -> str:
    return f'"{_clip(str(text))}"'


def echo_trace(events: Sequence[TraceEvent | Mapping[str, Any]]) -> None:
    """The trace tree on stderr (nothing for an empty trace)."""
    lines = format_trace(events)
    if lines:
        click.echo("trace:", err=True)
        for line in lines:
            click.echo("  " + line, err=True)


@click.command()
@click.argument("thread_id")
@click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="SQLite thread store [default: $SHOAL_HOME/threads.db].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the events as one JSON list.")
def trace(thread_id: str, db: Path | None, as_json: bool) -> None:
    """Print the stored trace of THREAD_ID: which agent did what, routes, handoffs, tool
    calls and approvals, as a tree."""

    async def read() -> list[dict[str, Any]]:
        store = SQLiteThreadStore(db or data_dir() / "threads.db")
        try:
            await store.get_thread(thread_id)  # ThreadNotFoundError: exit 10
            return await store.get_trace(thread_id)
        finally:
            await store.close()

    events = asyncio.run(read())
    if as_json:
        click.echo(json.dumps(trace_json(events), ensure_ascii=False, default=str))
        return
    lines = format_trace(events)
    if not lines:
        click.echo(f"thread {thread_id} has no trace (no run recorded one)", err=True)
        return
    for line in lines:
        click.echo(line)
