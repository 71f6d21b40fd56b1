"""``--role`` on ``shoal run``, ``shoal approve`` and ``shoal chat`` (TestModel only).

Single-agent specs do not declare guards, so the permission checks use a system file whose
``guards:`` hold a ``ToolPermissionGuard``; for agent specs the run's trace shows the role it
ran in. ``TestModel`` calls every tool it is offered once, then answers with the results.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from shoal.cli.main import cli, main
from shoal.cli.run import APPROVAL_EXIT_CODE
from shoal.exceptions import CLI_EXIT_CODES, UserError
from tests.unit._systems import tools_module, write_system

THREAD_LINE = re.compile(r"^\[thread (thread_\w+)\]$", re.MULTILINE)

SYSTEM = """\
name: shop
models:
  primary: test
guards:
  - ref: shoal.guards:ToolPermissionGuard
    options:
      roles: {viewer: [lookup_order], clerk: [lookup_order, refund]}
agents:
  desk:
    tools: [{m}:lookup_order, {m}:refund]
  cashier:
    tools: [{m}:lookup_order, {m}:refund]
    approval: [refund]
entry: desk
"""


@pytest.fixture(autouse=True)
def _shoal_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOAL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SHOAL_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def tools(tmp_path: Path) -> Iterator[str]:
    with tools_module(tmp_path, "cli_role_tools") as name:
        yield name


@pytest.fixture
def system(tmp_path: Path, tools: str) -> Path:
    return write_system(tmp_path, SYSTEM, tools)


@pytest.fixture
def spec(tmp_path: Path, tools: str) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(
        f"name: support\nmodel: test\ntools: [{tools}:lookup_order, {tools}:delete_account]\n",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "threads.db"


def shoal(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    return code, captured.out, captured.err


def run_roles(trace: list[dict[str, Any]]) -> list[str | None]:
    return [event["data"]["role"] for event in trace if event["kind"] == "run"]


@pytest.mark.parametrize(
    ("role", "called"),
    [("viewer", ["lookup_order"]), ("clerk", ["lookup_order", "refund"]), (None, [])],
)
def test_run_offers_a_system_agent_only_its_roles_tools(
    system: Path,
    db: Path,
    capsys: pytest.CaptureFixture[str],
    role: str | None,
    called: list[str],
) -> None:
    argv = ["run", str(system), "order 7", "--json", "--db", str(db)]
    code, out, _ = shoal([*argv, "--role", role] if role else argv, capsys)

    assert code == 0
    body = json.loads(out)
    [run] = body["runs"]
    assert [record["name"] for record in run["tool_calls"]] == called
    assert all(record["outcome"] == "ok" for record in run["tool_calls"])
    assert run_roles(body["trace"]) == [role]


def test_run_passes_the_role_to_an_agent_spec(
    spec: Path, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = shoal(
        ["run", str(spec), "order 7", "--json", "--role", "viewer", "--db", str(db)], capsys
    )

    assert code == APPROVAL_EXIT_CODE  # delete_account waits for a person
    body = json.loads(out)
    assert run_roles(body["trace"]) == ["viewer"]
    assert "--role" not in body["continue"]


def test_approve_resumes_a_system_run_in_its_role(
    system: Path, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["run", str(system), "refund 7", "--agent", "cashier", "--role", "clerk"]
    code, _, err = shoal([*argv, "--db", str(db)], capsys)
    assert code == APPROVAL_EXIT_CODE
    found = THREAD_LINE.search(err)
    assert found is not None
    thread = found.group(1)
    # the role is kept with the paused run: the printed command need not repeat it
    command = next(line.strip() for line in err.splitlines() if "shoal approve" in line)
    assert shlex.split(command) == ["shoal", "approve", str(system), thread, "--db", str(db)]

    code, out, _ = shoal([*shlex.split(command)[1:], "--json"], capsys)

    assert code == 0
    body = json.loads(out)
    assert run_roles(body["trace"]) == ["clerk"]
    assert json.loads(body["text"])["refund"] == "refunded a"  # the approved call ran


def test_approve_passes_the_role_to_an_agent_spec(
    spec: Path, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = shoal(["run", str(spec), "delete 3", "--json", "--db", str(db)], capsys)
    assert code == APPROVAL_EXIT_CODE
    first = json.loads(out)
    assert run_roles(first["trace"]) == [None]
    assert "--role" not in first["continue"]

    argv = ["approve", str(spec), first["thread_id"], "--json", "--role", "auditor"]
    code, out, _ = shoal([*argv, "--db", str(db)], capsys)

    assert code == 0
    assert run_roles(json.loads(out)["trace"]) == ["auditor"]


def test_chat_runs_in_the_role(spec: Path, db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["chat", str(spec), "--role", "viewer", "--db", str(db)]
    result = CliRunner().invoke(cli, argv, input="hello\n\n")
    assert result.exit_code == 0, result.output
    found = re.search(r"thread (thread_\w+)$", result.stderr, re.MULTILINE)
    assert found is not None

    code, out, _ = shoal(["trace", found.group(1), "--json", "--db", str(db)], capsys)

    assert code == 0
    assert run_roles(json.loads(out)) == ["viewer"]


@pytest.mark.parametrize("command", ["run", "approve", "chat"])
def test_an_empty_role_is_a_user_error(
    system: Path, db: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    argv = {
        "run": ["run", str(system), "hi"],
        "approve": ["approve", str(system), "thread_x"],
        "chat": ["chat", str(system)],
    }[command]

    code, _, err = shoal([*argv, "--role", " ", "--db", str(db)], capsys)

    assert code == CLI_EXIT_CODES[UserError] == 2
    assert "error: --role is empty" in err
    assert not db.exists()  # refused before anything was opened
