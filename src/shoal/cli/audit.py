"""``shoal audit verify / show``: check and read the audit log.

The log is the one runs write (:mod:`shoal.observability.audit`): ``--log PATH``, else
``$SHOAL_AUDIT_LOG``, else ``<data dir>/audit.jsonl``. ``verify`` exits 0 when every record's
hash and the chain hold, else it names the first bad line (exit code of a
:class:`~shoal.exceptions.StoreError`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from shoal.exceptions import StoreError, UserError
from shoal.observability.audit import read, verify
from shoal.observability.config import default_audit_path

__all__ = ["audit"]

_WIDTH = 100


def _log_path(option: Path | None) -> Path:
    if option is not None:
        path = option.expanduser()
    else:
        env = os.environ.get("SHOAL_AUDIT_LOG", "").strip()
        path = Path(env).expanduser() if env and env.lower() != "off" else default_audit_path()
    if path.is_dir():
        raise UserError(f"{path} is a directory, not an audit log")
    if not path.exists():
        raise UserError(
            f"no audit log at {path} (give --log PATH or set SHOAL_AUDIT_LOG; runs write one "
            "once observability is configured)"
        )
    return path


_LOG_OPTION = click.option(
    "--log",
    "log",
    type=click.Path(path_type=Path, dir_okay=False),
    help="The audit log (default: $SHOAL_AUDIT_LOG, else <data dir>/audit.jsonl).",
)


@click.group()
def audit() -> None:
    """The tamper-evident log of agent actions: verify it, show a thread's records."""


@audit.command("verify")
@_LOG_OPTION
def verify_command(log: Path | None) -> None:
    """Check every record's hash and the chain between them."""
    path = _log_path(log)
    try:
        report = verify(path)
    except OSError as exc:
        raise StoreError(f"cannot read the audit log {path}: {exc}") from exc
    if not report.ok:
        raise StoreError(f"audit log {path} is damaged: {report}")
    click.echo(f"{report} ({path})")


@audit.command("show")
@click.option("--thread", "thread_id", help="Only the records of this thread.")
@_LOG_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the records as JSON Lines.")
def show(thread_id: str | None, log: Path | None, as_json: bool) -> None:
    """Print the records of the log (of one thread with --thread), oldest first."""
    path = _log_path(log)
    try:
        records = read(path, thread_id=thread_id)
        report = verify(path)
    except OSError as exc:
        raise StoreError(f"cannot read the audit log {path}: {exc}") from exc
    if not report.ok:
        click.echo(f"warning: the log is damaged: {report}", err=True)
    if not records:
        which = f" for thread {thread_id}" if thread_id else ""
        click.echo(f"no records{which} in {path}", err=True)
        return
    for record in records:
        if as_json:
            click.echo(json.dumps(record, ensure_ascii=False))
        else:
            click.echo(format_record(record))


def format_record(record: dict[str, Any]) -> str:
    """``2025-05-01 12:00:03  support  tool.call  lookup_order(order_id='7') -> ok: ...``."""
    at = str(record.get("at", ""))[:19].replace("T", " ")
    agent = str(record.get("agent") or "-")
    kind = str(record.get("kind", "?"))
    summary = _summary(kind, record.get("data") or {})
    line = f"{at}  {agent:<12} {kind:<18} {summary}".rstrip()
    return line if len(line) <= _WIDTH + 40 else line[: _WIDTH + 39] + "…"


def _summary(kind: str, d: dict[str, Any]) -> str:
    if kind == "run.start":
        return f"model={d.get('model')} message={_short(d.get('message'))}"
    if kind == "run.end":
        tokens = f"{d.get('prompt_tokens')}+{d.get('completion_tokens')} tokens"
        stop = d.get("stop_reason") or ("error" if d.get("exception") else None)
        return f"{stop}, {d.get('steps')} steps, {tokens}" + _exception(d)
    if kind == "model.request":
        calls = ", ".join(str(c) for c in d.get("calls") or []) or "no calls"
        return f"{d.get('model')} step {d.get('step')}: {d.get('finish_reason')} ({calls})" + (
            _exception(d)
        )
    if kind == "tool.call":
        args = d.get("arguments")
        shown = ", ".join(f"{k}={v!r}" for k, v in args.items()) if isinstance(args, dict) else ""
        outcome = f"{d.get('tool')}({shown}) -> {d.get('outcome')}"
        detail = d.get("error") or d.get("result")
        return f"{outcome}: {_short(detail)}" if detail else outcome
    if kind == "guard":
        tool = f" on {d.get('tool')}" if d.get("tool") else ""
        return (
            f"{d.get('guard')} {d.get('stage')}{tool}: {d.get('action')} {_short(d.get('reason'))}"
        )
    if kind == "approval.requested":
        return f"{d.get('tool')} [{d.get('call_id')}] {_short(d.get('arguments'))}"
    if kind == "approval.decided":
        verdict = "approved" if d.get("approved") else "rejected"
        return f"{d.get('tool')} [{d.get('call_id')}] {verdict} {_short(d.get('reason'))}".rstrip()
    if kind == "handoff":
        return f"{d.get('source')} -> {d.get('target')}: {_short(d.get('reason'))}"
    if kind in ("route", "agent.route"):
        target = d.get("target") or d.get("model")
        how = d.get("by") or d.get("kind")
        return f"{d.get('router')} -> {target} ({how}): {_short(d.get('reason'))}"
    return _short(d)


def _exception(d: dict[str, Any]) -> str:
    return f" [{_short(d['exception'])}]" if d.get("exception") else ""


def _short(value: Any, limit: int = 60) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
