"""The audit log: a hash-chained JSON Lines file written off the caller's thread, its verifier,
the sink that records agent actions, and ``shoal audit verify / show``."""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shoal.cli.audit import audit
from shoal.exceptions import CLI_EXIT_CODES, StoreError, UserError
from shoal.observability.audit import GENESIS, AuditLog, AuditSink, read, verify
from shoal.observability.recorder import RunRecorder, add_sink, remove_sink


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines(keepends=True)


def _write_log(path: Path, n: int, *, thread_id: str | None = "thread_a") -> list[dict[str, Any]]:
    log = AuditLog(path)
    for i in range(n):
        log.append(
            "note", {"i": i, "text": f"record {i}"}, agent="a", run_id="r1", thread_id=thread_id
        )
    log.close()
    return read(path)


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "audit" / "audit.jsonl"


# -- format -------------------------------------------------------------------------------


def test_records_are_chained_by_sha256_of_their_canonical_json(log_path: Path) -> None:
    records = _write_log(log_path, 3)
    assert [r["seq"] for r in records] == [1, 2, 3]
    assert records[0]["prev"] == "0" * 64 == GENESIS
    for before, record in zip([None, *records], records, strict=False):
        assert set(record) == {
            "seq",
            "at",
            "kind",
            "agent",
            "run_id",
            "thread_id",
            "data",
            "prev",
            "hash",
        }
        body = {k: v for k, v in record.items() if k != "hash"}
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert record["hash"] == hashlib.sha256(canonical.encode("utf-8")).hexdigest()
        if before is not None:
            assert record["prev"] == before["hash"]
        assert record["at"].endswith("+00:00")
    report = verify(log_path)
    assert report.ok
    assert report.records == 3
    assert report.first_bad_line is None
    assert report.last_hash == records[-1]["hash"]
    assert str(report) == "ok: 3 records, chain intact"


def test_data_that_is_not_json_is_kept_as_text(log_path: Path) -> None:
    class Thing:
        def __repr__(self) -> str:
            return "Thing()"

        def __str__(self) -> str:
            return "a thing"

    log = AuditLog(log_path)
    log.append("note", {"obj": Thing(), "tuple": (1, 2), "nan": float("nan"), "ü": "ß"})
    log.close()
    (record,) = read(log_path)
    assert record["data"] == {"obj": "a thing", "tuple": [1, 2], "nan": "nan", "ü": "ß"}
    assert "ß" in log_path.read_text(encoding="utf-8")  # kept as UTF-8, not \u escapes
    assert verify(log_path).ok


# -- tampering ------------------------------------------------------------------------------


@pytest.fixture
def ten(log_path: Path) -> list[str]:
    _write_log(log_path, 10)
    assert verify(log_path).ok
    return _lines(log_path)


def _rewrite(path: Path, lines: list[str]) -> None:
    path.write_text("".join(lines), encoding="utf-8")


def test_an_edited_field_is_found_on_its_line(log_path: Path, ten: list[str]) -> None:
    record = json.loads(ten[6])
    record["data"]["text"] = "something else"
    ten[6] = json.dumps(record) + "\n"
    _rewrite(log_path, ten)
    report = verify(log_path)
    assert not report.ok
    assert report.first_bad_line == 7
    assert report.records == 6
    assert report.problem == "line 7: hash does not match its content (edited?)"


def test_an_edit_with_a_recomputed_hash_breaks_the_chain_at_the_next_line(
    log_path: Path, ten: list[str]
) -> None:
    record = json.loads(ten[6])
    record["data"]["text"] = "something else"
    body = {k: v for k, v in record.items() if k != "hash"}
    record["hash"] = hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()
    ten[6] = json.dumps(record) + "\n"
    _rewrite(log_path, ten)
    report = verify(log_path)
    assert report.first_bad_line == 8
    assert report.problem == "line 8: chain broken: prev does not match line 7"


def test_a_deleted_line_breaks_the_chain(log_path: Path, ten: list[str]) -> None:
    del ten[4]
    _rewrite(log_path, ten)
    report = verify(log_path)
    assert report.first_bad_line == 5
    assert report.problem == "line 5: chain broken: prev does not match line 4"


def test_a_deleted_first_line_is_found(log_path: Path, ten: list[str]) -> None:
    _rewrite(log_path, ten[1:])
    report = verify(log_path)
    assert report.first_bad_line == 1
    assert report.records == 0
    assert "first record does not start the chain" in (report.problem or "")


def test_reordered_lines_break_the_chain(log_path: Path, ten: list[str]) -> None:
    ten[2], ten[3] = ten[3], ten[2]
    _rewrite(log_path, ten)
    report = verify(log_path)
    assert report.first_bad_line == 3
    assert report.problem == "line 3: chain broken: prev does not match line 2"


def test_a_truncated_last_line_is_reported(log_path: Path, ten: list[str]) -> None:
    ten[-1] = ten[-1][:40]
    _rewrite(log_path, ten)
    report = verify(log_path)
    assert report.first_bad_line == 10
    assert report.records == 9
    assert report.problem is not None
    assert report.problem.startswith("line 10: truncated")


def test_a_line_that_is_not_json_is_reported(log_path: Path, ten: list[str]) -> None:
    ten.insert(2, "this is not json\n")
    _rewrite(log_path, ten)
    report = verify(log_path)
    assert report.first_bad_line == 3
    assert report.problem == "line 3: not JSON"
    assert len(read(log_path)) == 10  # read skips what is not a record


def test_a_missing_field_is_reported(log_path: Path, ten: list[str]) -> None:
    record = json.loads(ten[1])
    del record["seq"]
    ten[1] = json.dumps(record) + "\n"
    _rewrite(log_path, ten)
    report = verify(log_path)
    assert report.first_bad_line == 2
    assert report.problem == "line 2: missing seq"


def test_an_empty_log_verifies(log_path: Path) -> None:
    log_path.parent.mkdir(parents=True)
    log_path.write_bytes(b"")
    report = verify(log_path)
    assert report.ok
    assert report.records == 0
    assert report.last_hash == GENESIS


# -- writing ----------------------------------------------------------------------------------


def test_appends_from_many_threads_keep_one_valid_chain(log_path: Path) -> None:
    log = AuditLog(log_path, fsync=False)
    barrier = threading.Barrier(8)

    def worker(n: int) -> None:
        barrier.wait()
        for i in range(200):
            log.append("note", {"worker": n, "i": i}, thread_id=f"t{n}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert log.flush()
    report = verify(log_path)
    assert report.ok
    assert report.records == 1600
    records = read(log_path)
    assert [r["seq"] for r in records] == list(range(1, 1601))
    mine = read(log_path, thread_id="t3")
    assert [r["data"]["i"] for r in mine] == list(range(200))  # each thread's order kept
    log.close()


def test_two_writers_on_one_file_continue_each_others_chain(log_path: Path) -> None:
    first, second = AuditLog(log_path), AuditLog(log_path)
    for i in range(3):
        first.append("note", {"by": "first", "i": i})
        first.flush()
        second.append("note", {"by": "second", "i": i})
        second.flush()
    first.close()
    second.close()
    report = verify(log_path)
    assert report.ok
    assert report.records == 6
    assert [r["data"]["by"] for r in read(log_path)] == ["first", "second"] * 3


def test_processes_appending_to_one_log_keep_the_chain(log_path: Path) -> None:
    """Three processes at once, none calling flush: the atexit hook writes the queue."""
    script = textwrap.dedent(
        """
        import sys
        from shoal.observability.audit import AuditLog
        log = AuditLog(sys.argv[1], fsync=False)
        for i in range(300):
            log.append("note", {"pid": sys.argv[2], "i": i})
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(log_path), str(n)]) for n in range(3)
    ]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]
    report = verify(log_path)
    assert report.ok, report.problem
    assert report.records == 900


def test_a_writer_continues_after_a_damaged_last_line(log_path: Path) -> None:
    records = _write_log(log_path, 3)
    with open(log_path, "ab") as handle:
        handle.write(b'{"seq": 4, "at": "2025-')  # a write cut short by a crash
    log = AuditLog(log_path)
    log.append("note", {"after": "crash"})
    log.close()
    report = verify(log_path)
    assert report.first_bad_line == 4
    assert report.problem == "line 4: not JSON"
    after = read(log_path)[-1]
    assert after["data"] == {"after": "crash"}
    assert after["prev"] == records[-1]["hash"]
    assert after["seq"] == 4


def test_a_full_queue_drops_records_and_says_so_in_the_log(log_path: Path) -> None:
    log_path.parent.mkdir(parents=True)
    log_path.touch()
    log = AuditLog(log_path, max_queue=5)
    with open(log_path, "rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)  # the disk "stalls": the writer waits
        try:
            for i in range(50):
                log.append("note", {"i": i})  # must not block
        finally:
            fcntl.flock(held.fileno(), fcntl.LOCK_UN)
    assert log.flush()
    records = read(log_path)
    notes = [r for r in records if r["kind"] == "note"]
    counts = [r["data"]["count"] for r in records if r["kind"] == "audit.dropped"]
    assert counts  # the loss is in the chain
    assert all(count > 0 for count in counts)
    assert sum(counts) == log.lost
    assert len(notes) + sum(counts) == 50
    assert verify(log_path).ok
    log.close()


@pytest.mark.parametrize("case", ["directory", "parent_is_a_file"])
def test_a_failing_disk_never_reaches_the_caller(
    tmp_path: Path, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    if case == "directory":
        path = tmp_path / "logdir"
        path.mkdir()
    else:
        (tmp_path / "file").write_text("x")
        path = tmp_path / "file" / "audit.jsonl"
    log = AuditLog(path)
    with caplog.at_level(logging.WARNING, logger="shoal.audit"):
        for i in range(3):
            log.append("note", {"i": i})
            assert log.flush()
    warnings = [r for r in caplog.records if r.name == "shoal.audit"]
    assert len(warnings) == 1  # logged once, not per record
    assert "could not write" in warnings[0].getMessage()
    assert log.lost == 3
    log.close()


def test_records_lost_to_a_failing_disk_are_counted_once_it_recovers(tmp_path: Path) -> None:
    blocker = tmp_path / "logs"
    blocker.write_text("a file where the log directory should be")
    log = AuditLog(blocker / "audit.jsonl")
    for i in range(3):
        log.append("note", {"i": i})
        assert log.flush()
    blocker.unlink()  # the disk "recovers"
    log.append("note", {"i": 3})
    assert log.flush()
    records = read(blocker / "audit.jsonl")
    assert [r["kind"] for r in records] == ["audit.dropped", "note"]
    assert records[0]["data"]["count"] == 3
    assert records[1]["data"] == {"i": 3}
    assert verify(blocker / "audit.jsonl").ok
    log.close()


def test_a_rotated_log_starts_a_new_chain(log_path: Path) -> None:
    log = AuditLog(log_path)
    log.append("note", {"i": 1})
    assert log.flush()
    log_path.rename(log_path.with_suffix(".1"))
    log.append("note", {"i": 2})
    log.close()
    (record,) = read(log_path)
    assert record["seq"] == 1
    assert record["prev"] == GENESIS
    assert verify(log_path).ok
    assert verify(log_path.with_suffix(".1")).ok


def test_a_closed_log_drops_later_records(log_path: Path) -> None:
    log = AuditLog(log_path)
    log.append("note", {"i": 1})
    log.close()
    log.append("note", {"i": 2})
    assert log.flush()
    assert [r["data"]["i"] for r in read(log_path)] == [1]
    assert log.lost == 1


# -- the sink -------------------------------------------------------------------------------


@pytest.fixture
def sink(log_path: Path) -> Iterator[AuditSink]:
    sink = AuditSink(AuditLog(log_path))
    add_sink(sink)
    yield sink
    remove_sink(sink)
    sink.log.close()


def _one_run(long_result: str = "x" * 500) -> RunRecorder:
    rec = RunRecorder("support", thread_id="thread_1")
    with rec.span("run", model="smollm2-135m", role="clerk", message="where is my order 7?") as run:
        with rec.span(
            "model.request", model="smollm2-135m", step=1, tool_choice="auto", tools=["lookup"]
        ) as req:
            req.update(
                prompt_tokens=120,
                completion_tokens=9,
                finish_reason="tool_calls",
                text="the full answer text",
                calls=["lookup"],
                parse_error=None,
            )
        rec.event(
            "guard", guard="PII", stage="tool_call", action="redact", reason="card", tool="lookup"
        )
        with rec.span(
            "tool.call", tool="lookup", call_id="c1", arguments={"order_id": "7"}
        ) as call:
            call.update(outcome="ok", result=long_result, error=None)
        rec.event("approval.requested", tool="refund", call_id="c2", arguments={"amount": 5})
        rec.event("approval.decided", tool="refund", call_id="c2", approved=True, reason="fine")
        rec.event("handoff", source="support", target="billing", reason="refund")
        rec.event("note", text="not an action")
        rec.event("retry", why="bad json")
        run.update(
            stop_reason="final",
            steps=2,
            prompt_tokens=200,
            completion_tokens=20,
            output="Order 7 shipped.",
            tool_calls=1,
            retries=0,
        )
    return rec


def test_the_sink_records_every_action_of_a_run(sink: AuditSink, log_path: Path) -> None:
    rec = _one_run()
    assert sink.log.flush()
    records = read(log_path)
    assert [r["kind"] for r in records] == [
        "run.start",
        "model.request",
        "guard",
        "tool.call",
        "approval.requested",
        "approval.decided",
        "handoff",
        "run.end",
    ]
    assert {r["run_id"] for r in records} == {rec.run_id}
    assert {r["thread_id"] for r in records} == {"thread_1"}
    assert {r["agent"] for r in records} == {"support"}
    by_kind = {r["kind"]: r["data"] for r in records}
    assert by_kind["run.start"]["message"] == "where is my order 7?"
    request = by_kind["model.request"]
    assert request["model"] == "smollm2-135m"
    assert request["step"] == 1
    assert request["prompt_tokens"] == 120
    assert request["finish_reason"] == "tool_calls"
    assert request["calls"] == ["lookup"]
    assert "text" not in request
    assert "the full answer text" not in json.dumps(records)
    tool = by_kind["tool.call"]
    assert tool["arguments"] == {"order_id": "7"}
    assert tool["outcome"] == "ok"
    assert len(tool["result"]) <= 200
    assert tool["result"].startswith("xxx")
    assert by_kind["approval.decided"]["approved"] is True
    assert by_kind["run.end"]["stop_reason"] == "final"
    assert by_kind["run.end"]["steps"] == 2
    assert verify(log_path).ok


def test_a_span_that_raised_is_recorded_with_its_exception(sink: AuditSink, log_path: Path) -> None:
    rec = RunRecorder("support", thread_id="t")
    with (
        pytest.raises(RuntimeError),
        rec.span("run", model="m", role=None, message="hi"),
        rec.span("tool.call", tool="lookup", call_id="c1", arguments={}),
    ):
        raise RuntimeError("disk on fire")
    assert sink.log.flush()
    tool, end = read(log_path)[1:]
    assert tool["data"]["outcome"] == "error"
    assert end["kind"] == "run.end"
    assert "disk on fire" in end["data"]["exception"]


def test_a_sink_on_a_broken_disk_never_breaks_a_run(tmp_path: Path) -> None:
    (tmp_path / "logdir").mkdir()
    sink = AuditSink(AuditLog(tmp_path / "logdir"))
    add_sink(sink)
    try:
        rec = _one_run()
    finally:
        remove_sink(sink)
    assert sink.log.flush()
    assert sink.log.lost == 8
    assert rec.events[-1].data["stop_reason"] == "final"
    sink.log.close()


# -- the command ----------------------------------------------------------------------------


@pytest.fixture
def shoal(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """``shoal`` with the audit group registered, through the real entry point."""
    from shoal.cli.main import cli, main

    monkeypatch.setitem(cli.commands, "audit", audit)
    monkeypatch.setenv("SHOAL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SHOAL_AUDIT_LOG", raising=False)
    return main


def test_verify_says_ok(shoal: Any, log_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write_log(log_path, 4)
    assert shoal(["audit", "verify", "--log", str(log_path)]) == 0
    assert "ok: 4 records, chain intact" in capsys.readouterr().out


def test_verify_names_the_bad_line(
    shoal: Any, log_path: Path, ten: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    del ten[4]
    _rewrite(log_path, ten)
    assert shoal(["audit", "verify", "--log", str(log_path)]) == CLI_EXIT_CODES[StoreError]
    err = capsys.readouterr().err
    assert "line 5: chain broken: prev does not match line 4" in err
    assert "Traceback" not in err


def test_verify_reads_the_log_from_the_environment(
    shoal: Any,
    log_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _write_log(log_path, 2)
    monkeypatch.setenv("SHOAL_AUDIT_LOG", str(log_path))
    assert shoal(["audit", "verify"]) == 0
    assert "ok: 2 records" in capsys.readouterr().out


def test_verify_without_a_log_is_a_clear_error(
    shoal: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert shoal(["audit", "verify"]) == CLI_EXIT_CODES[UserError]
    err = capsys.readouterr().err
    assert f"no audit log at {tmp_path / 'home' / 'audit.jsonl'}" in err
    assert "Traceback" not in err


def test_show_prints_one_threads_records(
    shoal: Any, sink: AuditSink, log_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _one_run()
    other = RunRecorder("other", thread_id="thread_2")
    with other.span("run", model="m", role=None, message="unrelated") as run:
        run.update(stop_reason="final", steps=1)
    assert sink.log.flush()
    assert shoal(["audit", "show", "--thread", "thread_1", "--log", str(log_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 8
    assert all(" support " in line for line in lines)
    tool_line = next(line for line in lines if " tool.call " in line)
    assert "lookup(order_id='7') -> ok" in tool_line
    assert "final, 2 steps, 200+20 tokens" in lines[-1]
    assert shoal(["audit", "show", "--thread", "thread_2", "--log", str(log_path), "--json"]) == 0
    shown = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["kind"] for r in shown] == ["run.start", "run.end"]
    assert {r["agent"] for r in shown} == {"other"}


def test_show_warns_about_a_damaged_log(
    shoal: Any, log_path: Path, ten: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    ten.insert(1, "garbage\n")
    _rewrite(log_path, ten)
    assert shoal(["audit", "show", "--log", str(log_path)]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 10
    assert "warning: the log is damaged: line 2: not JSON" in captured.err


# -- configuration --------------------------------------------------------------------------


@pytest.fixture
def reset_config() -> Iterator[None]:
    yield
    from shoal.observability import config

    config.configure(metrics=False)


@pytest.mark.usefixtures("reset_config")
def test_configure_from_env_writes_the_default_log(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from shoal.observability import config

    monkeypatch.setenv("SHOAL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SHOAL_AUDIT_LOG", raising=False)
    monkeypatch.delenv("SHOAL_TRACING", raising=False)
    setup = config.configure_from_env()
    assert setup.audit_log is not None
    assert setup.audit_log.path == tmp_path / "home" / "audit.jsonl" == config.default_audit_path()
    _one_run()
    assert setup.audit_log.flush()
    assert verify(setup.audit_log.path).records == 8


@pytest.mark.usefixtures("reset_config")
@pytest.mark.parametrize("value", ["off", ""])
def test_the_audit_log_can_be_turned_off(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str
) -> None:
    from shoal.observability import config

    monkeypatch.setenv("SHOAL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SHOAL_AUDIT_LOG", value)
    monkeypatch.delenv("SHOAL_TRACING", raising=False)
    assert config.configure_from_env().audit is None
    _one_run()
    assert not (tmp_path / "home").exists()


@pytest.mark.usefixtures("reset_config")
def test_configuring_again_continues_the_same_chain(log_path: Path) -> None:
    from shoal.observability import config

    config.configure(audit_log=log_path)
    _one_run()
    again = config.configure(audit_log=log_path)  # the first log is flushed and closed
    _one_run()
    assert again.audit_log is not None
    assert again.audit_log.flush()
    report = verify(log_path)
    assert report.ok
    assert report.records == 16
