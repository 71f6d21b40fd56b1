"""``shoal run`` and ``shoal chat``: run an agent spec or a system file from the terminal.

Tool calls and their results are shown on stderr as they happen; the answer streams to stdout,
so ``shoal run spec.yaml "..." > answer.txt`` keeps only the answer. ``--json`` prints one JSON
object instead. Conversations live in a SQLite thread store (``$SHOAL_HOME/threads.db`` by
default); every run prints its thread id so the conversation can be continued with ``--thread``.

A system file (``docs/systems.md``; told apart by :func:`~shoal.spec.is_system_file`) runs its
entry, or the agent or flow ``--agent`` names; flows do not stream, so the route, each agent's
tool calls and the answer are printed when the run is over. ``--trace`` draws the run's trace
tree on stderr (:mod:`shoal.cli.trace`). A run that pauses for approval prints the waiting
calls and the ``shoal approve`` command that continues it, and exits with
:data:`APPROVAL_EXIT_CODE` (documented in docs/cli.md). ``--role`` runs in a role (guards such
as ``ToolPermissionGuard`` decide by it), as ``shoal serve`` does for a role's API key.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from shoal.agent import (
    Agent,
    FinalEvent,
    RunEvent,
    RunResult,
    TextEvent,
    ToolCallEvent,
    ToolCallRecord,
    ToolResultEvent,
)
from shoal.cli.trace import echo_trace, trace_json
from shoal.exceptions import UserError
from shoal.messages import ToolCall
from shoal.models import resolve_model
from shoal.orchestration import FlowResult
from shoal.settings import data_dir
from shoal.spec import AgentSpec, System, SystemSpec, is_system_file, load_agent_spec, load_system
from shoal.threads import SQLiteThreadStore, ThreadStore

__all__ = ["APPROVAL_EXIT_CODE", "chat", "result_to_json", "run"]

#: the exit code of a run that paused for a person's approval (not an error; docs/cli.md)
APPROVAL_EXIT_CODE = 20

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
        "agent": result.agent_name,
        "run_id": result.run_id,
        "model": result.model_name,
        "pending_approvals": [call_json(c) for c in result.pending_approvals],
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
        "trace": trace_json(result.trace),
    }


async def _run_once(
    agent: Agent[Any],
    message: str,
    thread_id: str,
    *,
    as_json: bool,
    echo: Callable[..., None],
    role: str | None = None,
) -> RunResult[Any]:
    events = agent.run_stream(message, thread=thread_id, role=role)
    return await show_events(events, as_json, echo)


async def show_events(
    events: AsyncIterator[RunEvent], as_json: bool, echo: Callable[..., None]
) -> RunResult[Any]:
    """Show a run's events as they come (unless ``as_json``); the final result."""
    result: RunResult[Any] | None = None
    streamed = False
    async for event in events:
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
    if is_system_file(spec_path):
        raise UserError(
            f"{spec_path} is a system file; shoal chat talks to one agent spec. Run the system "
            'with: shoal run SYSTEM "message" (--thread ID continues a conversation)'
        )
    spec = load_agent_spec(spec_path)
    store = SQLiteThreadStore(db or _default_db())
    try:
        agent = spec.build_agent(model=model, store=store)
        await agent.model.prepare()
    except BaseException:
        await store.close()
        raise
    return agent, store


async def _thread_for(agent: Agent[Any], thread: str | None) -> str:
    if thread is not None:
        return (await agent.store.get_thread(thread)).id
    created = await agent.store.create_thread(metadata={"agent": agent.name})
    return created.id


# -- systems --------------------------------------------------------------------------------


@dataclass
class Target:
    """What a SPEC argument opened: an agent spec's agent or a system file's system, on the
    CLI's thread store."""

    path: str
    store: SQLiteThreadStore
    agent: Agent[Any] | None = None
    system: System | None = None


async def open_target(
    path: str, db: Path | None, model: str | None, *, prepare: bool = True
) -> Target:
    """Load and build SPEC (an agent spec or a system file); ``model`` replaces every model.
    The spec is checked before the thread store is opened (a bad spec creates no file)."""
    spec: SystemSpec | AgentSpec = (
        load_system(path) if is_system_file(path) else load_agent_spec(path)
    )
    store = SQLiteThreadStore(db or _default_db())
    try:
        if isinstance(spec, SystemSpec):
            models = None
            if model is not None:  # one model for every agent and classifier
                replacement = resolve_model(model)
                models = dict.fromkeys(spec.model_names(), replacement)
            return Target(path, store, system=spec.build(store=store, models=models))
        agent = spec.build_agent(model=model, store=store)
        if prepare:
            await agent.model.prepare()
        return Target(path, store, agent=agent)
    except BaseException:
        await store.close()
        raise


def flow_result_to_json(result: FlowResult) -> dict[str, Any]:
    """The machine-readable form of a system's run (``shoal run SYSTEM --json``)."""
    output = result.output
    if hasattr(output, "model_dump"):
        output = output.model_dump(mode="json")
    route = None
    if result.route is not None:
        route = {
            "target": result.route.target,
            "by": result.route.by,
            "reason": result.route.reason,
        }
    return {
        "output": output,
        "text": result.text,
        "agent": result.agent,
        "stop_reason": result.stop_reason,
        "thread_id": result.thread_id,
        "path": list(result.path),
        "route": route,
        "pending_approvals": [call_json(c) for c in result.pending_approvals],
        "usage": result.usage.model_dump() | {"total_tokens": result.usage.total_tokens},
        "runs": [result_to_json(run) for run in result.runs],
        "notes": list(result.notes),
        "trace": trace_json(result.trace),
    }


def call_json(call: ToolCall) -> dict[str, Any]:
    return {"id": call.id, "name": call.name, "arguments": call.arguments}


def show_flow_result(result: FlowResult, echo: Callable[..., None]) -> None:
    """What a system's run did (route, each agent's tool calls) on stderr; the answer on
    stdout."""
    if result.route is not None:
        route = result.route
        why = f": {route.reason}" if route.reason else ""
        echo(f"⇢ route → {route.target} (by {route.by}{why})", err=True)
    several = len({run.agent_name for run in result.runs}) > 1
    for run in result.runs:
        who = f"[{run.agent_name}] " if several else ""
        for decision in run.decisions:
            why = f" ({decision.reason})" if decision.reason else ""
            echo(f"{who}⇢ {decision.router}: {decision.kind} → {decision.model}{why}", err=True)
        for record in run.tool_calls:
            echo(f"{who}→ {_call_text(record)}", err=True)
            mark = "←" if record.ok else "✗"
            echo(f"{who}{mark} {_preview(record.content)}", err=True)
    if len(result.path) > 1:
        echo(f"path: {' → '.join(result.path)}", err=True)
    if result.stop_reason != "approval":
        echo(result.text)


def continue_command(path: str, thread_id: str, db: Path | None) -> str:
    """The ``shoal approve`` command that goes on with a paused run (the run's role is kept
    with it in the thread)."""
    words = ["shoal", "approve", path, thread_id]
    if db is not None:
        words += ["--db", str(db)]
    return " ".join(shlex.quote(word) for word in words)


def show_pause(
    calls: Sequence[ToolCall], who: str, command: str, echo: Callable[..., None]
) -> None:
    """The calls waiting for a person, and the command that continues (stderr)."""
    for call in calls:
        echo(
            f"⏸ {who} wants to call {_call_text(call.arguments, call.name)}  [{call.id}]", err=True
        )
    echo("paused for approval; continue with:", err=True)
    echo(f"  {command}", err=True)
    echo('  (or reject: add --reject --reason "...")', err=True)


def paused_exit() -> click.exceptions.Exit:
    """Exit code :data:`APPROVAL_EXIT_CODE`: the run waits for a person (not an error)."""
    return click.exceptions.Exit(APPROVAL_EXIT_CODE)


async def thread_for_system(system: System, thread: str | None) -> str:
    if thread is not None:
        return (await system.store.get_thread(thread)).id
    return (await system.store.create_thread(metadata={"system": system.name})).id


def report(
    target: Target,
    result: FlowResult | RunResult[Any],
    thread_id: str,
    *,
    as_json: bool,
    show_trace: bool,
    db: Path | None,
) -> None:
    """Print a finished (or paused) run of either kind; raise the pause's exit code."""
    paused = result.stop_reason == "approval"
    command = continue_command(target.path, thread_id, db)
    if as_json:
        body = (
            flow_result_to_json(result)
            if isinstance(result, FlowResult)
            else result_to_json(result)
        )
        if paused:
            body["continue"] = command
        click.echo(json.dumps(body, ensure_ascii=False, default=str))
    else:
        if isinstance(result, FlowResult):
            show_flow_result(result, click.echo)
        click.echo(f"[thread {thread_id}]", err=True)
    if show_trace:
        echo_trace(result.trace)
    if paused:
        if not as_json:
            who = result.agent if isinstance(result, FlowResult) else result.agent_name
            show_pause(result.pending_approvals, who, command, click.echo)
        raise paused_exit()


_db_option = click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="SQLite thread store [default: $SHOAL_HOME/threads.db].",
)
_model_option = click.option(
    "--model", default=None, help="Use this model instead of the spec's (a system's: all)."
)
_trace_option = click.option(
    "--trace", "show_trace", is_flag=True, help="Print the run's trace tree on stderr."
)
_role_option = click.option(
    "--role",
    default=None,
    metavar="ROLE",
    help="Run in this role (guards such as ToolPermissionGuard decide by it) "
    "[default: the agent's role, if any].",
)


def check_role(role: str | None) -> str | None:
    """``--role`` as given; an empty one is a mistake (it would silently mean no role)."""
    if role is not None and not role.strip():
        raise UserError("--role is empty; give a role name, or leave --role out for none")
    return role


@click.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.argument("message")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with the result.")
@click.option("--thread", default=None, help="Continue this thread (its id).")
@click.option(
    "--agent", "member", default=None, help="System files: run this agent or flow, not entry:."
)
@_role_option
@_trace_option
@_model_option
@_db_option
def run(
    spec: str,
    message: str,
    as_json: bool,
    thread: str | None,
    member: str | None,
    role: str | None,
    show_trace: bool,
    model: str | None,
    db: Path | None,
) -> None:
    """Run the agent in SPEC (or the system in a system file) on MESSAGE; print the answer.

    A run that pauses for a person's approval prints the waiting calls and the `shoal approve`
    command that continues it, and exits with code 20.
    """

    check_role(role)

    async def go() -> None:
        target = await open_target(spec, db, model)
        result: FlowResult | RunResult[Any]
        try:
            if target.system is not None:
                thread_id = await thread_for_system(target.system, thread)
                result = await target.system.run(message, thread=thread_id, agent=member, role=role)
            else:
                assert target.agent is not None
                if member is not None:
                    raise UserError(f"--agent is for system files; {spec} is an agent spec")
                thread_id = await _thread_for(target.agent, thread)
                result = await _run_once(
                    target.agent, message, thread_id, as_json=as_json, echo=click.echo, role=role
                )
        finally:
            await target.store.close()
        report(target, result, thread_id, as_json=as_json, show_trace=show_trace, db=db)

    asyncio.run(go())


@click.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--thread", default=None, help="Continue this thread (its id).")
@_role_option
@_model_option
@_db_option
def chat(
    spec: str, thread: str | None, role: str | None, model: str | None, db: Path | None
) -> None:
    """Talk to the agent in SPEC; an empty line, /exit or Ctrl-D ends the chat."""
    check_role(role)

    async def go() -> None:
        agent, store = await _open(spec, db, model)
        try:
            thread_id = await _thread_for(agent, thread)
            click.echo(f"{agent.name} on {agent.model.name}; thread {thread_id}", err=True)
            while True:
                line = await asyncio.to_thread(_read_line)
                if line is None or line.strip() in ("", "/exit", "/quit"):
                    break
                await _run_once(agent, line, thread_id, as_json=False, echo=click.echo, role=role)
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
