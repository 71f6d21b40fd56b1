"""Agent specs: loading YAML with line-accurate errors, and building agents from them."""

from __future__ import annotations

import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from shoal.agent import Agent
from shoal.exceptions import SpecError, ToolDefinitionError, UserError, exit_code_for
from shoal.messages import Message, ToolCall, ToolMessage
from shoal.models import FunctionModel, ModelRequestParameters, TestModel
from shoal.settings import ModelSettings
from shoal.spec import AgentSpec, ToolSpec, load_agent_spec
from shoal.threads import InMemoryThreadStore
from shoal.tools import Tool
from shoal.tools.tool import DEFAULT_TIMEOUT

FULL_SPEC = """\
name: support
model: smollm2-135m
instructions: |
  You help customers with their orders.
tools:
  - support_tools:lookup_order
  - ref: support_tools:create_ticket
    timeout: 10
    name: open_ticket
    description: Open a ticket.
settings:
  temperature: 0
  max_tokens: 256
tool_choice: open_ticket
max_steps: 6
retries: 3
"""


def write_spec(directory: Path, text: str, name: str = "agent.yaml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def spec_error(directory: Path, text: str) -> SpecError:
    path = write_spec(directory, text)
    with pytest.raises(SpecError) as info:
        load_agent_spec(path)
    return info.value


# -- loading: valid files -------------------------------------------------------------------


def test_full_spec_loads_every_field(tmp_path: Path) -> None:
    path = write_spec(tmp_path, FULL_SPEC)

    spec = load_agent_spec(path)

    assert spec.name == "support"
    assert spec.model == "smollm2-135m"
    assert spec.instructions == "You help customers with their orders.\n"
    assert spec.tools == (
        ToolSpec(ref="support_tools:lookup_order"),
        ToolSpec(
            ref="support_tools:create_ticket",
            timeout=10,
            name="open_ticket",
            description="Open a ticket.",
        ),
    )
    assert spec.settings == ModelSettings(temperature=0, max_tokens=256)
    assert spec.tool_choice == "open_ticket"
    assert (spec.max_steps, spec.retries) == (6, 3)
    assert spec.source == path


def test_minimal_spec_gets_the_defaults(tmp_path: Path) -> None:
    spec = load_agent_spec(write_spec(tmp_path, "name: tiny-agent_1\n"))

    assert spec.model == "smollm2-135m"
    assert spec.instructions == ""
    assert spec.tools == ()
    assert spec.settings == ModelSettings()
    assert spec.tool_choice == "auto"
    assert (spec.max_steps, spec.retries) == (8, 2)


def test_empty_sections_mean_not_given(tmp_path: Path) -> None:
    spec = load_agent_spec(write_spec(tmp_path, "name: a\ntools:\nsettings:\ninstructions:\n"))

    assert (spec.tools, spec.settings, spec.instructions) == ((), ModelSettings(), "")


def test_tool_spec_properties() -> None:
    entry = ToolSpec(ref="pkg.sub.tools:search")

    assert (entry.module, entry.attribute, entry.tool_name) == ("pkg.sub.tools", "search", "search")
    assert not entry.has_options
    renamed = ToolSpec(ref="m:f", name="find")
    assert renamed.tool_name == "find"
    assert renamed.has_options


def test_spec_is_frozen(tmp_path: Path) -> None:
    spec = load_agent_spec(write_spec(tmp_path, "name: a\n"))

    with pytest.raises(ValidationError):
        spec.name = "b"  # type: ignore[misc]


def test_utf8_with_bom_and_non_ascii_text_load(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_bytes(b"\xef\xbb\xbfname: a\ninstructions: R\xc3\xa9ponds en fran\xc3\xa7ais.\n")

    assert load_agent_spec(path).instructions == "Réponds en français."


def test_tool_choice_may_name_a_declared_tool(tmp_path: Path) -> None:
    text = "name: a\ntools:\n  - m:lookup\n  - ref: m:other\n    name: find\ntool_choice: find\n"
    assert load_agent_spec(write_spec(tmp_path, text)).tool_choice == "find"
    for choice in ("auto", "none", "required", "lookup"):
        text = f"name: a\ntools:\n  - m:lookup\ntool_choice: {choice}\n"
        assert load_agent_spec(write_spec(tmp_path, text)).tool_choice == choice


# -- loading: errors with lines -------------------------------------------------------------

ERROR_CASES = [
    pytest.param(
        "name: a\ntools:\n  - m:f\n  - ref: m:g\n    timeout: 0\n",
        5,
        "tools[1].timeout: Input should be greater than 0",
        id="timeout-not-positive",
    ),
    pytest.param(
        "name: a\ntools:\n  - ref: m:g\n    timeout: soon\n",
        4,
        "tools[0].timeout: Input should be a valid number",
        id="timeout-not-a-number",
    ),
    pytest.param(
        "name: a\ntuols:\n  - m:f\n",
        2,
        "unknown key 'tuols'; did you mean 'tools'?",
        id="unknown-key-suggests",
    ),
    pytest.param(
        "name: a\nzzz: 1\n",
        2,
        "unknown key 'zzz'; expected one of: name, model, models, instructions, tools, "
        "settings, tool_choice, routes, max_steps, retries",
        id="unknown-key-lists-known",
    ),
    pytest.param(
        "name: a\ntools:\n  - ref: m:f\n    nmae: x\n",
        4,
        "unknown key 'nmae' in tools[0]; did you mean 'name'?",
        id="unknown-key-in-tool",
    ),
    pytest.param(
        "name: a\nsettings:\n  max_tokens: 5\n  temprature: 0.2\n",
        4,
        "unknown key 'temprature' in settings; did you mean 'temperature'?",
        id="unknown-key-in-settings",
    ),
    pytest.param(
        "name: a\nsource: elsewhere.yaml\n",
        2,
        "unknown key 'source'",
        id="source-is-not-a-key",
    ),
    pytest.param("model: x\n", 1, "missing required key 'name'", id="name-missing"),
    pytest.param(
        "name: a\ntools:\n  - timeout: 3\n",
        3,
        "missing required key 'ref' in tools[0]",
        id="ref-missing",
    ),
    pytest.param(
        "# my agent\nname: 1234\n",
        2,
        "name: Input should be a valid string (put the value in quotes)",
        id="name-not-a-string",
    ),
    pytest.param(
        "name: my agent\n",
        1,
        "name: 'my agent' is not a valid name: use letters, digits, '_' and '-' only",
        id="name-bad-characters",
    ),
    pytest.param("name: a\nmodel: ''\n", 2, "model: String should have at least 1", id="model"),
    pytest.param(
        "name: a\ninstructions:\n  - one\n",
        2,
        "instructions: Input should be a valid string",
        id="i",
    ),
    pytest.param(
        "name: a\nmax_steps: 51\n",
        2,
        "max_steps: Input should be less than or equal to 50",
        id="max-steps-too-many",
    ),
    pytest.param(
        "name: a\nmax_steps: 0\n",
        2,
        "max_steps: Input should be greater than or equal to 1",
        id="max-steps-zero",
    ),
    pytest.param(
        "name: a\nmax_steps: '6'\n", 2, "max_steps: Input should be a valid integer", id="str-int"
    ),
    pytest.param(
        "name: a\nretries: yes\n", 2, "retries: Input should be a valid integer", id="bool-int"
    ),
    pytest.param(
        "name: a\nretries: 11\n",
        2,
        "retries: Input should be less than or equal to 10",
        id="retries-too-many",
    ),
    pytest.param(
        "name: a\nsettings:\n  temperature: 3\n",
        3,
        "settings.temperature: Input should be less than or equal to 2",
        id="temperature-range",
    ),
    pytest.param(
        "name: a\nsettings:\n  stop: [END, 7]\n",
        3,
        "settings.stop[1]: Input should be a valid string",
        id="stop-item",
    ),
    pytest.param(
        "name: a\nsettings: hot\n", 2, "settings: Input should be a valid dictionary", id="settings"
    ),
    pytest.param("name: a\ntools: m:f\n", 2, "tools: Input should be a list", id="tools-not-list"),
    pytest.param(
        "name: a\ntools:\n  - m:f\n  - 42\n",
        4,
        "tools[1]: a tool entry must be a 'module:function' string or a mapping with a 'ref' key",
        id="tool-entry-number",
    ),
    pytest.param(
        "name: a\ntools:\n  - support_tools.lookup_order\n",
        3,
        "tools[0].ref: tool reference 'support_tools.lookup_order' must look like "
        "'module:function'",
        id="ref-dot-instead-of-colon",
    ),
    pytest.param(
        "name: a\ntools:\n  - ref: 'support_tools:'\n",
        3,
        "tools[0].ref: tool reference 'support_tools:' must look like",
        id="ref-no-function",
    ),
    pytest.param(
        "name: a\ntools:\n  - my-tools:f\n",
        3,
        "tools[0].ref: tool reference 'my-tools:f' must look like",
        id="ref-bad-module",
    ),
    pytest.param(
        "name: a\ntools:\n  - m:obj.method\n",
        3,
        "tools[0].ref: tool reference 'm:obj.method' must look like",
        id="ref-dotted-function",
    ),
    pytest.param(
        "name: a\ntools:\n  - ref: m:f\n    name: 9lives\n",
        4,
        "tools[0].name: tool name '9lives' is not valid",
        id="tool-name",
    ),
    pytest.param(
        "name: a\ntools:\n  - m:lookup_order\n\ntool_choice: lookup\n",
        5,
        "tool_choice: 'lookup' is neither auto, none, required nor a declared tool; "
        "did you mean 'lookup_order'?",
        id="tool-choice-unknown",
    ),
    pytest.param(
        "name: a\ntool_choice: anything\n",
        2,
        "tool_choice: 'anything' is neither auto, none, required nor a declared tool; "
        "use one of: auto, none, required",
        id="tool-choice-no-tools",
    ),
    pytest.param(
        "name: a\ntools:\n  - ref: m:lookup\n    name: find\ntool_choice: lookup\n",
        5,
        "use one of: auto, none, required, find",  # 'lookup' was renamed to 'find'
        id="tool-choice-renamed-away",
    ),
    pytest.param(
        "name: a\ntools:\n  - m:f\n  - other.module:f\n",
        4,
        "tools[1]: tool name 'f' is already used by tools[0]; give one of them another 'name:'",
        id="duplicate-tool-name",
    ),
    pytest.param(
        "name: a\nmodel: x\nname: b\n",
        3,
        "duplicate key 'name' (first set on line 1)",
        id="duplicate-key",
    ),
    pytest.param("name: a\n1: x\n", 2, "key 1 must be a string", id="non-string-key"),
    pytest.param(
        "name: 2024-06-01\n",
        1,
        "name: Input should be a valid string (put the value in quotes)",
        id="date-not-a-string",
    ),
    pytest.param(
        "name: a\ntool_choice: no\n",
        2,
        "tool_choice: Input should be a valid string (put the value in quotes)",
        id="yaml-bool",
    ),
]


@pytest.mark.parametrize(("text", "line", "message"), ERROR_CASES)
def test_errors_point_at_the_line_and_name_the_field(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    error = spec_error(tmp_path, text)

    path = str(tmp_path / "agent.yaml")
    assert error.location == f"{path}:{line}"
    assert message in str(error)
    assert str(error).startswith(f"{path}:{line}: ")


def test_several_errors_are_reported_first_by_line(tmp_path: Path) -> None:
    error = spec_error(tmp_path, "retries: -1\nname: a\nmax_steps: 99\nzzz: 1\n")

    assert error.location is not None
    assert error.location.endswith(":1")
    lines = str(error).splitlines()
    assert lines[0].endswith("retries: Input should be greater than or equal to 0")
    assert lines[1:] == [
        "  also line 3: max_steps: Input should be less than or equal to 50",
        "  also line 4: unknown key 'zzz'; expected one of: name, model, models, instructions, "
        "tools, settings, tool_choice, routes, max_steps, retries",
    ]


def test_tool_choice_is_not_checked_when_the_tools_are_invalid(tmp_path: Path) -> None:
    error = spec_error(tmp_path, "name: a\ntools:\n  - bad\ntool_choice: bad\n")

    assert "tools[0].ref" in str(error)
    assert "is neither" not in str(error)


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("name: a\ntools: [m:f\nmodel: x\n", 3, "invalid YAML: expected ',' or ']'"),
        ("name: a\n  model: b: c\n", 2, "invalid YAML: mapping values are not allowed here"),
        ("name: a\ninstructions: 'unclosed\n", 3, "invalid YAML: found unexpected end of stream"),
        ("name: a\n---\nname: b\n", 2, "invalid YAML: but found another document"),
        ("name: a\ntools:\n\t- m:f\n", 3, "invalid YAML: found character '\\t'"),
    ],
)
def test_yaml_syntax_errors_give_the_line(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    error = spec_error(tmp_path, text)

    assert error.location == f"{tmp_path / 'agent.yaml'}:{line}"
    assert message in str(error)


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("- name: a\n", "found a list"),
        ("support\n", "found a single str value"),
        ("", "found an empty file"),
        ("# just a comment\n", "found an empty file"),
    ],
)
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str, found: str) -> None:
    error = spec_error(tmp_path, text)

    assert f"the top level must be a mapping with at least a 'name:' key, {found}" in str(error)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"

    with pytest.raises(SpecError) as info:
        load_agent_spec(path)

    assert info.value.location == str(path)
    assert str(info.value) == f"{path}: no such file"


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="is a directory"):
        load_agent_spec(tmp_path)


def test_not_utf8_gives_the_line_of_the_bad_byte(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_bytes("name: a\n\n# café\n".encode("latin-1"))

    with pytest.raises(SpecError, match=r"not UTF-8 text \(byte 0xe9") as info:
        load_agent_spec(path)

    assert info.value.location == f"{path}:3"


def test_location_uses_the_path_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_spec(tmp_path, "name: a\nmax_steps: 0\n", name="mine.yaml")
    monkeypatch.chdir(tmp_path)

    with pytest.raises(SpecError) as info:
        load_agent_spec("mine.yaml")

    assert info.value.location == "mine.yaml:2"
    (tmp_path / "mine.yaml").write_text("name: a\n")
    assert load_agent_spec("mine.yaml").source == tmp_path / "mine.yaml"


def test_spec_error_is_a_user_error_with_its_own_exit_code(tmp_path: Path) -> None:
    error = spec_error(tmp_path, "name: a\nzzz: 1\n")

    assert isinstance(error, UserError)
    assert exit_code_for(error) == 3


def test_agent_spec_validates_when_built_in_python(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as info:
        AgentSpec(name="a", source=tmp_path / "x.yaml", tools=("m:f",), tool_choice="g")

    assert [error["loc"] for error in info.value.errors()] == [("tool_choice",)]
    spec = AgentSpec(name="a", source=tmp_path / "x.yaml", tools=("m:f",), tool_choice="f")
    assert spec.tools == (ToolSpec(ref="m:f"),)
    assert spec.location(("tools", 0)) == str(tmp_path / "x.yaml")  # no line numbers known


def test_user_text_with_braces_is_quoted_verbatim(tmp_path: Path) -> None:
    error = spec_error(tmp_path, "name: a\ntool_choice: '{message} {at}'\n")

    assert "tool_choice: '{message} {at}' is neither" in str(error)


# -- building agents ------------------------------------------------------------------------

TOOLS_MODULE = '''\
from typing import Literal

from shoal.tools import tool


def lookup_order(order_id: str) -> dict[str, str]:
    """Find an order.

    Args:
        order_id: The order number.
    """
    return {"order_id": order_id, "status": "shipped"}


def create_ticket(issue: str, priority: Literal["low", "high"] = "low") -> str:
    """Open a ticket.

    Args:
        issue: What is wrong.
        priority: How urgent.
    """
    return "T-1"


@tool(name="find_customer", timeout=5)
def lookup_customer(customer_id: str) -> str:
    """Find a customer."""
    return customer_id


def _impl(text: str) -> str:
    """Echo the text."""
    return text


alias = _impl
NOT_CALLABLE = 42


class Thing:
    def __init__(self, x: int) -> None:
        self.x = x


def star(*args: int) -> int:
    """Sum."""
    return sum(args)
'''


@pytest.fixture
def tools_module(tmp_path: Path) -> Iterator[str]:
    """A tools module next to the spec files, under a name no other test uses."""
    name = f"spec_tools_{uuid.uuid4().hex[:12]}"
    (tmp_path / f"{name}.py").write_text(TOOLS_MODULE, encoding="utf-8")
    yield name
    sys.modules.pop(name, None)


@pytest.fixture
def build(tmp_path: Path, tools_module: str) -> Callable[[str], Agent[str]]:
    """Write a spec (``{m}`` stands for the tools module) and build it with a TestModel."""

    def build_from(text: str) -> Agent[str]:
        path = write_spec(tmp_path, text.replace("{m}", tools_module))
        return load_agent_spec(path).build_agent(model=TestModel())

    return build_from


def test_build_agent_passes_every_field(tmp_path: Path, tools_module: str) -> None:
    path = write_spec(tmp_path, FULL_SPEC.replace("support_tools", tools_module))
    model, store = TestModel(), InMemoryThreadStore()

    agent = load_agent_spec(path).build_agent(model=model, store=store)

    assert isinstance(agent, Agent)
    assert agent.name == "support"
    assert agent.model is model
    assert agent.store is store
    assert agent.instructions == "You help customers with their orders.\n"
    assert agent.settings == ModelSettings(temperature=0, max_tokens=256)
    assert (agent.tool_choice, agent.max_steps, agent.retries) == ("open_ticket", 6, 3)
    assert list(agent.tools) == ["lookup_order", "open_ticket"]
    lookup, ticket = agent.tools["lookup_order"], agent.tools["open_ticket"]
    assert lookup.timeout == DEFAULT_TIMEOUT
    assert lookup.description == "Find an order."
    assert ticket.timeout == 10
    assert ticket.description == "Open a ticket."
    assert ticket.definition.parameters["properties"]["priority"]["enum"] == ["low", "high"]


def test_build_agent_keeps_a_model_reference_unresolved(tmp_path: Path) -> None:
    # real model loads are switched off in this tier: resolving here would raise
    agent = load_agent_spec(write_spec(tmp_path, "name: a\n")).build_agent()

    assert "model='smollm2-135m'" in repr(agent)
    named = load_agent_spec(write_spec(tmp_path, "name: a\n")).build_agent(model="test")
    assert "model='test'" in repr(named)


def test_decorated_tool_is_used_as_it_is(tmp_path: Path, tools_module: str) -> None:
    path = write_spec(tmp_path, f"name: a\ntools:\n  - {tools_module}:lookup_customer\n")

    agent = load_agent_spec(path).build_agent(model=TestModel())

    module_tool = sys.modules[tools_module].lookup_customer
    assert isinstance(module_tool, Tool)
    assert agent.tools == {"find_customer": module_tool}


def test_decorated_tool_with_options_keeps_what_is_not_overridden(
    build: Callable[[str], Agent[str]],
) -> None:
    agent = build("name: a\ntools:\n  - ref: '{m}:lookup_customer'\n    description: Who is it.\n")

    rebuilt = agent.tools["find_customer"]
    assert (rebuilt.description, rebuilt.timeout) == ("Who is it.", 5)
    renamed = build("name: a\ntools:\n  - ref: '{m}:lookup_customer'\n    name: who\n").tools
    assert list(renamed) == ["who"]
    assert renamed["who"].timeout == 5


def test_aliased_function_gets_the_declared_name(build: Callable[[str], Agent[str]]) -> None:
    agent = build("name: a\ntools:\n  - '{m}:alias'\ntool_choice: alias\n")

    assert list(agent.tools) == ["alias"]
    assert agent.tools["alias"].description == "Echo the text."


def test_tools_are_found_next_to_the_spec_from_any_directory(
    tmp_path: Path, tools_module: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_spec(tmp_path, f"name: a\ntools: ['{tools_module}:lookup_order']\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    before = list(sys.path)

    agent = load_agent_spec(path).build_agent(model=TestModel())

    assert list(agent.tools) == ["lookup_order"]
    assert sys.path == before
    assert sys.modules[tools_module].__file__ == str(tmp_path / f"{tools_module}.py")


async def test_built_agent_runs_the_imported_tool(tmp_path: Path, tools_module: str) -> None:
    text = f"name: a\ntools:\n  - {tools_module}:lookup_order\n"
    spec = load_agent_spec(write_spec(tmp_path, text))

    def script(messages: list[Message], params: ModelRequestParameters) -> str | ToolCall:
        results = [m for m in messages if isinstance(m, ToolMessage)]
        if not results:
            return ToolCall(name="lookup_order", arguments={"order_id": "1042"})
        return f"Order says: {results[0].content}"

    agent = spec.build_agent(model=FunctionModel(script))
    result = await agent.run("Where is 1042?")

    assert [record.result for record in result.tool_calls] == [
        {"order_id": "1042", "status": "shipped"}
    ]
    assert result.output == 'Order says: {"order_id":"1042","status":"shipped"}'


# -- building agents: errors ----------------------------------------------------------------


def build_error(tmp_path: Path, text: str) -> SpecError:
    spec = load_agent_spec(write_spec(tmp_path, text))
    before = list(sys.path)
    with pytest.raises(SpecError) as info:
        spec.build_agent(model=TestModel())
    assert sys.path == before  # restored on failure too
    return info.value


def test_missing_module(tmp_path: Path) -> None:
    name = f"no_such_module_{uuid.uuid4().hex[:8]}"
    error = build_error(tmp_path, f"name: a\ntools:\n  - m_ok_{name}:f\n  - {name}:g\n")

    # the first entry fails first: modules are imported in order
    assert error.location == f"{tmp_path / 'agent.yaml'}:3"
    assert f"no module named 'm_ok_{name}' next to the spec file or on sys.path" in str(error)
    assert isinstance(error.__cause__, ModuleNotFoundError)


def test_module_with_a_missing_dependency(tmp_path: Path) -> None:
    name = f"needs_dep_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text("import not_installed_dependency_xyz\n")

    error = build_error(tmp_path, f"name: a\ntools:\n  - {name}:f\n")

    assert f"importing '{name}' failed: No module named 'not_installed_dependency_xyz'" in str(
        error
    )
    assert error.location == f"{tmp_path / 'agent.yaml'}:3"
    sys.modules.pop(name, None)


def test_module_that_raises_while_importing(tmp_path: Path) -> None:
    name = f"raises_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text("raise RuntimeError('no database configured')\n")

    error = build_error(tmp_path, f"name: a\n\ntools:\n  - ref: {name}:f\n    timeout: 1\n")

    assert error.location == f"{tmp_path / 'agent.yaml'}:4"
    assert f"importing '{name}' raised RuntimeError: no database configured" in str(error)
    assert isinstance(error.__cause__, RuntimeError)


def test_module_with_a_syntax_error(tmp_path: Path) -> None:
    name = f"broken_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text("def f(:\n")

    error = build_error(tmp_path, f"name: a\ntools:\n  - {name}:f\n")

    assert "raised SyntaxError" in str(error)
    assert isinstance(error.__cause__, SyntaxError)


@pytest.mark.parametrize(
    ("entry", "message", "cause"),
    [
        ("lookup_ordr", "has no 'lookup_ordr'; did you mean {m}:lookup_order?", AttributeError),
        ("nothing_like_it", "has no 'nothing_like_it'", AttributeError),
        ("NOT_CALLABLE", "{m}:NOT_CALLABLE is a int, not a function", None),
        (
            "Thing",
            "{m}:Thing cannot be a tool: cannot make a tool of the class",
            ToolDefinitionError,
        ),
        ("star", "{m}:star cannot be a tool: ", ToolDefinitionError),
    ],
)
def test_unusable_attribute(
    tmp_path: Path,
    tools_module: str,
    entry: str,
    message: str,
    cause: type[BaseException] | None,
) -> None:
    error = build_error(
        tmp_path, f"name: a\ntools:\n  - {tools_module}:lookup_order\n  - {tools_module}:{entry}\n"
    )

    assert error.location == f"{tmp_path / 'agent.yaml'}:4"
    assert message.format(m=tools_module) in str(error)
    if cause is None:
        assert error.__cause__ is None
    else:
        assert isinstance(error.__cause__, cause)


def test_two_tools_with_the_same_real_name(tmp_path: Path, tools_module: str) -> None:
    # declared names differ (lookup_customer, find_customer), but the decorated tool's own
    # name, known only once imported, is find_customer too
    text = (
        f"name: a\ntools:\n  - {tools_module}:lookup_customer\n"
        f"  - ref: {tools_module}:alias\n    name: find_customer\n"
    )

    error = build_error(tmp_path, text)

    assert error.location == f"{tmp_path / 'agent.yaml'}:4"
    assert f"{tools_module}:alias is a tool named 'find_customer', the same name as tools[0]" in (
        str(error)
    )


def test_tool_choice_checked_against_the_real_names(tmp_path: Path, tools_module: str) -> None:
    # lookup_customer is declared under its function name but its @tool says find_customer
    text = f"name: a\ntools:\n  - {tools_module}:lookup_customer\ntool_choice: lookup_customer\n"

    error = build_error(tmp_path, text)

    assert error.location == f"{tmp_path / 'agent.yaml'}:4"
    assert "tool_choice: 'lookup_customer' is neither" in str(error)
    assert "did you mean 'find_customer'?" in str(error)
