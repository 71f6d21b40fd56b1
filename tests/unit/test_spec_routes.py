"""``routes:`` in agent specs and system files: loading, line-numbered errors, running.

Scripted models only: a route's call is made without asking the model to choose (``first``),
or after the model exhausted its retries (``fallback``).
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal.exceptions import ModelBehaviorError, SpecError
from shoal.messages import Message, ToolMessage
from shoal.models import FunctionModel, ModelRequestParameters
from shoal.spec import RouteSpec, load_agent_spec, load_system
from tests.unit import _systems

#: besides the shared tools: a second tool and a route's arguments function
EXTRA_TOOLS = '''\
import re


def greet(name: str = "there") -> str:
    """Say hello.

    Args:
        name: Who to greet.
    """
    return f"hello {name}"


def order_arguments(match: re.Match[str]) -> dict:
    """The order number of the match, padded to five digits."""
    return {"order_id": match["number"].zfill(5)}
'''

ROUTED_SPEC = """\
name: support
tools:
  - {m}:lookup_order
  - {m}:greet
routes:
  - pattern: "order #?(?P<order_id>[0-9]+)"
    tool: lookup_order
"""

#: what the scripted model says when it is asked to answer from a tool's result
ANSWER = "Order 1042 has shipped."
BROKEN = "<tool_call>{broken"


@pytest.fixture
def tools_module(tmp_path: Path) -> Iterator[str]:
    """The shared tools and :data:`EXTRA_TOOLS`, next to the spec files."""
    with _systems.tools_module(tmp_path, "route_tools", EXTRA_TOOLS) as name:
        yield name


def write(directory: Path, text: str, module: str, name: str = "agent.yaml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text).replace("{m}", module), encoding="utf-8")
    return path


def answering(text: str) -> FunctionModel:
    return FunctionModel(lambda messages, params: text)


def scripted(*outputs: str) -> FunctionModel:
    """A model that says ``outputs`` in order, the last one from then on."""
    remaining = list(outputs)

    def respond(messages: list[Message], params: ModelRequestParameters) -> str:
        return remaining.pop(0) if len(remaining) > 1 else remaining[0]

    return FunctionModel(respond)


# -- loading ---------------------------------------------------------------------------------


def test_routes_load_with_their_defaults(tmp_path: Path, tools_module: str) -> None:
    text = (
        ROUTED_SPEC
        + """\
  - pattern: "number (?P<number>[0-9]+)"
    tool: lookup_order
    when: fallback
    arguments: {m}:order_arguments
"""
    )
    spec = load_agent_spec(write(tmp_path, text, tools_module))

    assert spec.routes == (
        RouteSpec(pattern="order #?(?P<order_id>[0-9]+)", tool="lookup_order"),
        RouteSpec(
            pattern="number (?P<number>[0-9]+)",
            tool="lookup_order",
            when="fallback",
            arguments=f"{tools_module}:order_arguments",
        ),
    )
    assert spec.routes[0].when == "first"
    assert spec.routes[0].arguments is None


def test_an_empty_routes_section_means_none(tmp_path: Path) -> None:
    spec = load_agent_spec(write(tmp_path, "name: a\nroutes:\n", "unused"))

    assert spec.routes == ()
    assert spec.build_agent(model=answering("hi")).routes == ()


@pytest.mark.parametrize(
    ("route", "line", "message"),
    [
        pytest.param(
            '  - pattern: "order ("\n    tool: lookup_order\n',
            6,
            "routes[0].pattern: 'order (' is not a valid regular expression: missing ), "
            "unterminated subpattern",
            id="bad-regex",
        ),
        pytest.param(
            "  - pattern: order\n    tool: lookup_ordr\n",
            7,
            "routes[0].tool: a route calls 'lookup_ordr', which is not one of the agent's "
            "tools; did you mean 'lookup_order'?",
            id="undeclared-tool",
        ),
        pytest.param(
            "  - pattern: order\n    tool: lookup_order\n    when: later\n",
            8,
            "routes[0].when: 'later' is not when a route is tried: use first (before the model "
            "is asked) or fallback (after it exhausted its retries)",
            id="unknown-when",
        ),
        pytest.param(
            "  - pattern: order\n    tool: lookup_order\n    arguments: order_arguments\n",
            8,
            "routes[0].arguments: 'order_arguments' must look like 'module:function'",
            id="arguments-not-a-reference",
        ),
        pytest.param(
            "  - pattern: order\n    tool: lookup_order\n    wen: first\n",
            8,
            "unknown key 'wen' in routes[0]; did you mean 'when'?",
            id="unknown-key",
        ),
        pytest.param(
            "  - pattern: order\n",
            6,
            "missing required key 'tool' in routes[0]",
            id="missing-tool",
        ),
    ],
)
def test_a_bad_route_is_a_spec_error_at_its_line(
    tmp_path: Path, route: str, line: int, message: str
) -> None:
    text = "name: a\ntools:\n  - tools:lookup_order\n  - tools:greet\nroutes:\n" + route
    path = write(tmp_path, text, "unused")

    with pytest.raises(SpecError) as info:
        load_agent_spec(path)

    assert info.value.location == f"{path}:{line}"
    assert message in str(info.value)


def test_a_route_needs_the_agent_to_declare_tools(tmp_path: Path) -> None:
    path = write(tmp_path, "name: a\nroutes:\n  - {pattern: x, tool: lookup_order}\n", "unused")

    with pytest.raises(SpecError, match=r"not one of the agent's tools \(it declares no tools\)"):
        load_agent_spec(path)


# -- building: what only the imported tools can tell ---------------------------------------


@pytest.mark.parametrize(
    ("route", "line", "message"),
    [
        pytest.param(
            '  - tool: lookup_order\n    pattern: "order (?P<order>[0-9]+)"\n',
            7,
            "routes[0].pattern: the group 'order' is not a parameter of 'lookup_order'; "
            "did you mean 'order_id'?",
            id="group-not-a-parameter",
        ),
        pytest.param(
            '  - tool: greet\n    pattern: "hi (?P<who>.+)"\n',
            7,
            "routes[0].pattern: the group 'who' is not a parameter of 'greet'; "
            "its parameters: name",
            id="group-not-a-parameter-no-close-match",
        ),
        pytest.param(
            "  - tool: lookup_order\n    pattern: order\n",
            7,
            "routes[0].pattern: 'lookup_order' requires 'order_id', which the pattern has no "
            "named group for",
            id="required-parameter-without-group",
        ),
        pytest.param(
            "  - tool: lookup_order\n    pattern: order\n    arguments: {m}:order_args\n",
            8,
            "has no 'order_args'; did you mean",
            id="arguments-function-missing",
        ),
    ],
)
def test_building_checks_a_route_against_its_tool(
    tmp_path: Path, tools_module: str, route: str, line: int, message: str
) -> None:
    text = "name: a\ntools:\n  - {m}:lookup_order\n  - {m}:greet\nroutes:\n" + route
    path = write(tmp_path, text, tools_module)
    spec = load_agent_spec(path)  # loading imports nothing, so it cannot know yet

    with pytest.raises(SpecError) as info:
        spec.build_agent(model=answering("x"))

    assert info.value.location == f"{path}:{line}"
    assert message in str(info.value)


def test_a_route_to_a_tool_without_required_parameters_needs_no_groups(
    tmp_path: Path, tools_module: str
) -> None:
    text = "name: a\ntools: [{m}:greet]\nroutes:\n  - {pattern: '^hello$', tool: greet}\n"
    agent = load_agent_spec(write(tmp_path, text, tools_module)).build_agent(
        model=answering("Hello!")
    )

    result = agent.run_sync("hello")

    assert [(r.call.name, r.call.arguments, r.result) for r in result.tool_calls] == [
        ("greet", {}, "hello there")
    ]


# -- running ---------------------------------------------------------------------------------


def test_a_first_route_makes_the_call_before_any_model_request(
    tmp_path: Path, tools_module: str
) -> None:
    model = answering(ANSWER)
    agent = load_agent_spec(write(tmp_path, ROUTED_SPEC, tools_module)).build_agent(model=model)

    result = agent.run_sync("Where is order #1042?")

    assert [(r.call.name, r.call.arguments) for r in result.tool_calls] == [
        ("lookup_order", {"order_id": "1042"})
    ]
    assert result.tool_calls[0].result == {"order_id": "1042", "status": "shipped"}
    assert result.output == ANSWER
    # one request, to answer from the result: the call was made before the model was asked
    assert len(model.requests) == 1
    assert any(isinstance(m, ToolMessage) for m in model.requests[0].messages)
    assert result.notes[0].startswith("route ")


def test_a_message_no_route_matches_goes_to_the_model(tmp_path: Path, tools_module: str) -> None:
    model = answering("Hello, how can I help?")
    agent = load_agent_spec(write(tmp_path, ROUTED_SPEC, tools_module)).build_agent(model=model)

    result = agent.run_sync("Hi there")

    assert result.tool_calls == []
    assert result.output == "Hello, how can I help?"
    assert not any(isinstance(m, ToolMessage) for m in model.requests[0].messages)


def test_a_routes_arguments_function_makes_the_arguments(tmp_path: Path, tools_module: str) -> None:
    text = """\
    name: support
    tools: [{m}:lookup_order]
    routes:
      - pattern: "number (?P<number>[0-9]+)"
        tool: lookup_order
        arguments: {m}:order_arguments
    """
    agent = load_agent_spec(write(tmp_path, text, tools_module)).build_agent(
        model=answering(ANSWER)
    )

    result = agent.run_sync("my number 42 please")

    assert [r.call.arguments for r in result.tool_calls] == [{"order_id": "00042"}]


FALLBACK_SPEC = """\
name: support
tools: [{m}:lookup_order]
retries: 1
routes:
  - pattern: "order #?(?P<order_id>[0-9]+)"
    tool: lookup_order
    when: fallback
"""


def test_a_fallback_route_saves_a_run_whose_model_keeps_failing(
    tmp_path: Path, tools_module: str
) -> None:
    # retries: 1 -> two unusable outputs exhaust the model; then it answers from the result
    model = scripted(BROKEN, BROKEN, ANSWER)
    agent = load_agent_spec(write(tmp_path, FALLBACK_SPEC, tools_module)).build_agent(model=model)

    result = agent.run_sync("Where is order 1042?")

    assert [(r.call.name, r.call.arguments, r.outcome) for r in result.tool_calls] == [
        ("lookup_order", {"order_id": "1042"}, "ok")
    ]
    assert result.output == ANSWER
    assert len(model.requests) == 3
    assert any(note.startswith("fallback route") for note in result.notes)


def test_without_the_fallback_route_the_same_run_fails(tmp_path: Path, tools_module: str) -> None:
    text = FALLBACK_SPEC.split("routes:")[0]
    agent = load_agent_spec(write(tmp_path, text, tools_module)).build_agent(
        model=scripted(BROKEN, BROKEN, ANSWER)
    )

    with pytest.raises(ModelBehaviorError):
        agent.run_sync("Where is order 1042?")


# -- system files ----------------------------------------------------------------------------

SYSTEM = """\
name: shop
models:
  primary: test
agents:
  billing:
    delegates: [tech]
    tools: [{m}:lookup_order]
    routes:
      - pattern: "order #?(?P<order_id>[0-9]+)"
        tool: lookup_order
      - pattern: "^tech: (?P<task>.+)$"
        tool: ask_tech
  tech:
    instructions: You fix the app.
"""


def test_a_system_agents_first_route_calls_its_tool(tmp_path: Path, tools_module: str) -> None:
    model = answering(ANSWER)
    path = write(tmp_path, SYSTEM, tools_module, "system.yaml")
    system = load_system(path).build(models={"primary": model})

    result = system.run_sync("Where is order 1042?", agent="billing")

    (run,) = result.runs
    assert [(r.call.name, r.call.arguments) for r in run.tool_calls] == [
        ("lookup_order", {"order_id": "1042"})
    ]
    assert result.text == ANSWER
    assert len(model.requests) == 1
    assert any(isinstance(m, ToolMessage) for m in model.requests[0].messages)


def test_a_system_route_may_call_a_delegate(tmp_path: Path, tools_module: str) -> None:
    path = write(tmp_path, SYSTEM, tools_module, "system.yaml")
    system = load_system(path).build(models={"primary": answering("restart it")})

    result = system.run_sync("tech: the app crashes", agent="billing")

    billing = next(run for run in result.runs if run.agent_name == "billing")
    assert [(r.call.name, r.call.arguments, r.result) for r in billing.tool_calls] == [
        ("ask_tech", {"task": "the app crashes"}, "restart it")
    ]


def test_a_system_route_to_an_undeclared_tool_is_refused_at_its_line(
    tmp_path: Path, tools_module: str
) -> None:
    # without delegates: [tech], billing has no ask_tech tool
    text = SYSTEM.replace("    delegates: [tech]\n", "")
    path = write(tmp_path, text, tools_module, "system.yaml")

    with pytest.raises(SpecError) as info:
        load_system(path)

    assert info.value.location == f"{path}:11"
    assert (
        "agents.billing.routes[1].tool: a route calls 'ask_tech', which is not one of the "
        "agent's tools; its tools: lookup_order" in str(info.value)
    )


def test_a_system_routes_bad_pattern_is_refused_at_its_line(
    tmp_path: Path, tools_module: str
) -> None:
    text = """\
    name: shop
    agents:
      - name: billing
        tools: [{m}:lookup_order]
        routes:
          - {pattern: "order (", tool: lookup_order}
    """
    path = write(tmp_path, text, tools_module, "system.yaml")

    with pytest.raises(SpecError) as info:
        load_system(path)

    assert info.value.location == f"{path}:6"
    assert "agents.billing.routes[0].pattern: 'order (' is not a valid regular expression" in str(
        info.value
    )


def test_a_system_route_is_checked_against_its_tool_when_built(
    tmp_path: Path, tools_module: str
) -> None:
    text = """\
    name: shop
    agents:
      billing:
        tools: [{m}:lookup_order]
        routes:
          - tool: lookup_order
            pattern: "order (?P<order>[0-9]+)"
    """
    path = write(tmp_path, text, tools_module, "system.yaml")
    spec = load_system(path)

    with pytest.raises(SpecError) as info:
        spec.build(models={"smollm2-135m": answering("x")})

    assert info.value.location == f"{path}:7"
    assert "the group 'order' is not a parameter of 'lookup_order'" in str(info.value)
