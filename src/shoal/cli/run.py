"""``shoal run`` and ``shoal chat``: run an agent spec from the terminal.

Tool calls and their results are shown on stderr as they happen; the answer streams to stdout,
so ``shoal run spec.yaml "..." > answer.txt`` keeps only the answer. ``--json`` prints one JSON
object instead. Conversations live in a SQLite thread store (``$SHOAL_HOME/threads.db`` by
default); every run prints its thread id so the conversation can be continued with ``--thread``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from shoal.agent import (
    Agent,
    FinalEvent,
    RunResult,
    TextEvent,
    ToolCallEvent,
    ToolCallRecord,
    ToolResultEvent,
)
from shoal.settings import data_dir
from shoal.spec import load_agent_spec
from shoal.threads import SQLiteThreadStore, ThreadStore

__all__ = ["chat", "result_to_json", "run"]

_PREVIEW = 300


def _default_db() -> Path:
    return data_dir() / "threads.db"


def _call_text(record_or_args: ToolCallRecord | dict[str, Any], name: str = "") -> str:
    if isinstance(record_or_args, ToolCallRecord):
        name, args = record_or_args.call.name, record_or_args.call.arguments
    else:
        args = record_or_args
    inner = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in args.items())
    return f"{name}({inner})"


def _preview(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _PREVIEW else text[:_PREVIEW] + "…"


def result_to_json(result: RunResult[Any]) -> dict[str, Any]:
    """The machine-readable form of a run result (``shoal run --json``)."""
    output = result.output
    if hasattr(output, "model_dump"):
        output = output.model_dump(mode="json")
    return {
        "output": output,
        "stop_reason": result.stop_reason,
        "thread_id": result.thread_id,
        "model": result.model_name,
        "tool_calls": [
            {
                "name": r.call.name,
                "arguments": r.call.arguments,
                "outcome": r.outcome,
                "error": r.error,
                "result": r.content,
            }
            for r in result.tool_calls
        ],
        "usage": result.usage.model_dump() | {"total_tokens": result.usage.total_tokens},
        "retries": result.retries,
        "trimmed_messages": result.trimmed_messages,
        "notes": result.notes,
        "decisions": [d.model_dump(exclude={"usage"}) for d in result.decisions],
    }


async def _run_once(
    agent: Agent[Any], message: str, thread_id: str, *, as_json: bool, echo: Callable[..., None]
) -> RunResult[Any]:
    result: RunResult[Any] | None = None
    streamed = False
    async for event in agent.run_stream(message, thread=thread_id):
        if as_json:
            if isinstance(event, FinalEvent):
                result = event.result
            continue
        if isinstance(event, TextEvent):
            echo(event.text, nl=False)
            streamed = True
        elif isinstance(event, ToolCallEvent):
            echo(f"→ {_call_text(event.call.arguments, event.call.name)}", err=True)
        elif isinstance(event, ToolResultEvent):
            record = event.record
            mark = "←" if record.ok else "✗"
            echo(f"{mark} {_preview(record.content)}", err=True)
        elif isinstance(event, FinalEvent):
            result = event.result
            for decision in result.decisions:
                why = f" ({decision.reason})" if decision.reason else ""
                echo(f"⇢ {decision.router}: {decision.kind} → {decision.model}{why}", err=True)
            if not streamed and result.output != "":
                echo(str(result.output), nl=False)
            echo("")
    assert result is not None
    return result


async def _open(
    spec_path: str, db: Path | None, model: str | None
) -> tuple[Agent[Any], ThreadStore]:
    spec = load_agent_spec(spec_path)
    store = SQLiteThreadStore(db or _default_db())
    agent = spec.build_agent(model=model, store=store)
    await agent.model.prepare()
    return agent, store


async def _thread_for(agent: Agent[Any], thread: str | None) -> str:
    if thread is not None:
        return (await agent.store.get_thread(thread)).id
    created = await agent.store.create_thread(metadata={"agent": agent.name})
    return created.id


_db_option = click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="SQLite thread store [default: $SHOAL_HOME/threads.db].",
)
_model_option = click.option("--model", default=None, help="Use this model instead of the spec's.")


@click.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.argument("message")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with the result.")
@click.option("--thread", default=None, help="Continue this thread (its id).")
@_model_option
@_db_option
def run(
    spec: str, message: str, as_json: bool, thread: str | None, model: str | None, db: Path | None
) -> None:
    """Run the agent in SPEC on MESSAGE and print the answer."""

    async def go() -> None:
        agent, store = await _open(spec, db, model)
        try:
            thread_id = await _thread_for(agent, thread)
            result = await _run_once(agent, message, thread_id, as_json=as_json, echo=click.echo)
        finally:
            await store.close()
        if as_json:
            click.echo(json.dumps(result_to_json(result), ensure_ascii=False, default=str))
        else:
            click.echo(f"[thread {thread_id}]", err=True)

    asyncio.run(go())


@click.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--thread", default=None, help="Continue this thread (its id).")
@_model_option
@_db_option
def chat(spec: str, thread: str | None, model: str | None, db: Path | None) -> None:
    """Talk to the agent in SPEC; an empty line, /exit or Ctrl-D ends the chat."""

    async def go() -> None:
        agent, store = await _open(spec, db, model)
        try:
            thread_id = await _thread_for(agent, thread)
            click.echo(f"{agent.name} on {agent.model.name}; thread {thread_id}", err=True)
            while True:
                line = await asyncio.to_thread(_read_line)
                if line is None or line.strip() in ("", "/exit", "/quit"):
                    break
                await _run_once(agent, line, thread_id, as_json=False, echo=click.echo)
        finally:
            await store.close()

    asyncio.run(go())


def _read_line() -> str | None:
    try:
        if sys.stdin.isatty():
            return input("you> ")
        line = sys.stdin.readline()
        return line.rstrip("\r\n") if line else None
    except EOFError:
        return None
