"""The customer-service example on the real models: the route taken and the tools called.

``examples/customer_service/system.yaml`` runs as shipped (a router in front of a
customer-service agent and a technical-support router; ``qwen2.5-coder-0.5b`` answers,
``smollm2-135m`` classifies), greedy decoding. Each request runs once per module; the tests
assert where it went (``FlowResult.route``, ``path``, the ``agent.route`` trace events) and which
tool was called with which argument, never the wording of the answer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shoal.orchestration import FlowResult
from shoal.spec import load_system

from .conftest import REPO

SYSTEM = REPO / "examples" / "customer_service" / "system.yaml"

REQUESTS = {
    "order": "Where is my order 7302?",
    "return": "I'd like to return order 7316, I bought the wrong model.",
    "device": "My camera LC30-58211 keeps going offline.",
    "guide": "The bulbs won't pair with the hub.",
    # no rule matches: the tiny classifier decides
    "unmatched": "Thermostat screen is blank since this morning.",
}


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Returns and tickets go to a fresh file, not the user's data directory."""
    path = tmp_path_factory.mktemp("customer_service") / "state.db"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SHOAL_CS_STATE", str(path))
        yield path


@pytest.fixture(scope="module")
def results(state: Path) -> dict[str, FlowResult]:
    system = load_system(SYSTEM).build()
    return {key: system.run_sync(text) for key, text in REQUESTS.items()}


def _routes(result: FlowResult) -> list[tuple[str, str, str]]:
    """(router, target, by) of every ``agent.route`` event, in order."""
    return [
        (e.data["router"], e.data["target"], e.data["by"])
        for e in result.trace
        if e.kind == "agent.route"
    ]


def _calls(result: FlowResult) -> list[tuple[str, dict[str, Any], str, Any]]:
    return [
        (r.call.name, r.call.arguments, r.outcome, r.result)
        for run in result.runs
        for r in run.tool_calls
    ]


def test_an_order_question_goes_to_customer_service_and_looks_the_order_up(
    results: dict[str, FlowResult],
) -> None:
    result = results["order"]
    assert result.route is not None
    assert (result.route.target, result.route.by) == ("customer_service", "rule")
    assert result.path == ["customer_service"]
    assert _routes(result) == [("desk", "customer_service", "rule")]
    name, arguments, outcome, found = _calls(result)[0]
    assert (name, outcome) == ("lookup_order", "ok")
    assert "7302" in arguments["order_id"]
    assert found["status"] == "shipped"
    assert result.stop_reason == "final"
    # the tool call is a span of the agent's run, which is inside the router's
    [call_span] = [e for e in result.trace if e.kind == "tool.call"]
    assert call_span.agent == "customer_service"
    assert call_span.data["tool"] == "lookup_order"


def test_a_return_request_starts_a_return(results: dict[str, FlowResult]) -> None:
    result = results["return"]
    assert result.route is not None
    assert result.route.target == "customer_service"
    assert result.path == ["customer_service"]
    name, arguments, outcome, found = _calls(result)[0]
    assert (name, outcome) == ("return_order", "ok")
    assert "7316" in arguments["order_id"]
    assert found["return_id"].startswith("R-")
    assert found["refund"] == 119.0


def test_a_serial_number_goes_to_the_device_check(results: dict[str, FlowResult]) -> None:
    result = results["device"]
    assert result.route is not None
    assert (result.route.target, result.route.by) == ("tech_support", "rule")
    # two routers decided: the desk, then technical support's own rule on the serial
    assert _routes(result) == [
        ("desk", "tech_support", "rule"),
        ("tech_support", "device_support", "rule"),
    ]
    assert result.path == ["device_support"]
    name, arguments, outcome, found = _calls(result)[0]
    assert (name, outcome) == ("check_device", "ok")
    assert arguments["serial"].upper() == "LC30-58211"
    # the device's record brings its guide: offline camera -> KB-102
    assert found["guide"]["article"] == "KB-102"


def test_a_problem_without_a_serial_searches_the_guides(results: dict[str, FlowResult]) -> None:
    result = results["guide"]
    assert result.route is not None
    assert result.route.target == "tech_support"
    assert _routes(result)[-1] == ("tech_support", "troubleshooting", "default")
    assert result.path == ["troubleshooting"]
    name, arguments, outcome, found = _calls(result)[0]
    assert (name, outcome) == ("search_help", "ok")
    assert arguments["query"].strip()
    assert "articles" in found


def test_what_no_rule_matches_the_tiny_classifier_routes(results: dict[str, FlowResult]) -> None:
    result = results["unmatched"]
    assert result.route is not None
    assert result.route.by == "classifier"
    assert result.route.target in ("customer_service", "tech_support")
    # the classification is a model request of the router, before the chosen member runs
    requests = [e for e in result.trace if e.kind == "model.request" and e.agent == "desk"]
    assert len(requests) == 1
    assert requests[0].data["model"] == "smollm2-135m"
    first_agent = {"customer_service": "customer_service", "tech_support": "troubleshooting"}
    assert result.path == [first_agent[result.route.target]]


def test_every_run_stays_within_its_step_budget(results: dict[str, FlowResult]) -> None:
    for result in results.values():
        assert result.stop_reason == "final"
        assert all(run.usage.steps <= 2 for run in result.runs)
        assert result.text.strip()


def test_cli_prints_the_route_and_the_calls(state: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("shoal")),
            "run",
            str(SYSTEM),
            "Where is my order 7302?",
            "--json",
            "--trace",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "SHOAL_HOME": str(tmp_path)},
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    body = json.loads(done.stdout)
    assert body["route"]["target"] == "customer_service"
    assert body["route"]["by"] == "rule"
    assert body["path"] == ["customer_service"]
    first = body["runs"][0]["tool_calls"][0]
    assert first["name"] == "lookup_order"
    assert "7302" in first["arguments"]["order_id"]
    assert "agent.route" in done.stderr  # the trace tree
