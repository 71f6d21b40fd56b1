"""The main job: the support example on smollm2-135m, through the CLI and the Python API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from shoal.agent import FinalEvent
from shoal.messages import ToolMessage
from shoal.models import LlamaCppModel
from shoal.spec import load_agent_spec

from .conftest import REPO

SPEC = REPO / "examples" / "support" / "agent.yaml"


def _shoal(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    """Run the installed ``shoal`` command the way a user would."""
    return subprocess.run(
        [str(Path(sys.executable).with_name("shoal")), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "SHOAL_HOME": str(home)},
        timeout=240,
        check=False,
    )


def test_cli_run_calls_the_order_tool_and_answers(support_db: Path, tmp_path: Path) -> None:
    done = _shoal("run", str(SPEC), "Where is my order 1042?", "--json", home=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    result = json.loads(done.stdout)
    first = result["tool_calls"][0]
    assert first["name"] == "lookup_order"
    assert first["arguments"] == {"order_id": "1042"}
    assert first["outcome"] == "ok"
    assert json.loads(first["result"])["order_id"] == "1042"
    assert result["stop_reason"] == "final"
    assert result["output"].strip()
    assert result["thread_id"]

    # the thread can be continued by id
    again = _shoal(
        "run", str(SPEC), "Thanks!", "--json", "--thread", result["thread_id"], home=tmp_path
    )
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["thread_id"] == result["thread_id"]


def test_cli_human_output_shows_the_call(support_db: Path, tmp_path: Path) -> None:
    done = _shoal("run", str(SPEC), "Where is my order 1042?", home=tmp_path)
    assert done.returncode == 0, done.stderr
    assert '→ lookup_order(order_id="1042")' in done.stderr
    assert done.stdout.strip()


async def test_answer_is_produced_from_the_tool_result(
    support_db: Path, smollm: LlamaCppModel
) -> None:
    agent = load_agent_spec(SPEC).build_agent(model=smollm)
    events = [e async for e in agent.run_stream("Where is my order 1042?")]
    final = events[-1]
    assert isinstance(final, FinalEvent)
    result = final.result
    [record] = result.tool_calls
    assert record.call.name == "lookup_order"
    assert record.call.arguments == {"order_id": "1042"}
    assert record.result["status"] == "shipped"
    # the request that produced the answer carried the tool's result
    tool_messages = [m for m in result.new_messages if isinstance(m, ToolMessage)]
    assert json.loads(tool_messages[0].content) == record.result
    assert result.new_messages[-1].role == "assistant"
    assert result.output.strip()
