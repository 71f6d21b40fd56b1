"""BFCL data and scoring: loading a suite, converting schemas, pairing, scoring calls."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jsonschema
import llama_cpp.llama_grammar
import pytest

from shoal.evals.bfcl import (
    CATEGORIES,
    BfclItem,
    Score,
    SuiteError,
    bfcl_to_json_schema,
    irrelevance_items,
    load_suite,
    score_calls,
    tool_name,
)
from shoal.exceptions import UserError, exit_code_for
from shoal.messages import ToolCall

#: the development split, in ../shared beside the repository (as on CI)
DEV_SUITE = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "bfcl-dev"

# -- fixtures -------------------------------------------------------------------------------


def function_doc(
    name: str,
    properties: dict[str, Any],
    required: Sequence[str] = (),
    description: str = "",
) -> dict[str, Any]:
    return {
        "name": name,
        "description": description or f"The {name} function.",
        "parameters": {"type": "dict", "properties": properties, "required": list(required)},
    }


def question_record(
    item_id: str, content: str, functions: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "id": item_id,
        "question": [[{"role": "user", "content": content}]],
        "function": list(functions),
    }


TRIANGLE = function_doc(
    "geometry.triangle_area",
    {
        "base": {"type": "integer", "description": "The base."},
        "height": {"type": "integer", "description": "The height."},
        "unit": {"type": "string", "description": "The unit.", "optional": True},
    },
    required=["base", "height"],
    description="Area of a triangle from its base and height.",
)


def write_jsonl(path: Path, records: Sequence[Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def write_category(
    root: Path,
    category: str,
    questions: Sequence[dict[str, Any]],
    answers: Sequence[dict[str, Any]] | None,
) -> None:
    write_jsonl(root / f"BFCL_v4_{category}.json", questions)
    if answers is not None:
        write_jsonl(root / "possible_answer" / f"BFCL_v4_{category}.json", answers)


def simple_suite(root: Path, count: int = 10) -> Path:
    questions = [
        question_record(f"simple_python_{i}", f"Triangle {i}: base {i + 1}, height 2.", [TRIANGLE])
        for i in range(count)
    ]
    answers = [
        {
            "id": f"simple_python_{i}",
            "ground_truth": [
                {"geometry.triangle_area": {"base": [i + 1], "height": [2], "unit": ["", "cm"]}}
            ],
        }
        for i in range(count)
    ]
    write_category(root, "simple_python", questions, answers)
    return root


def make_item(
    functions: Sequence[dict[str, Any]],
    ground_truth: Sequence[dict[str, Any]],
    *,
    item_id: str = "t_0",
    category: str = "simple_python",
    question: str = "question?",
) -> BfclItem:
    """An item built the way the loader builds it (through a real file round trip)."""
    return BfclItem(
        id=item_id,
        category=category,
        messages=({"role": "user", "content": question},),
        functions=tuple(functions),
        tools=(),
        ground_truth=tuple(ground_truth),
    )


def call(name: str, **arguments: Any) -> ToolCall:
    return ToolCall(name=name, arguments=arguments)


def assert_fails(score: Score, bucket: str, *fragments: str) -> None:
    assert not score.correct, score
    assert score.bucket == bucket, score
    for fragment in fragments:
        assert fragment in score.detail, score


# -- tool names and schemas -----------------------------------------------------------------


def test_tool_name_replaces_dots() -> None:
    assert tool_name("math.factorial") == "math_factorial"
    assert tool_name("a.b.c_d") == "a_b_c_d"
    assert tool_name("plain") == "plain"


def test_categories_cover_the_single_turn_files() -> None:
    assert "simple_python" in CATEGORIES
    assert "multiple" in CATEGORIES
    assert "parallel" in CATEGORIES
    assert "irrelevance" in CATEGORIES
    assert len(set(CATEGORIES)) == len(CATEGORIES)


NESTED_BFCL_SCHEMA: dict[str, Any] = {
    "type": "dict",
    "properties": {
        "coords": {"type": "tuple", "items": {"type": "float"}, "description": "Lat, lon."},
        "budget": {
            "type": "dict",
            "description": "Budget range.",
            "properties": {"min": {"type": "float"}, "max": {"type": "float"}},
            "required": ["min"],
        },
        "payload": {"type": "any", "description": "Anything at all."},
        "rows": {
            "type": "array",
            "items": {
                "type": "dict",
                "properties": {"rank": {"type": "string", "enum": ["A", "K"]}},
            },
        },
        "verbose": {
            "type": "boolean",
            "default": True,
            "optional": True,
            "description": "Talk more.",
        },
        "count": {"type": "integer", "format": "int32", "maximum": 5},
    },
    "required": ["coords", "budget", "ghost"],
}


def test_schema_conversion_maps_types_recursively() -> None:
    schema = bfcl_to_json_schema(NESTED_BFCL_SCHEMA)
    assert schema == {
        "type": "object",
        "properties": {
            "coords": {"type": "array", "items": {"type": "number"}, "description": "Lat, lon."},
            "budget": {
                "type": "object",
                "description": "Budget range.",
                "properties": {"min": {"type": "number"}, "max": {"type": "number"}},
                "required": ["min"],
            },
            "payload": {},
            "rows": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"rank": {"type": "string", "enum": ["A", "K"]}},
                },
            },
            "verbose": {"type": "boolean", "default": True, "description": "Talk more."},
            "count": {"type": "integer"},
        },
        # "ghost" is not a declared property: dropped
        "required": ["coords", "budget"],
    }


def test_converted_schema_is_valid_json_schema_and_grammar() -> None:
    schema = bfcl_to_json_schema(NESTED_BFCL_SCHEMA)
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(
        {"coords": [1, 2.5], "budget": {"min": 3}, "payload": [None], "rows": [{"rank": "A"}]},
        schema,
    )
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"coords": ["x"], "budget": {"min": 3}}, schema)
    converter = llama_cpp.llama_grammar.SchemaConverter(
        prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False
    )
    converter.visit(schema, "")
    assert "root ::=" in converter.format_grammar()


def test_schema_conversion_does_not_mutate_its_input() -> None:
    original = json.loads(json.dumps(NESTED_BFCL_SCHEMA))
    bfcl_to_json_schema(NESTED_BFCL_SCHEMA)
    assert original == NESTED_BFCL_SCHEMA


def test_any_becomes_the_empty_schema() -> None:
    assert bfcl_to_json_schema({"type": "any", "description": "x", "default": 1}) == {}
    assert bfcl_to_json_schema({"description": "no type"}) == {}
    assert bfcl_to_json_schema({"type": "any", "enum": [1, "a"]}) == {"enum": [1, "a"]}


def test_schema_conversion_rejects_unknown_types() -> None:
    with pytest.raises(SuiteError, match="unsupported parameter type 'String'"):
        bfcl_to_json_schema({"type": "dict", "properties": {"s": {"type": "String"}}})


# -- loading --------------------------------------------------------------------------------


def test_load_suite_reads_items_and_converts_tools(tmp_path: Path) -> None:
    simple_suite(tmp_path, count=2)
    write_category(
        tmp_path,
        "multiple",
        [
            {
                "id": "multiple_0",
                "question": [
                    [
                        {"role": "system", "content": "Be brief."},
                        {"role": "user", "content": "Factorial of 5?"},
                    ],
                    [{"role": "user", "content": "A second turn, ignored."}],
                ],
                "function": [
                    function_doc("math.factorial", {"n": {"type": "integer"}}, ["n"]),
                    TRIANGLE,
                ],
            }
        ],
        [{"id": "multiple_0", "ground_truth": [{"math.factorial": {"n": [5]}}]}],
    )
    items = load_suite(tmp_path)
    assert [item.id for item in items] == ["multiple_0", "simple_python_0", "simple_python_1"]
    first = items[0]
    assert first.category == "multiple"
    assert first.messages == (
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Factorial of 5?"},
    )
    assert first.question == "Factorial of 5?"
    assert [tool.name for tool in first.tools] == ["math_factorial", "geometry_triangle_area"]
    assert first.tools[0].parameters == {
        "type": "object",
        "properties": {"n": {"type": "integer"}},
        "required": ["n"],
    }
    assert first.tools[1].description == "Area of a triangle from its base and height."
    assert "optional" not in first.tools[1].parameters["properties"]["unit"]
    assert first.functions[0]["name"] == "math.factorial"
    assert first.ground_truth == ({"math.factorial": {"n": [5]}},)


def test_load_suite_selects_categories_in_the_given_order(tmp_path: Path) -> None:
    simple_suite(tmp_path, count=1)
    write_category(
        tmp_path,
        "irrelevance",
        [question_record("irrelevance_0", "Tell me a joke.", [TRIANGLE])],
        None,
    )
    items = load_suite(tmp_path, categories=["simple_python", "irrelevance", "simple_python"])
    assert [item.category for item in items] == ["simple_python", "irrelevance"]
    assert items[1].ground_truth == ()
    assert load_suite(tmp_path, categories=[]) == []
    assert [item.id for item in load_suite(tmp_path, categories="irrelevance")] == ["irrelevance_0"]


def test_tool_parameters_always_form_an_object(tmp_path: Path) -> None:
    bare = {"name": "ping", "description": "Ping."}
    untyped = {"name": "echo", "parameters": {"properties": {"x": {"type": "string"}}}}
    write_category(tmp_path, "irrelevance", [question_record("i_0", "Hi", [bare, untyped])], None)
    (item,) = load_suite(tmp_path)
    assert item.tools[0].parameters == {"type": "object", "properties": {}}
    assert item.tools[1].parameters["type"] == "object"
    assert item.tools[1].description == ""


def test_limit_spreads_over_the_file(tmp_path: Path) -> None:
    simple_suite(tmp_path, count=10)
    ids = [item.id for item in load_suite(tmp_path, limit=3)]
    assert ids == ["simple_python_0", "simple_python_3", "simple_python_6"]
    assert ids == [item.id for item in load_suite(tmp_path, limit=3)]  # deterministic
    assert len(load_suite(tmp_path, limit=5)) == 5
    assert [i.id for i in load_suite(tmp_path, limit=5)][-1] == "simple_python_8"
    assert len(load_suite(tmp_path, limit=100)) == 10
    assert load_suite(tmp_path, limit=0) == []


def test_limit_applies_per_category(tmp_path: Path) -> None:
    simple_suite(tmp_path, count=4)
    write_category(
        tmp_path,
        "irrelevance",
        [question_record(f"irrelevance_{i}", "Hi", [TRIANGLE]) for i in range(4)],
        None,
    )
    items = load_suite(tmp_path, limit=2)
    assert [item.id for item in items] == [
        "irrelevance_0",
        "irrelevance_2",
        "simple_python_0",
        "simple_python_2",
    ]


def test_missing_directory_is_a_suite_error(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match="directory not found"):
        load_suite(tmp_path / "nope")


def test_suite_error_is_a_user_error_with_a_cli_exit_code(tmp_path: Path) -> None:
    with pytest.raises(UserError) as caught:
        load_suite(tmp_path / "nope")
    assert exit_code_for(caught.value) == 2
    assert "\n" not in str(caught.value)


def test_directory_without_question_files_is_a_suite_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello", encoding="utf-8")
    with pytest.raises(SuiteError, match=r"no BFCL_v4_\*\.json question files"):
        load_suite(tmp_path)


def test_unknown_category_lists_the_available_ones(tmp_path: Path) -> None:
    simple_suite(tmp_path, count=1)
    with pytest.raises(SuiteError, match="unknown BFCL category 'parallel'") as caught:
        load_suite(tmp_path, categories=["parallel"])
    assert "available: simple_python" in str(caught.value)


def test_negative_limit_is_a_suite_error(tmp_path: Path) -> None:
    simple_suite(tmp_path, count=1)
    with pytest.raises(SuiteError, match="limit"):
        load_suite(tmp_path, limit=-1)


def test_bad_json_line_names_file_and_line(tmp_path: Path) -> None:
    simple_suite(tmp_path, count=3)
    path = tmp_path / "BFCL_v4_simple_python.json"
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[1] = '{"id": "simple_python_1", "question": [[{'
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(SuiteError, match=r"BFCL_v4_simple_python\.json:2: not valid JSON"):
        load_suite(tmp_path)


def test_json_line_that_is_not_an_object(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "BFCL_v4_irrelevance.json", [[1, 2]])
    with pytest.raises(SuiteError, match=r":1: expected a JSON object"):
        load_suite(tmp_path)


def test_bad_answer_line_names_the_answer_file(tmp_path: Path) -> None:
    simple_suite(tmp_path, count=2)
    path = tmp_path / "possible_answer" / "BFCL_v4_simple_python.json"
    path.write_text(path.read_text(encoding="utf-8") + "not json\n", encoding="utf-8")
    with pytest.raises(SuiteError, match=r"possible_answer.BFCL_v4_simple_python\.json:3"):
        load_suite(tmp_path)


def test_question_record_missing_keys(tmp_path: Path) -> None:
    write_category(tmp_path, "irrelevance", [{"id": "irrelevance_0", "question": []}], None)
    with pytest.raises(SuiteError, match=r"json:1: record is missing key\(s\): function"):
        load_suite(tmp_path)


def test_answer_record_missing_keys(tmp_path: Path) -> None:
    write_category(
        tmp_path,
        "simple_python",
        [question_record("simple_python_0", "Q", [TRIANGLE])],
        [{"id": "simple_python_0"}],
    )
    with pytest.raises(SuiteError, match=r"missing key\(s\): ground_truth"):
        load_suite(tmp_path)


def test_question_without_answer(tmp_path: Path) -> None:
    simple_suite(tmp_path, count=2)
    write_jsonl(
        tmp_path / "possible_answer" / "BFCL_v4_simple_python.json",
        [{"id": "simple_python_0", "ground_truth": [{"geometry.triangle_area": {"base": [1]}}]}],
    )
    with pytest.raises(SuiteError, match="'simple_python_1' has no answer"):
        load_suite(tmp_path)


def test_missing_answer_file(tmp_path: Path) -> None:
    write_category(tmp_path, "multiple", [question_record("multiple_0", "Q", [TRIANGLE])], None)
    with pytest.raises(SuiteError, match="answer file not found for category 'multiple'"):
        load_suite(tmp_path)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"id": "x", "question": "hello", "function": []}, "list of turns"),
        ({"id": "x", "question": [[]], "function": []}, "no messages"),
        ({"id": "x", "question": [[{"role": "user"}]], "function": []}, "'role' and 'content'"),
        (question_record("x", "Q", [{"description": "nameless"}]), "string 'name'"),
        ({"id": "x", "question": [[{"role": "user", "content": "Q"}]], "function": 3}, "list"),
    ],
)
def test_malformed_question_records(tmp_path: Path, record: dict[str, Any], message: str) -> None:
    write_category(tmp_path, "irrelevance", [record], None)
    with pytest.raises(SuiteError, match=message):
        load_suite(tmp_path)


@pytest.mark.parametrize(
    ("ground_truth", "message"),
    [
        ({"geometry.triangle_area": {}}, "must be a list"),
        ([{"a": {}, "b": {}}], "each expected call"),
        ([{"geometry.triangle_area": {"base": 3}}], "list of values"),
        ([{"other.function": {"base": [3]}}], "not among the functions"),
    ],
)
def test_malformed_ground_truth(tmp_path: Path, ground_truth: Any, message: str) -> None:
    write_category(
        tmp_path,
        "simple_python",
        [question_record("simple_python_0", "Q", [TRIANGLE])],
        [{"id": "simple_python_0", "ground_truth": ground_truth}],
    )
    with pytest.raises(SuiteError, match=message):
        load_suite(tmp_path)


def test_duplicate_question_id(tmp_path: Path) -> None:
    record = question_record("irrelevance_0", "Q", [TRIANGLE])
    write_category(tmp_path, "irrelevance", [record, record], None)
    with pytest.raises(SuiteError, match="duplicate id 'irrelevance_0'"):
        load_suite(tmp_path)


def test_unsupported_type_in_a_function_doc_names_the_line(tmp_path: Path) -> None:
    java = function_doc("f", {"s": {"type": "String"}})
    write_category(tmp_path, "irrelevance", [question_record("i_0", "Q", [java])], None)
    with pytest.raises(SuiteError, match=r"BFCL_v4_irrelevance\.json:1: unsupported"):
        load_suite(tmp_path)


def test_question_is_the_last_user_message() -> None:
    item = BfclItem(
        id="x",
        category="live_simple",
        messages=(
            {"role": "user", "content": "first"},
            {"role": "user", "content": "second"},
            {"role": "assistant", "content": "reply"},
        ),
        functions=(),
        tools=(),
        ground_truth=(),
    )
    assert item.question == "second"


# -- irrelevance pairing --------------------------------------------------------------------


def pairing_items() -> list[BfclItem]:
    def item(item_id: str, question: str, name: str, description: str) -> BfclItem:
        doc = function_doc(name, {"x": {"type": "integer"}}, ["x"], description)
        return make_item([doc], [{name: {"x": [1]}}], item_id=item_id, question=question)

    return [
        item(
            "simple_python_3",
            "Find the roots of a quadratic equation with a=1, b=-3, c=2.",
            "algebra.quadratic_roots",
            "Find the roots of a quadratic equation ax^2 + bx + c = 0.",
        ),
        item(
            "simple_python_4",
            "Solve a quadratic equation where a=2, b=6, and c=5",
            "solve_quadratic_equation",
            "Function solves the quadratic equation and returns its roots.",
        ),
        item(
            "simple_python_5",
            "Solve a quadratic equation with a=3, b=-11, c=-4 and give all roots.",
            "solve_quadratic",
            "Solve a quadratic equation given coefficients a, b, and c.",
        ),
        item(
            "weather_0",
            "What is the humidity in Miami over the next week?",
            "weather.humidity_forecast",
            "Retrieve the humidity forecast for a city.",
        ),
        item(
            "music_0",
            "Which musical scale belongs to C sharp major?",
            "music.get_scale",
            "The notes of a musical scale for a key.",
        ),
        item(
            "stock_0",
            "What is Apple's stock price today?",
            "stock_market.price",
            "The latest stock market price of a company.",
        ),
    ]


QUADRATIC_FUNCTIONS = {"algebra.quadratic_roots", "solve_quadratic_equation", "solve_quadratic"}


def test_irrelevance_items_never_pair_near_duplicate_topics() -> None:
    items = pairing_items()
    for seed in range(25):
        generated = irrelevance_items(items, seed=seed)
        assert len(generated) == len(items)
        for original, new in zip(items, generated, strict=True):
            partner_names = {f["name"] for f in new.functions}
            own_names = {f["name"] for f in original.functions}
            assert not partner_names & own_names
            if own_names & QUADRATIC_FUNCTIONS:
                assert not partner_names & QUADRATIC_FUNCTIONS, (seed, original.id, new)


def test_irrelevance_items_shape() -> None:
    items = pairing_items()
    generated = irrelevance_items(items)
    for original, new in zip(items, generated, strict=True):
        assert new.id == f"irrelevance_dev_{original.id}"
        assert new.category == "irrelevance_dev"
        assert new.ground_truth == ()
        assert new.messages == original.messages
        assert new.question == original.question
        partner = next(i for i in items if i.functions == new.functions)
        assert partner is not original
        assert new.tools == partner.tools
        assert score_calls(new, []).correct
        assert_fails(
            score_calls(new, [call("anything", x=1)]), "called_when_should_not", "anything"
        )


def test_irrelevance_items_are_deterministic() -> None:
    items = pairing_items()
    assert irrelevance_items(items, seed=7) == irrelevance_items(items, seed=7)
    partners = {
        tuple(tuple(f["name"] for f in new.functions) for new in irrelevance_items(items, seed=s))
        for s in range(10)
    }
    assert len(partners) > 1  # the seed matters


def test_irrelevance_items_skip_questions_without_an_unrelated_partner() -> None:
    quadratics = pairing_items()[:3]
    assert irrelevance_items(quadratics) == []


def test_irrelevance_partner_names_must_not_echo_the_question() -> None:
    items = pairing_items()
    # a question about stock prices, whose own function has unrelated words
    sneaky = make_item(
        [function_doc("ticker.quote", {"x": {"type": "integer"}}, ["x"], "Quote.")],
        [{"ticker.quote": {"x": [1]}}],
        item_id="sneaky",
        question="What is the humidity forecast in Miami?",
    )
    for seed in range(25):
        new = irrelevance_items([*items, sneaky], seed=seed)[-1]
        assert new.id == "irrelevance_dev_sneaky"
        assert all("humidity" not in f["name"] for f in new.functions), seed


# -- scoring --------------------------------------------------------------------------------

TRIANGLE_ITEM = make_item(
    [TRIANGLE],
    [{"geometry.triangle_area": {"base": [10], "height": [5], "unit": ["units", ""]}}],
)


def test_correct_call() -> None:
    score = score_calls(TRIANGLE_ITEM, [call("geometry_triangle_area", base=10, height=5)])
    assert score == Score(correct=True, bucket=None, detail="")
    assert score_calls(
        TRIANGLE_ITEM, [call("geometry_triangle_area", base=10, height=5, unit="Units")]
    ).correct


def test_wrong_value() -> None:
    score = score_calls(TRIANGLE_ITEM, [call("geometry_triangle_area", base=5, height=5)])
    assert_fails(score, "wrong_arguments", "base: got 5, expected one of [10]")


def test_name_must_be_the_converted_name() -> None:
    score = score_calls(TRIANGLE_ITEM, [call("geometry.triangle_area", base=10, height=5)])
    assert_fails(score, "wrong_function", "expected geometry_triangle_area")


def test_wrong_function_among_several() -> None:
    other = function_doc("circle_area", {"radius": {"type": "float"}}, ["radius"])
    item = make_item([TRIANGLE, other], TRIANGLE_ITEM.ground_truth, category="multiple")
    assert_fails(
        score_calls(item, [call("circle_area", radius=2.0)]),
        "wrong_function",
        "called circle_area",
    )


def test_no_call_and_invalid_output() -> None:
    assert_fails(score_calls(TRIANGLE_ITEM, []), "no_call", "geometry_triangle_area")
    assert_fails(score_calls(TRIANGLE_ITEM, [], invalid_output=True), "invalid_output")
    # calls that were read are scored on their merits
    ok = [call("geometry_triangle_area", base=10, height=5)]
    assert score_calls(TRIANGLE_ITEM, ok, invalid_output=True).correct


def test_wrong_count() -> None:
    calls = [call("geometry_triangle_area", base=10, height=5)] * 2
    assert_fails(score_calls(TRIANGLE_ITEM, calls), "wrong_count", "2 calls, expected 1")


def test_empty_ground_truth_wants_no_call() -> None:
    item = make_item([TRIANGLE], [], category="irrelevance")
    assert score_calls(item, []).correct
    # output that could not be read is a failure even where no call was expected
    assert_fails(score_calls(item, [], invalid_output=True), "invalid_output")
    assert_fails(
        score_calls(item, [call("geometry_triangle_area", base=1, height=1)]),
        "called_when_should_not",
    )


def test_missing_required_parameter() -> None:
    score = score_calls(TRIANGLE_ITEM, [call("geometry_triangle_area", base=10)])
    assert_fails(score, "wrong_arguments", "missing required parameter 'height'")


def test_parameter_outside_the_doc() -> None:
    score = score_calls(
        TRIANGLE_ITEM, [call("geometry_triangle_area", base=10, height=5, color="red")]
    )
    assert_fails(score, "wrong_arguments", "unexpected parameter 'color'")


def test_parameter_outside_the_ground_truth() -> None:
    item = make_item([TRIANGLE], [{"geometry.triangle_area": {"base": [10], "height": [5]}}])
    score = score_calls(item, [call("geometry_triangle_area", base=10, height=5, unit="cm")])
    assert_fails(score, "wrong_arguments", "unexpected parameter 'unit'")


def test_optional_parameter_may_be_omitted_only_when_empty_string_is_acceptable() -> None:
    doc = function_doc("f", {"a": {"type": "integer"}, "b": {"type": "integer"}})
    optional = make_item([doc], [{"f": {"a": [1], "b": ["", 2]}}])
    assert score_calls(optional, [call("f", a=1)]).correct
    assert score_calls(optional, [call("f", a=1, b=2)]).correct
    mandatory = make_item([doc], [{"f": {"a": [1], "b": [2]}}])
    assert_fails(score_calls(mandatory, [call("f", a=1)]), "wrong_arguments", "'b'")


def test_required_parameter_with_empty_acceptable_value_is_still_required() -> None:
    # BFCL checks the doc's required list before the ground truth's "" (simple_python_200)
    doc = function_doc("f", {"a": {"type": "float"}}, required=["a"])
    item = make_item([doc], [{"f": {"a": ["", 25.0]}}])
    assert score_calls(item, [call("f", a=25)]).correct
    assert_fails(score_calls(item, [call("f")]), "wrong_arguments", "required")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("New York, NY", "new york ny"),
        ("2024-04-01", "2024/04/01"),
        ("x^2 * y", "x2y"),
        ("it's", 'IT"S'),
        ("snake_case.name", "snakecasename"),
    ],
)
def test_strings_are_standardised(given: str, expected: str) -> None:
    doc = function_doc("f", {"s": {"type": "string"}}, ["s"])
    item = make_item([doc], [{"f": {"s": [expected]}}])
    assert score_calls(item, [call("f", s=given)]).correct


def test_strings_differing_in_letters_do_not_match() -> None:
    doc = function_doc("f", {"s": {"type": "string"}}, ["s"])
    item = make_item([doc], [{"f": {"s": ["Paris"]}}])
    assert_fails(score_calls(item, [call("f", s="Pariss")]), "wrong_arguments", "'Pariss'")


def test_bool_is_not_int_and_int_is_not_bool() -> None:
    doc = function_doc("f", {"n": {"type": "integer"}, "flag": {"type": "boolean"}})
    item = make_item([doc], [{"f": {"n": [1], "flag": [True]}}])
    assert score_calls(item, [call("f", n=1, flag=True)]).correct
    assert_fails(score_calls(item, [call("f", n=True, flag=True)]), "wrong_arguments", "n:")
    assert_fails(score_calls(item, [call("f", n=1, flag=1)]), "wrong_arguments", "flag:")


def test_doc_type_is_checked() -> None:
    doc = function_doc("f", {"n": {"type": "integer"}}, ["n"])
    item = make_item([doc], [{"f": {"n": [5]}}])
    assert_fails(score_calls(item, [call("f", n="5")]), "wrong_arguments", "expected type integer")
    assert_fails(score_calls(item, [call("f", n=5.0)]), "wrong_arguments", "got 5.0 (float)")


def test_int_is_accepted_for_float_at_top_level_only() -> None:
    doc = function_doc(
        "f",
        {"x": {"type": "float"}, "xs": {"type": "array", "items": {"type": "float"}}},
    )
    item = make_item([doc], [{"f": {"x": [2.0], "xs": [[1.5, 3.0]]}}])
    assert score_calls(item, [call("f", x=2, xs=[1.5, 3.0])]).correct
    assert score_calls(item, [call("f", x=2.0, xs=[1.5, 3.0])]).correct
    assert_fails(score_calls(item, [call("f", x=2.0, xs=[1.5, 3])]), "wrong_arguments", "xs:")
    assert_fails(score_calls(item, [call("f", x=True, xs=[1.5, 3.0])]), "wrong_arguments", "x:")


def test_value_whose_type_matches_the_ground_truth_passes_bfcl_variable_rule() -> None:
    # BFCL accepts a value typed like the ground truth's own values (simple_python_307)
    doc = function_doc("f", {"venue": {"type": "string"}, "data": {"type": "any"}})
    item = make_item([doc], [{"f": {"venue": ["", True], "data": ["my_data"]}}])
    assert score_calls(item, [call("f", venue=True, data="my_data")]).correct
    assert_fails(score_calls(item, [call("f", venue=1, data="my_data")]), "wrong_arguments")
    assert_fails(score_calls(item, [call("f", data=["my_data"])]), "wrong_arguments", "data:")


def test_lists_match_element_wise_in_order() -> None:
    doc = function_doc("f", {"teams": {"type": "array", "items": {"type": "string"}}}, ["teams"])
    item = make_item([doc], [{"f": {"teams": [["Lakers", "Clippers"], ["LA Clippers", "x"]]}}])
    assert score_calls(item, [call("f", teams=["lakers", "CLIPPERS"])]).correct
    assert score_calls(item, [call("f", teams=["LA-Clippers", "X"])]).correct
    assert_fails(score_calls(item, [call("f", teams=["Clippers", "Lakers"])]), "wrong_arguments")
    assert_fails(score_calls(item, [call("f", teams=["Lakers"])]), "wrong_arguments")
    assert_fails(score_calls(item, [call("f", teams="Lakers")]), "wrong_arguments", "array")


def test_nested_lists() -> None:
    table = {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}}
    doc = function_doc("f", {"table": table}, ["table"])
    item = make_item([doc], [{"f": {"table": [[[10, 20], [30, 40]]]}}])
    assert score_calls(item, [call("f", table=[[10, 20], [30, 40]])]).correct
    assert_fails(score_calls(item, [call("f", table=[[10, 20], [40, 30]])]), "wrong_arguments")
    assert_fails(score_calls(item, [call("f", table=[[10, 20], [30, True]])]), "wrong_arguments")


BUDGET_DOC = function_doc(
    "homes",
    {
        "budget": {
            "type": "dict",
            "properties": {
                "min": {"type": "float"},
                "max": {"type": "float"},
                "currency": {"type": "string"},
            },
        }
    },
    ["budget"],
)
BUDGET_ITEM = make_item(
    [BUDGET_DOC],
    [{"homes": {"budget": [{"min": [300000], "max": [400000], "currency": ["", "USD"]}]}}],
)


def test_dicts_match_key_by_key() -> None:
    assert score_calls(BUDGET_ITEM, [call("homes", budget={"min": 300000, "max": 4e5})]).correct
    assert score_calls(
        BUDGET_ITEM, [call("homes", budget={"min": 300000.0, "max": 400000, "currency": "usd"})]
    ).correct


@pytest.mark.parametrize(
    ("budget", "fragment"),
    [
        ({"min": 300000}, "'max'"),
        ({"min": 300000, "max": 400000, "tax": 1}, "'tax'"),
        ({"min": 300000, "max": 1}, "'max'"),
        ({"min": True, "max": 400000}, "'min'"),
        ({"min": 300000, "max": 400000, "currency": "EUR"}, "'currency'"),
        ("300000-400000", "expected type dict"),
    ],
)
def test_dict_mismatches(budget: Any, fragment: str) -> None:
    score = score_calls(BUDGET_ITEM, [call("homes", budget=budget)])
    assert_fails(score, "wrong_arguments", fragment)


def test_dict_without_properties_and_list_values() -> None:
    doc = function_doc("poker", {"cards": {"type": "dict"}}, ["cards"])
    item = make_item(
        [doc], [{"poker": {"cards": [{"Alex": [["A of spades", "K of spades"]], "Sam": [["2"]]}]}}]
    )
    cards = {"Alex": ["a of spades", "K of Spades"], "Sam": ["2"]}
    assert score_calls(item, [call("poker", cards=cards)]).correct
    swapped = {"Alex": ["K of spades", "A of spades"], "Sam": ["2"]}
    assert_fails(score_calls(item, [call("poker", cards=swapped)]), "wrong_arguments")


def test_list_of_dicts() -> None:
    condition = {
        "type": "dict",
        "properties": {"field": {"type": "string"}, "op": {"type": "string"}},
    }
    doc = function_doc(
        "db.query", {"conditions": {"type": "array", "items": condition}}, ["conditions"]
    )
    item = make_item(
        [doc],
        [
            {
                "db.query": {
                    "conditions": [
                        [{"field": ["age"], "op": [">"]}, {"field": ["job"], "op": ["=", "=="]}]
                    ]
                }
            }
        ],
    )
    good = [{"field": "Age", "op": ">"}, {"field": "job", "op": "=="}]
    assert score_calls(item, [call("db_query", conditions=good)]).correct
    reordered = [good[1], good[0]]
    assert_fails(score_calls(item, [call("db_query", conditions=reordered)]), "wrong_arguments")
    assert_fails(score_calls(item, [call("db_query", conditions=["age>"])]), "wrong_arguments")


PARALLEL_DOCS = [
    function_doc("weather.get", {"city": {"type": "string"}}, ["city"]),
    function_doc("time.get", {"city": {"type": "string"}}, ["city"]),
]


def parallel_item(ground_truth: Sequence[dict[str, Any]]) -> BfclItem:
    return make_item(PARALLEL_DOCS, ground_truth, category="parallel_multiple")


def test_parallel_calls_match_in_any_order() -> None:
    item = parallel_item(
        [
            {"weather.get": {"city": ["Paris"]}},
            {"weather.get": {"city": ["Rome"]}},
            {"time.get": {"city": ["Oslo"]}},
        ]
    )
    calls = [
        call("time_get", city="Oslo"),
        call("weather_get", city="rome"),
        call("weather_get", city="Paris"),
    ]
    assert score_calls(item, calls).correct
    assert score_calls(item, list(reversed(calls))).correct


def test_parallel_matching_is_one_to_one() -> None:
    item = parallel_item(
        [{"weather.get": {"city": ["Paris"]}}, {"weather.get": {"city": ["Rome"]}}]
    )
    twice = [call("weather_get", city="Paris"), call("weather_get", city="Paris")]
    assert_fails(score_calls(item, twice), "wrong_arguments", "weather_get: city")


def test_parallel_matching_finds_a_pairing_a_greedy_pass_would_miss() -> None:
    item = parallel_item(
        [
            {"weather.get": {"city": ["Paris", "Rome"]}},
            {"weather.get": {"city": ["Paris"]}},
        ]
    )
    calls = [call("weather_get", city="Paris"), call("weather_get", city="Rome")]
    assert score_calls(item, calls).correct


def test_parallel_buckets() -> None:
    item = parallel_item([{"weather.get": {"city": ["Paris"]}}, {"time.get": {"city": ["Rome"]}}])
    wrong_names = [call("weather_get", city="Paris"), call("weather_get", city="Rome")]
    assert_fails(score_calls(item, wrong_names), "wrong_function", "expected ['time_get'")
    wrong_args = [call("weather_get", city="Paris"), call("time_get", city="Oslo")]
    assert_fails(score_calls(item, wrong_args), "wrong_arguments", "time_get: city: got 'Oslo'")
    assert_fails(score_calls(item, wrong_args[:1]), "wrong_count", "1 calls, expected 2")
    assert_fails(score_calls(item, []), "no_call", "weather_get, time_get")


def test_detail_is_short() -> None:
    doc = function_doc("f", {"s": {"type": "string"}}, ["s"])
    item = make_item([doc], [{"f": {"s": ["a" * 1000]}}])
    score = score_calls(item, [call("f", s="b" * 1000)])
    assert score.bucket == "wrong_arguments"
    assert len(score.detail) <= 240
    assert score.detail.endswith("...")


# -- the real development suite -------------------------------------------------------------


def first_acceptable(value: Any) -> Any:
    """A ground-truth value as a model would send it: first choice at every level."""
    if isinstance(value, dict):
        return {
            key: first_acceptable(options[0])
            for key, options in value.items()
            if not (isinstance(options, list) and options and options[0] == "")
        }
    if isinstance(value, list):
        return [first_acceptable(element) for element in value]
    return value


def ground_truth_calls(item: BfclItem) -> list[ToolCall]:
    """The first acceptable value for each parameter; a parameter whose first value is ""
    is left out unless the doc requires it (then its first non-empty value is taken)."""
    calls = []
    for expected in item.ground_truth:
        ((name, parameters),) = expected.items()
        doc = next(f for f in item.functions if f["name"] == name)
        required = doc["parameters"].get("required", [])
        arguments = {}
        for param, options in parameters.items():
            if param in required:
                options = [option for option in options if option != ""]
            if options[0] != "":
                arguments[param] = first_acceptable(options[0])
        calls.append(ToolCall(name=tool_name(name), arguments=arguments))
    return calls


@pytest.fixture(scope="module")
def dev_items() -> list[BfclItem]:
    if not DEV_SUITE.is_dir():
        pytest.skip(f"{DEV_SUITE} is not on this machine")
    return load_suite(DEV_SUITE)


def test_dev_suite_ground_truth_scores_correct_against_itself(dev_items: list[BfclItem]) -> None:
    assert len(dev_items) == 600
    assert {item.category for item in dev_items} == {"multiple", "simple_python"}
    failures = []
    for item in dev_items:
        score = score_calls(item, ground_truth_calls(item))
        if not score.correct:
            failures.append((item.id, score))
    assert failures == []


def test_dev_suite_tool_schemas_are_valid(dev_items: list[BfclItem]) -> None:
    for item in dev_items:
        for tool in item.tools:
            jsonschema.Draft202012Validator.check_schema(tool.parameters)
            assert tool.parameters["type"] == "object"
            assert "." not in tool.name
            converter = llama_cpp.llama_grammar.SchemaConverter(
                prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False
            )
            converter.visit(tool.parameters, "")
            converter.format_grammar()


def test_dev_suite_limit_is_representative(dev_items: list[BfclItem]) -> None:
    small = load_suite(DEV_SUITE, categories=["simple_python"], limit=4)
    assert [item.id for item in small] == [f"simple_python_{i}" for i in (0, 100, 200, 300)]


def test_dev_suite_irrelevance_pairs_are_unrelated(dev_items: list[BfclItem]) -> None:
    generated = irrelevance_items(dev_items)
    assert len(generated) >= 0.9 * len(dev_items)
    by_id = {item.id: item for item in dev_items}
    for new in generated:
        original = by_id[new.id.removeprefix("irrelevance_dev_")]
        own = {f["name"] for f in original.functions}
        assert not own & {f["name"] for f in new.functions}
    quadratic = {f"irrelevance_dev_simple_python_{i}" for i in (3, 4, 5)}
    for new in generated:
        if new.id in quadratic:
            assert all("quadratic" not in f["name"] for f in new.functions)
