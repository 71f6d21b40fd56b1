"""``shoal run SYSTEM``, ``shoal approve``, ``shoal trace`` and ``--trace`` (TestModel only)."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal.cli.main import main
from shoal.cli.run import APPROVAL_EXIT_CODE
from shoal.cli.trace import format_trace
from shoal.exceptions import (
    CLI_EXIT_CODES,
    ApprovalError,
    SpecError,
    ThreadNotFoundError,
    exit_code_for,
)
from shoal.observability import TraceEvent
from tests.unit._systems import tools_module, write_system

THREAD_LINE = re.compile(r"^\[thread (thread_\w+)\]$", re.MULTILINE)

SYSTEM = """\
name: shop
models:
  primary: test
agents:
  billing:
    instructions: You handle billing.
    tools: [{m}:lookup_order, {m}:refund]
    approval: [refund]
  tech:
    instructions: You fix the app.
flows:
  triage:
    type: router
    routes: [billing, tech]
    rules:
      - {pattern: "refund", to: billing, reason: billing words}
    default: tech
"""


@pytest.fixture(autouse=True)
def _shoal_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOAL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SHOAL_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def tools(tmp_path: Path) -> Iterator[str]:
    with tools_module(tmp_path, "cli_system_tools") as name:
        yield name


@pytest.fixture
def system(tmp_path: Path, tools: str) -> Path:
    return write_system(tmp_path, SYSTEM, tools)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "threads.db"


def shoal(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    return code, captured.out, captured.err


def paused_thread(system: Path, db: Path, capsys: pytest.CaptureFixture[str]) -> str:
    code, _out, err = shoal(["run", str(system), "refund order 7", "--db", str(db)], capsys)
    assert code == APPROVAL_EXIT_CODE
    found = THREAD_LINE.search(err)
    assert found is not None
    return found.group(1)


# -- shoal run SYSTEM -------------------------------------------------------------------------


def test_run_routes_and_answers(system: Path, db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = shoal(["run", str(system), "the app is slow", "--db", str(db)], capsys)

    assert code == 0
    assert out == "success\n"  # TestModel with no tools answers "success"
    assert "⇢ route → tech (by default" in err
    assert THREAD_LINE.search(err)


def test_a_paused_run_prints_the_calls_and_the_command(
    system: Path, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = shoal(["run", str(system), "refund order 7", "--db", str(db)], capsys)

    assert code == APPROVAL_EXIT_CODE == 20
    assert out == ""
    found = THREAD_LINE.search(err)
    assert found is not None
    thread = found.group(1)
    assert re.search(r"⏸ billing wants to call refund\(order_id=\"\w*\"\)  \[call_\w+\]", err)
    command = f"shoal approve {shlex.quote(str(system))} {thread} --db {shlex.quote(str(db))}"
    assert f"  {command}\n" in err


def test_approve_continues_the_run(
    system: Path, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    thread = paused_thread(system, db, capsys)

    code, out, err = shoal(["approve", str(system), thread, "--db", str(db)], capsys)

    assert code == 0
    assert "✓ approved refund" in err
    assert json.loads(out)["refund"].startswith("refunded")
    # nothing waits any more
    code, out, err = shoal(["approve", str(system), thread, "--db", str(db)], capsys)
    assert code == exit_code_for(ApprovalError("x")) == 2
    assert err == "error: nothing is waiting for approval in this thread\n"


def test_reject_tells_the_model_why(
    system: Path, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    thread = paused_thread(system, db, capsys)

    code, out, err = shoal(
        ["approve", str(system), thread, "--reject", "--reason", "too late", "--db", str(db)],
        capsys,
    )

    assert code == 0
    assert "✗ rejected refund" in err
    assert json.loads(out)["refund"] == "Error: the call was rejected by a person: too late"


def test_approve_an_unknown_call(
    system: Path, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    thread = paused_thread(system, db, capsys)

    code, _out, err = shoal(
        ["approve", str(system), thread, "--call", "call_nope", "--db", str(db)], capsys
    )

    assert code == 2
    assert err.startswith("error: no call 'call_nope' is waiting for approval; waiting: call_")


def test_run_json_has_the_path_route_and_trace(
    system: Path, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _err = shoal(
        ["run", str(system), "refund order 7", "--json", "--db", str(db)], capsys
    )

    assert code == APPROVAL_EXIT_CODE
    body = json.loads(out)
    assert body["stop_reason"] == "approval"
    assert body["path"] == ["billing"]
    assert body["route"] == {"target": "billing", "by": "rule", "reason": "billing words"}
    assert [c["name"] for c in body["pending_approvals"]] == ["refund"]
    assert body["continue"].startswith("shoal approve ")
    kinds = {event["kind"] for event in body["trace"]}
    assert {"system", "agent.route", "run", "model.request", "tool.call"} <= kinds
    assert [r["agent"] for r in body["runs"]] == ["billing"]


def test_run_trace_prints_the_tree(
    system: Path, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _out, err = shoal(
        ["run", str(system), "refund order 7", "--trace", "--db", str(db)], capsys
    )

    assert code == APPROVAL_EXIT_CODE
    lines = err.splitlines()
    start = lines.index("trace:")
    tree = lines[start + 1 :]
    assert tree[0].startswith("  system triage  stop=approval  answer=billing")
    assert tree[1] == "    agent.route  triage → billing  by rule: billing words"
    assert tree[2].startswith("    run billing  model=test  stop=approval  steps=1")
    assert any(line.startswith("      tool.call  lookup_order(order_id=") for line in tree)
    assert any("approval.requested  refund(order_id=" in line for line in tree)


def test_agent_option_runs_one_member(
    system: Path, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = shoal(
        ["run", str(system), "refund", "--agent", "tech", "--json", "--db", str(db)], capsys
    )
    assert code == 0
    assert json.loads(out)["path"] == ["tech"]

    code, out, err = shoal(["run", str(system), "hi", "--agent", "nope", "--db", str(db)], capsys)
    assert code == 2
    assert err == (
        "error: system 'shop' has no agent or flow named 'nope'; known: billing, tech, triage\n"
    )


def test_model_option_replaces_every_model(
    tmp_path: Path, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("name: s\nmodels: {big: phi-4}\nagents: {a: {}}\n", encoding="utf-8")

    code, out, _ = shoal(["run", str(path), "hi", "--model", "test", "--db", str(db)], capsys)

    assert (code, out) == (0, "success\n")


def test_a_bad_system_file_is_a_spec_error(
    tmp_path: Path, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "name: s\nagents: {a: {}}\nflows:\n  r: {type: router, routes: [a, b]}\n",
        encoding="utf-8",
    )

    code, _out, err = shoal(["run", str(path), "hi", "--db", str(db)], capsys)

    assert code == CLI_EXIT_CODES[SpecError] == 3
    assert err == (
        f"error: {path}:4: flow 'r' routes to 'b', which is not an agent or flow; known: a, r\n"
    )
    assert not db.exists()


# -- agent specs pause too ----------------------------------------------------------------------


def test_an_agent_spec_pauses_and_is_approved(
    tmp_path: Path, tools: str, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "agent.yaml"
    spec.write_text(
        f"name: support\nmodel: test\ntools: [{tools}:delete_account]\n", encoding="utf-8"
    )

    code, out, err = shoal(["run", str(spec), "delete me", "--db", str(db)], capsys)
    assert code == APPROVAL_EXIT_CODE
    assert "⏸ support wants to call delete_account(" in err
    found = THREAD_LINE.search(err)
    assert found is not None

    code, out, err = shoal(["approve", str(spec), found.group(1), "--db", str(db)], capsys)
    assert code == 0
    assert "deleted" in out

    code, _, err = shoal(["run", str(spec), "hi", "--agent", "x", "--db", str(db)], capsys)
    assert code == 2
    assert "--agent is for system files" in err


# -- shoal trace --------------------------------------------------------------------------------


def test_trace_prints_the_stored_trace(
    system: Path, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    thread = paused_thread(system, db, capsys)
    shoal(["approve", str(system), thread, "--db", str(db)], capsys)

    code, out, _ = shoal(["trace", thread, "--db", str(db)], capsys)

    assert code == 0
    roots = [line for line in out.splitlines() if line.startswith("system ")]
    assert len(roots) == 2  # the run and the resume
    assert "approval.decided  refund [call_" in out
    assert " approved" in out

    code, out, _ = shoal(["trace", thread, "--json", "--db", str(db)], capsys)
    events = json.loads(out)
    assert [e["at"] for e in events] == sorted(e["at"] for e in events)
    assert {"system", "run", "approval.requested", "approval.decided"} <= {
        e["kind"] for e in events
    }


def test_trace_of_an_unknown_thread(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = shoal(["trace", "thread_nope", "--db", str(db)], capsys)

    assert code == CLI_EXIT_CODES[ThreadNotFoundError] == 10
    assert err.startswith("error: ")


def test_format_trace_nests_by_parent() -> None:
    def event(kind: str, span: str, parent: str | None, at: float, **data: object) -> TraceEvent:
        return TraceEvent(kind, "a", "run_1", span, parent, None, at, dict(data), duration=0.5)

    events = [
        event("tool.call", "c", "r", 3.0, tool="f", arguments={"x": 1}, outcome="ok", result="2"),
        event("run", "r", None, 1.0, model="m", stop_reason="final", steps=1),
        event("handoff", "h", "r", 2.0, source="a", target="b", reason="billing"),
    ]

    assert format_trace(events) == [
        "run a  model=m  stop=final  steps=1  0.50s",
        "  handoff  a → b  billing  0.50s",
        "  tool.call  f(x=1)  ok → 2  0.50s",
    ]
    assert format_trace([e.to_json() for e in events]) == format_trace(events)


def test_serve_takes_systems_and_defaults_to_their_model(
    system: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from shoal.cli.serve import _system_default

    code, out, _ = shoal(["serve", "--help"], capsys)

    assert code == 0
    assert "--system" in out
    assert _system_default(system) == "shop.primary"  # an entry of models:, served by name
    plain = tmp_path / "plain.yaml"
    plain.write_text("name: s\nagents: {a: {model: test}}\n", encoding="utf-8")
    assert _system_default(plain) == "test"
