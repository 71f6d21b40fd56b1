"""The BFCL runner (``evaluate``) and ``shoal eval tools``, with scripted models.

Each question runs through an ordinary agent whose tools are the question's functions declared
as external tools; the calls the run ends with are scored.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from shoal import FunctionModel
from shoal.cli.main import cli, main
from shoal.evals import (
    BUCKETS,
    STRATEGIES,
    BfclItem,
    EvalReport,
    ItemOutcome,
    evaluate,
    evaluate_item,
    irrelevance_items,
    load_suite,
)
from shoal.evals.runner import agent_for_item
from shoal.exceptions import CLI_EXIT_CODES, UserError
from shoal.messages import Message, ToolCall, UserMessage
from shoal.models import Model, ModelRequestParameters

Answer = str | ToolCall | list[ToolCall]

TRIANGLE = {
    "name": "geometry.triangle_area",
    "description": "Calculate the area of a triangle from its base and height.",
    "parameters": {
        "type": "dict",
        "properties": {
            "base": {"type": "integer", "description": "The base of the triangle."},
            "height": {"type": "integer", "description": "The height of the triangle."},
            "unit": {"type": "string", "description": "The unit of measure.", "optional": True},
        },
        "required": ["base", "height"],
    },
}
WEATHER = {
    "name": "get_weather",
    "description": "Get the current weather forecast for a city.",
    "parameters": {
        "type": "dict",
        "properties": {"city": {"type": "string", "description": "The city name."}},
        "required": ["city"],
    },
}

TRIANGLE_Q = "Find the area of a triangle with a base of 10 units and a height of 5 units."
WEATHER_Q = "What is the weather like in Paris right now?"
POEM_Q = "Write me a short poem about the sea."

TRIANGLE_CALL = ToolCall(name="geometry_triangle_area", arguments={"base": 10, "height": 5})
WEATHER_CALL = ToolCall(name="get_weather", arguments={"city": "Paris"})


def write_jsonl(path: Path, records: Sequence[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def question(item_id: str, content: str, *functions: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": item_id,
        "question": [[{"role": "user", "content": content}]],
        "function": list(functions),
    }


def write_suite(root: Path) -> Path:
    """Two simple_python questions with answers, and one irrelevance question."""
    write_jsonl(
        root / "BFCL_v4_simple_python.json",
        [question("simple_0", TRIANGLE_Q, TRIANGLE), question("simple_1", WEATHER_Q, WEATHER)],
    )
    write_jsonl(
        root / "possible_answer" / "BFCL_v4_simple_python.json",
        [
            {
                "id": "simple_0",
                "ground_truth": [
                    {
                        "geometry.triangle_area": {
                            "base": [10],
                            "height": [5],
                            "unit": ["units", ""],
                        }
                    }
                ],
            },
            {"id": "simple_1", "ground_truth": [{"get_weather": {"city": ["Paris", "Paris, FR"]}}]},
        ],
    )
    write_jsonl(root / "BFCL_v4_irrelevance.json", [question("irrelevance_0", POEM_Q, WEATHER)])
    return root


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    return write_suite(tmp_path / "suite")


@pytest.fixture
def items(suite: Path) -> list[BfclItem]:
    return load_suite(suite)


def by_id(items: Sequence[BfclItem], item_id: str) -> BfclItem:
    return next(item for item in items if item.id == item_id)


def answering(rules: dict[str, Answer]) -> FunctionModel:
    """A model that answers by the question (the first user message it sees)."""

    def answer(messages: list[Message], params: ModelRequestParameters) -> Answer:
        asked = next(m.content for m in messages if isinstance(m, UserMessage))
        return rules[asked]

    return FunctionModel(answer)


def scripted(*answers: Answer) -> FunctionModel:
    """A model that gives ``answers`` in order, whatever it is asked."""
    queue = list(answers)
    return FunctionModel(lambda messages, params: queue.pop(0))


# -- evaluate: scoring each item ------------------------------------------------------------


async def test_correct_call_is_correct(items: list[BfclItem]) -> None:
    model = answering({TRIANGLE_Q: TRIANGLE_CALL})

    report = await evaluate([by_id(items, "simple_0")], model)

    [outcome] = report.outcomes
    assert outcome.correct
    assert outcome.bucket is None
    assert outcome.detail == ""
    assert outcome.calls == [
        {"name": "geometry_triangle_area", "arguments": TRIANGLE_CALL.arguments}
    ]
    assert outcome.text == ""
    assert outcome.retries == 0
    assert outcome.id == "simple_0"
    assert outcome.category == "simple_python"
    assert outcome.seconds >= 0


async def test_coerced_arguments_are_scored(items: list[BfclItem]) -> None:
    model = answering(
        {TRIANGLE_Q: ToolCall(name="geometry_triangle_area", arguments={"base": "10", "height": 5})}
    )

    [outcome] = (await evaluate([by_id(items, "simple_0")], model)).outcomes

    assert outcome.correct
    assert outcome.calls[0]["arguments"] == {"base": 10, "height": 5}
    assert any("'base': '10' -> 10" in note for note in outcome.notes)


async def test_wrong_arguments(items: list[BfclItem]) -> None:
    model = answering(
        {TRIANGLE_Q: ToolCall(name="geometry_triangle_area", arguments={"base": 5, "height": 10})}
    )

    [outcome] = (await evaluate([by_id(items, "simple_0")], model)).outcomes

    assert not outcome.correct
    assert outcome.bucket == "wrong_arguments"
    assert "base" in outcome.detail
    assert outcome.calls == [
        {"name": "geometry_triangle_area", "arguments": {"base": 5, "height": 10}}
    ]


async def test_text_answer_is_no_call(items: list[BfclItem]) -> None:
    model = answering({WEATHER_Q: "It is probably sunny."})

    [outcome] = (await evaluate([by_id(items, "simple_1")], model)).outcomes

    assert outcome.bucket == "no_call"
    assert not outcome.correct
    assert outcome.text == "It is probably sunny."
    assert outcome.calls == []
    assert "get_weather" in outcome.detail


async def test_long_text_is_cut_in_the_outcome(items: list[BfclItem]) -> None:
    model = answering({WEATHER_Q: "sunny " * 200})

    [outcome] = (await evaluate([by_id(items, "simple_1")], model)).outcomes

    assert len(outcome.text) == 500


async def test_irrelevance_text_is_correct(items: list[BfclItem]) -> None:
    model = answering({POEM_Q: "The sea is wide and blue."})

    [outcome] = (await evaluate([by_id(items, "irrelevance_0")], model)).outcomes

    assert outcome.correct
    assert outcome.bucket is None
    assert outcome.category == "irrelevance"


async def test_irrelevance_call_is_called_when_should_not(items: list[BfclItem]) -> None:
    model = answering({POEM_Q: ToolCall(name="get_weather", arguments={"city": "the sea"})})

    [outcome] = (await evaluate([by_id(items, "irrelevance_0")], model)).outcomes

    assert not outcome.correct
    assert outcome.bucket == "called_when_should_not"
    assert "get_weather" in outcome.detail


async def test_unparsable_output_is_invalid_output_with_the_error_in_notes(
    items: list[BfclItem],
) -> None:
    model = FunctionModel(lambda messages, params: "<tool_call>{not json")

    [outcome] = (await evaluate([by_id(items, "simple_0")], model)).outcomes

    assert not outcome.correct
    assert outcome.bucket == "invalid_output"
    assert outcome.calls == []
    [note] = outcome.notes
    assert "kept producing unusable output" in note
    assert "3 attempts" in note  # the agent's default budget: 2 retries
    assert len(model.requests) == 3


async def test_invalid_call_then_text_is_invalid_output(items: list[BfclItem]) -> None:
    model = scripted(
        ToolCall(name="get_weather", arguments={"town": "Paris"}),  # city missing
        "I do not know.",
    )

    [outcome] = (await evaluate([by_id(items, "simple_1")], model)).outcomes

    assert outcome.bucket == "invalid_output"
    assert outcome.retries == 1
    assert outcome.text == "I do not know."
    assert outcome.calls == []


async def test_invalid_call_then_correct_call_is_correct(items: list[BfclItem]) -> None:
    model = scripted(ToolCall(name="get_weather", arguments={}), WEATHER_CALL)

    [outcome] = (await evaluate([by_id(items, "simple_1")], model)).outcomes

    assert outcome.correct
    assert outcome.retries == 1
    assert outcome.calls == [{"name": "get_weather", "arguments": {"city": "Paris"}}]


async def test_wrong_function(items: list[BfclItem]) -> None:
    item = by_id(items, "simple_1")
    two_tools = BfclItem(
        id="multiple_0",
        category="multiple",
        messages=item.messages,
        functions=(*item.functions, TRIANGLE),
        tools=(*item.tools, by_id(items, "simple_0").tools[0]),
        ground_truth=item.ground_truth,
    )
    model = answering({WEATHER_Q: TRIANGLE_CALL})

    [outcome] = (await evaluate([two_tools], model)).outcomes

    assert outcome.bucket == "wrong_function"
    assert "geometry_triangle_area" in outcome.detail


async def test_several_calls_are_wrong_count(items: list[BfclItem]) -> None:
    model = answering({WEATHER_Q: [WEATHER_CALL, WEATHER_CALL]})

    [outcome] = (await evaluate([by_id(items, "simple_1")], model)).outcomes

    assert outcome.bucket == "wrong_count"
    assert len(outcome.calls) == 2


async def test_system_messages_become_instructions(tmp_path: Path) -> None:
    root = tmp_path / "suite"
    record = question("simple_0", WEATHER_Q, WEATHER)
    record["question"][0].insert(0, {"role": "system", "content": "Answer in French."})
    write_jsonl(root / "BFCL_v4_simple_python.json", [record])
    write_jsonl(
        root / "possible_answer" / "BFCL_v4_simple_python.json",
        [{"id": "simple_0", "ground_truth": [{"get_weather": {"city": ["Paris"]}}]}],
    )
    [item] = load_suite(root)
    model = answering({WEATHER_Q: WEATHER_CALL})

    [outcome] = (await evaluate([item], model)).outcomes

    assert outcome.correct
    sent = model.requests[0].messages
    assert sent[0].role == "system"
    assert sent[0].content == "Answer in French."
    assert [m.content for m in sent if isinstance(m, UserMessage)] == [WEATHER_Q]


# -- evaluate: the agent each item runs on -------------------------------------------------


def test_agent_for_item_declares_external_tools(items: list[BfclItem]) -> None:
    item = by_id(items, "simple_0")

    agent = agent_for_item(item, FunctionModel(lambda m, p: "x"))

    [declared] = agent.tools.values()
    assert declared.external_only
    assert declared.name == "geometry_triangle_area"
    assert declared.definition.parameters == item.tools[0].parameters
    assert agent.settings.temperature == 0.0  # greedy: reproducible
    assert agent.tool_strategy is None  # auto: the model's profile decides


@pytest.mark.parametrize("strategy", [s for s in STRATEGIES if s != "auto"])
def test_agent_for_item_passes_the_strategy(items: list[BfclItem], strategy: str) -> None:
    agent = agent_for_item(items[0], FunctionModel(lambda m, p: "x"), strategy)

    assert agent.tool_strategy == strategy


async def test_requests_are_greedy_and_offer_the_item_tools(items: list[BfclItem]) -> None:
    model = answering({TRIANGLE_Q: TRIANGLE_CALL})

    await evaluate([by_id(items, "simple_0")], model)

    params = model.requests[0].params
    assert params.settings.temperature == 0.0
    assert [t.name for t in params.offered_tools()] == ["geometry_triangle_area"]


async def test_parse_strategy_is_unconstrained(items: list[BfclItem]) -> None:
    model = answering({TRIANGLE_Q: TRIANGLE_CALL})

    report = await evaluate([by_id(items, "simple_0")], model, strategy="parse")

    assert report.strategy == "parse"
    assert [r.params.constrained for r in model.requests] == [False]


async def test_two_phase_strategy_routes_first(items: list[BfclItem]) -> None:
    seen: list[ModelRequestParameters] = []

    def answer(messages: list[Message], params: ModelRequestParameters) -> Answer:
        seen.append(params)
        if params.output_schema is not None:
            return '"get_weather"'
        return WEATHER_CALL

    report = await evaluate([by_id(items, "simple_1")], FunctionModel(answer), strategy="two-phase")

    assert report.outcomes[0].correct
    assert seen[0].output_schema == {"enum": ["get_weather", "none"]}
    assert seen[1].tool_choice == "get_weather"
    assert "router: get_weather" in report.outcomes[0].notes


async def test_relevance_strategy_answers_irrelevance_in_text(items: list[BfclItem]) -> None:
    model = answering({POEM_Q: "Waves."})

    report = await evaluate([by_id(items, "irrelevance_0")], model, strategy="relevance")

    assert report.outcomes[0].correct
    assert model.requests[0].params.tool_choice == "none"


async def test_unknown_strategy_is_a_user_error(items: list[BfclItem]) -> None:
    model = answering({TRIANGLE_Q: TRIANGLE_CALL})

    with pytest.raises(UserError, match="unknown strategy 'fastest'") as info:
        await evaluate(items, model, strategy="fastest")

    for strategy in STRATEGIES:
        assert strategy in str(info.value)
    assert model.requests == []


async def test_on_item_is_called_once_per_item_in_order(items: list[BfclItem]) -> None:
    model = answering({TRIANGLE_Q: TRIANGLE_CALL, WEATHER_Q: "Sunny.", POEM_Q: "Waves."})
    seen: list[ItemOutcome] = []

    report = await evaluate(items, model, on_item=seen.append)

    assert seen == report.outcomes
    assert [o.id for o in seen] == [item.id for item in items]


async def test_the_model_is_prepared_once(items: list[BfclItem]) -> None:
    prepared: list[str] = []

    class Prepared(FunctionModel):
        async def prepare(self) -> None:
            prepared.append(self.name)

    model = Prepared(lambda messages, params: "no idea", name="prepared")

    report = await evaluate(items, model)

    assert prepared == ["prepared"]
    assert report.model == "prepared"
    assert report.strategy == "auto"


async def test_evaluate_item_alone(items: list[BfclItem]) -> None:
    outcome = await evaluate_item(by_id(items, "simple_1"), answering({WEATHER_Q: WEATHER_CALL}))

    assert outcome.correct


# -- the report ------------------------------------------------------------------------------


def outcome(
    item_id: str, category: str, bucket: str | None, seconds: float, retries: int = 0
) -> ItemOutcome:
    return ItemOutcome(
        id=item_id,
        category=category,
        correct=bucket is None,
        bucket=bucket,
        detail="" if bucket is None else f"why {item_id}",
        calls=[{"name": "f", "arguments": {"x": [1, 2], "y": None}}],
        text="",
        seconds=seconds,
        retries=retries,
        notes=["a note"],
    )


REPORT = EvalReport(
    model="tiny",
    strategy="grammar",
    outcomes=[
        outcome("a0", "alpha", None, 1.0),
        outcome("b0", "beta", "no_call", 4.0),
        outcome("a1", "alpha", "wrong_arguments", 3.0),
        outcome("a2", "alpha", None, 2.0, retries=1),
        outcome("b1", "beta", "no_call", 0.5),
    ],
)


def test_categories_in_order_of_first_appearance() -> None:
    alpha, beta = REPORT.categories

    assert (alpha.category, alpha.total, alpha.correct) == ("alpha", 3, 2)
    assert alpha.accuracy == pytest.approx(2 / 3)
    assert alpha.median_seconds == 2.0
    assert alpha.buckets == {b: (1 if b == "wrong_arguments" else 0) for b in BUCKETS}
    assert (beta.category, beta.total, beta.correct, beta.accuracy) == ("beta", 2, 0, 0.0)
    assert beta.median_seconds == pytest.approx(2.25)  # even count: mean of the middle two
    assert beta.buckets["no_call"] == 2


def test_overall() -> None:
    overall = REPORT.overall

    assert overall.category == "all"
    assert (overall.total, overall.correct) == (5, 2)
    assert overall.accuracy == pytest.approx(0.4)
    assert overall.median_seconds == 2.0
    assert list(overall.buckets) == list(BUCKETS)  # every bucket, in report order
    assert overall.buckets["no_call"] == 2
    assert overall.buckets["wrong_arguments"] == 1
    assert sum(overall.buckets.values()) == overall.total - overall.correct


def test_empty_report() -> None:
    empty = EvalReport(model="m", strategy="auto", outcomes=[])

    assert empty.categories == []
    assert empty.overall.total == 0
    assert empty.overall.accuracy == 0.0
    assert empty.overall.median_seconds == 0.0
    assert json.loads(json.dumps(empty.to_json()))["items"] == []


def test_to_json() -> None:
    data = json.loads(json.dumps(REPORT.to_json()))  # serialisable as is

    assert data["model"] == "tiny"
    assert data["strategy"] == "grammar"
    assert data["overall"]["category"] == "all"
    assert data["overall"]["accuracy"] == pytest.approx(0.4)
    assert data["overall"]["median_seconds"] == 2.0
    assert set(data["overall"]["buckets"]) == set(BUCKETS)
    assert [c["category"] for c in data["categories"]] == ["alpha", "beta"]
    assert data["categories"][1]["buckets"]["no_call"] == 2
    assert [i["id"] for i in data["items"]] == ["a0", "b0", "a1", "a2", "b1"]
    first = data["items"][0]
    assert set(first) == {
        "id",
        "category",
        "correct",
        "bucket",
        "detail",
        "calls",
        "text",
        "seconds",
        "retries",
        "notes",
    }
    assert data["items"][3]["retries"] == 1
    assert data["items"][1]["bucket"] == "no_call"
    assert first["calls"] == [{"name": "f", "arguments": {"x": [1, 2], "y": None}}]


async def test_a_real_run_report_is_json(items: list[BfclItem]) -> None:
    model = answering({TRIANGLE_Q: TRIANGLE_CALL, WEATHER_Q: "Sunny.", POEM_Q: "Waves."})

    report = await evaluate(items, model)

    data = json.loads(json.dumps(report.to_json()))
    assert data["overall"]["total"] == 3
    assert data["overall"]["correct"] == 2
    assert data["overall"]["buckets"]["no_call"] == 1
    assert [c["category"] for c in data["categories"]] == ["irrelevance", "simple_python"]


# -- shoal eval tools --------------------------------------------------------------------------


def use_model(monkeypatch: pytest.MonkeyPatch, model: Model) -> list[str]:
    """Make the CLI resolve every model reference to ``model``; return the references asked."""
    asked: list[str] = []

    def resolve(ref: str) -> Model:
        asked.append(ref)
        return model

    monkeypatch.setattr("shoal.cli.evals.resolve_model", resolve)
    return asked


def table_rows(out: str) -> dict[str, list[str]]:
    """The report table: category -> its cells (the header row under ``category``)."""
    rows: dict[str, list[str]] = {}
    for line in out.splitlines()[1:]:
        cells = re.split(r"\s{2,}", line.strip())
        rows[cells[0]] = cells
    return rows


HEADER = [
    "category",
    "n",
    "accuracy",
    "median s",
    "no call",
    "wrong fn",
    "wrong args",
    "wrong n",
    "invalid",
    "called",
]


def perfect_model() -> FunctionModel:
    return answering(
        {
            TRIANGLE_Q: TRIANGLE_CALL,
            WEATHER_Q: WEATHER_CALL,
            POEM_Q: "A poem.",
        }
    )


def test_eval_tools_prints_the_table_and_writes_json(
    suite: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "out.json"

    code = main(
        ["eval", "tools", "--suite", str(suite), "--model", "test", "--output", str(output)]
    )

    captured = capsys.readouterr()
    assert code == 0
    lines = captured.out.splitlines()
    assert lines[0] == "model test, strategy auto"
    rows = table_rows(captured.out)
    assert rows["category"] == HEADER
    assert list(rows) == ["category", "irrelevance", "simple_python", "irrelevance_dev", "all"]
    # TestModel calls every offered tool with made-up arguments
    simple = dict(zip(HEADER, rows["simple_python"], strict=True))
    assert simple["n"] == "2"
    assert simple["accuracy"] == "0.0%"
    assert simple["wrong args"] == "2"
    irrelevance = dict(zip(HEADER, rows["irrelevance"], strict=True))
    assert irrelevance["called"] == "1"
    total = dict(zip(HEADER, rows["all"], strict=True))
    assert total["n"] == "6"  # 3 questions + 3 generated no-tool-fits cases
    assert total["accuracy"] == "0.0%"
    assert total["called"] == "4"
    assert re.fullmatch(r"\d+\.\d\d", total["median s"])

    data = json.loads(output.read_text(encoding="utf-8"))
    assert data["model"] == "test"
    assert data["strategy"] == "auto"
    assert data["overall"]["total"] == 6
    assert data["overall"]["buckets"]["called_when_should_not"] == 4
    assert data["overall"]["buckets"]["wrong_arguments"] == 2
    assert len(data["items"]) == 6
    assert [c["category"] for c in data["categories"]] == [
        "irrelevance",
        "simple_python",
        "irrelevance_dev",
    ]
    assert f"report written to {output}" in captured.err
    assert "Traceback" not in captured.err


def test_eval_tools_with_a_scripted_model(
    suite: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    asked = use_model(monkeypatch, perfect_model())

    code = main(["eval", "tools", "--suite", str(suite), "--model", "scripted", "--no-irrelevance"])

    captured = capsys.readouterr()
    assert code == 0
    assert asked == ["scripted"]
    assert captured.out.splitlines()[0] == "model function, strategy auto"
    rows = table_rows(captured.out)
    assert list(rows) == ["category", "irrelevance", "simple_python", "all"]
    for name in ("irrelevance", "simple_python", "all"):
        assert rows[name][2] == "100.0%"
        assert rows[name][4:] == ["0"] * len(BUCKETS)
    assert rows["all"][1] == "3"
    # progress goes to stderr, never into the table
    assert "3/3 accuracy 100%" in captured.err
    assert "report written" not in captured.err


def test_irrelevance_rows_by_default_and_not_with_no_irrelevance(
    suite: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    use_model(monkeypatch, perfect_model())
    base = ["eval", "tools", "--suite", str(suite), "--model", "m"]

    assert main(base) == 0
    with_dev = table_rows(capsys.readouterr().out)
    assert main([*base, "--no-irrelevance"]) == 0
    without_dev = table_rows(capsys.readouterr().out)

    expected_dev = irrelevance_items(load_suite(suite))
    assert len(expected_dev) == 3
    assert with_dev["irrelevance_dev"][1] == "3"
    assert with_dev["all"][1] == "6"
    assert "irrelevance_dev" not in without_dev
    assert without_dev["all"][1] == "3"


def test_eval_tools_category_and_strategy(
    suite: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    model = perfect_model()
    use_model(monkeypatch, model)

    code = main(
        [
            "eval",
            "tools",
            "--suite",
            str(suite),
            "--model",
            "m",
            "--category",
            "simple_python",
            "--strategy",
            "parse",
            "--no-irrelevance",
        ]
    )

    out = capsys.readouterr().out
    assert code == 0
    assert out.splitlines()[0] == "model function, strategy parse"
    assert list(table_rows(out)) == ["category", "simple_python", "all"]
    assert {r.params.constrained for r in model.requests} == {False}


def test_missing_suite_is_a_one_line_user_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    asked = use_model(monkeypatch, perfect_model())
    missing = tmp_path / "no-such-suite"

    code = main(["eval", "tools", "--suite", str(missing), "--model", "m"])

    captured = capsys.readouterr()
    assert code == CLI_EXIT_CODES[UserError] == 2
    assert captured.out == ""
    assert captured.err == f"error: BFCL suite directory not found: {missing}\n"
    assert "Traceback" not in captured.err
    assert asked == []


def test_output_into_a_missing_directory_fails_before_model_work(
    suite: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    asked = use_model(monkeypatch, perfect_model())
    output = tmp_path / "missing" / "out.json"

    code = main(["eval", "tools", "--suite", str(suite), "--model", "m", "--output", str(output)])

    captured = capsys.readouterr()
    assert code == CLI_EXIT_CODES[UserError]
    assert captured.out == ""
    assert captured.err.startswith("error: cannot write the report: directory ")
    assert str(output.parent) in captured.err
    assert captured.err.count("\n") == 1
    assert asked == []  # no model was even resolved
    assert not output.parent.exists()


def test_unknown_strategy_on_the_command_line(
    suite: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    asked = use_model(monkeypatch, perfect_model())

    code = main(["eval", "tools", "--suite", str(suite), "--strategy", "fastest"])

    assert code == 2
    assert "fastest" in capsys.readouterr().err
    assert asked == []


def test_suite_without_questions_is_a_user_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    asked = use_model(monkeypatch, perfect_model())
    root = tmp_path / "empty"
    root.mkdir()
    (root / "BFCL_v4_irrelevance.json").write_text("\n", encoding="utf-8")

    code = main(["eval", "tools", "--suite", str(root), "--model", "m"])

    captured = capsys.readouterr()
    assert code == CLI_EXIT_CODES[UserError]
    assert captured.err == f"error: no questions to run in {root}\n"
    assert asked == []


def test_eval_help_lists_the_options() -> None:
    result = CliRunner().invoke(cli, ["eval", "tools", "--help"])

    assert result.exit_code == 0
    for option in ("--suite", "--model", "--strategy", "--category", "--limit", "--output"):
        assert option in result.output
    for strategy in STRATEGIES:
        assert strategy in result.output
