"""Schemas, docstrings, coercion and definition errors of shoal.tools."""

import dataclasses
import datetime as dt
import enum
import functools
import typing
from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel, Field
from typing_extensions import TypedDict

from shoal.exceptions import ToolArgumentsError, ToolDefinitionError, UserError
from shoal.tools import Tool, tool
from shoal.tools.schema import clean_json_schema, parse_docstring

# -- types used by the tools below (module level, so string annotations resolve) ------------


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Priority(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Item(BaseModel):
    """A line of an order."""

    sku: str = Field(description="stock keeping unit")
    qty: int = 1


class Address(TypedDict):
    street: str
    zip_code: int


@dataclasses.dataclass
class Point:
    x: float
    y: float


class TreeNode(BaseModel):
    value: int
    children: list["TreeNode"] = []


class Opaque:
    """A class pydantic cannot validate."""


def props(t: Tool) -> dict[str, Any]:
    properties: dict[str, Any] = t.definition.parameters["properties"]
    return properties


def schema_keyword_titles(node: Any, path: str = "") -> list[str]:
    """Paths of every ``title`` used as a schema keyword (not as a property name)."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "title":
                found.append(path)
            if key in ("properties", "$defs"):
                for name, sub in value.items():
                    found += schema_keyword_titles(sub, f"{path}/{key}/{name}")
            elif key not in ("default", "enum", "const"):
                found += schema_keyword_titles(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            found += schema_keyword_titles(item, f"{path}/{index}")
    return found


# -- schema shape ---------------------------------------------------------------------------


def test_scalar_types_defaults_and_required() -> None:
    @tool
    def f(text: str, count: int, ratio: float, flag: bool, label: str = "x") -> None:
        pass

    assert f.definition.parameters == {
        "type": "object",
        "properties": {
            "text": {"type": "string"},
            "count": {"type": "integer"},
            "ratio": {"type": "number"},
            "flag": {"type": "boolean"},
            "label": {"type": "string", "default": "x"},
        },
        "required": ["text", "count", "ratio", "flag"],
        "additionalProperties": False,
    }
    assert list(f.definition.parameters) == [
        "type",
        "properties",
        "required",
        "additionalProperties",
    ]


def test_no_parameters_gives_an_empty_object() -> None:
    @tool
    def ping() -> str:
        return "pong"

    assert ping.definition.parameters == {
        "type": "object",
        "properties": {},
        "required": [],
        "additionalProperties": False,
    }
    assert ping.validate({}) == {}


def test_optional_literal_enum_schema() -> None:
    @tool
    def f(
        limit: int | None = None,
        mode: Literal["fast", "slow"] = "fast",
        color: Color = Color.RED,
        priority: Priority = Priority.LOW,
    ) -> None:
        pass

    p = props(f)
    assert p["limit"] == {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None}
    assert p["mode"] == {"enum": ["fast", "slow"], "type": "string", "default": "fast"}
    # enums are inlined, not left as $ref
    assert p["color"] == {"enum": ["red", "green"], "type": "string", "default": "red"}
    assert p["priority"]["enum"] == [1, 2]
    assert "$defs" not in f.definition.parameters


def test_container_types_schema() -> None:
    @tool
    def f(
        tags: list[str],
        scores: dict[str, int],
        pair: tuple[int, str],
        many: tuple[float, ...],
    ) -> None:
        pass

    p = props(f)
    assert p["tags"] == {"type": "array", "items": {"type": "string"}}
    assert p["scores"] == {"type": "object", "additionalProperties": {"type": "integer"}}
    assert p["pair"]["prefixItems"] == [{"type": "integer"}, {"type": "string"}]
    assert (p["pair"]["minItems"], p["pair"]["maxItems"]) == (2, 2)
    assert p["many"] == {"type": "array", "items": {"type": "number"}}


def test_structured_types_are_inlined_without_titles() -> None:
    @tool
    def f(item: Item, address: Address, point: Point, items: list[Item]) -> None:
        pass

    p = props(f)
    assert p["item"] == {
        "description": "A line of an order.",
        "type": "object",
        "properties": {
            "sku": {"description": "stock keeping unit", "type": "string"},
            "qty": {"default": 1, "type": "integer"},
        },
        "required": ["sku"],
    }
    assert p["address"]["properties"] == {
        "street": {"type": "string"},
        "zip_code": {"type": "integer"},
    }
    assert p["address"]["required"] == ["street", "zip_code"]
    assert p["point"]["properties"] == {"x": {"type": "number"}, "y": {"type": "number"}}
    assert p["items"]["items"]["properties"]["sku"]["type"] == "string"
    assert "$defs" not in f.definition.parameters
    assert schema_keyword_titles(f.definition.parameters) == []


def test_dates_have_formats() -> None:
    @tool
    def f(when: dt.datetime, day: dt.date) -> None:
        pass

    assert props(f) == {
        "when": {"type": "string", "format": "date-time"},
        "day": {"type": "string", "format": "date"},
    }


def test_recursive_model_stays_in_defs() -> None:
    @tool
    def f(tree: TreeNode) -> None:
        pass

    params = f.definition.parameters
    assert props(f)["tree"] == {"$ref": "#/$defs/TreeNode"}
    node = params["$defs"]["TreeNode"]
    assert node["properties"]["children"]["items"] == {"$ref": "#/$defs/TreeNode"}
    assert schema_keyword_titles(params) == []
    value = f.validate({"tree": {"value": "1", "children": [{"value": 2}]}})["tree"]
    assert value == TreeNode(value=1, children=[TreeNode(value=2)])


def test_property_named_title_is_kept() -> None:
    @tool
    def create_note(title: str, body: str = "") -> None:
        pass

    assert props(create_note)["title"] == {"type": "string"}
    assert create_note.definition.parameters["required"] == ["title"]


def test_awkward_parameter_names_work() -> None:
    @tool
    def f(json: str, copy: int, model_config: bool, _private: int = 0) -> None:
        pass

    assert list(props(f)) == ["json", "copy", "model_config", "_private"]
    assert f.validate({"json": "a", "copy": "2", "model_config": "true"}) == {
        "json": "a",
        "copy": 2,
        "model_config": True,
        "_private": 0,
    }


def test_unserialisable_default_is_left_out_of_the_schema() -> None:
    sentinel = object()

    @tool
    def f(x: Any = sentinel) -> Any:
        return x

    assert "default" not in props(f)["x"]
    assert f.validate({})["x"] is sentinel


def test_clean_json_schema_only_touches_keywords() -> None:
    raw = {
        "title": "Args",
        "type": "object",
        "properties": {
            "title": {"title": "Title", "type": "string", "default": "t"},
            "meta": {"type": "object", "default": {"title": "kept"}},
            "kind": {"$ref": "#/$defs/Kind", "description": "which kind"},
        },
        "$defs": {"Kind": {"title": "Kind", "enum": ["a", "b"], "description": "a kind"}},
    }
    assert clean_json_schema(raw) == {
        "type": "object",
        "properties": {
            "title": {"type": "string", "default": "t"},
            "meta": {"type": "object", "default": {"title": "kept"}},
            "kind": {"enum": ["a", "b"], "description": "which kind"},
        },
    }


# -- descriptions ---------------------------------------------------------------------------


def google_style(order_id: int, verbose: bool = False) -> str:
    """Look up an order.

    Returns the status of the order
    and its items.

    Args:
        order_id: The order number,
            as printed on the receipt.
        verbose (bool): Include the items.

    Returns:
        The status.
    """
    return "ok"


def numpy_style(order_id: int, verbose: bool = False) -> str:
    """Look up an order.

    Returns the status of the order
    and its items.

    Parameters
    ----------
    order_id : int
        The order number,
        as printed on the receipt.
    verbose : bool
        Include the items.
    """
    return "ok"


def rest_style(order_id: int, verbose: bool = False) -> str:
    """Look up an order.

    Returns the status of the order
    and its items.

    :param order_id: The order number,
        as printed on the receipt.
    :param bool verbose: Include the items.
    :returns: The status.
    """
    return "ok"


@pytest.mark.parametrize("func", [google_style, numpy_style, rest_style])
def test_docstring_styles(func: Any) -> None:
    t = Tool(func)
    assert t.description == "Look up an order.\n\nReturns the status of the order\nand its items."
    assert t.definition.description == t.description
    assert props(t)["order_id"]["description"] == "The order number, as printed on the receipt."
    assert props(t)["verbose"]["description"] == "Include the items."


def test_no_docstring_means_empty_description() -> None:
    @tool
    def f(x: int) -> None:
        pass

    assert f.description == ""
    assert props(f)["x"] == {"type": "integer"}


def test_explicit_descriptions_win() -> None:
    @tool(description="Custom description.")
    def f(
        a: Annotated[int, Field(description="from Field")],
        b: Annotated[str, Field(description="from Field too")] = "z",
        c: int = 0,
    ) -> None:
        """Docstring summary.

        Args:
            a: from docstring
            b: from docstring
            c: from docstring
        """

    assert f.description == "Custom description."
    assert props(f)["a"] == {"type": "integer", "description": "from Field"}
    assert props(f)["b"] == {"type": "string", "description": "from Field too", "default": "z"}
    assert props(f)["c"]["description"] == "from docstring"


def test_annotated_constraints_reach_schema_and_validation() -> None:
    @tool
    def f(qty: Annotated[int, Field(ge=1, le=10)]) -> None:
        pass

    assert props(f)["qty"] == {"type": "integer", "minimum": 1, "maximum": 10}
    assert f.validate({"qty": "3"}) == {"qty": 3}
    with pytest.raises(ToolArgumentsError, match="greater than or equal to 1"):
        f.validate({"qty": 0})


def test_parse_docstring_tolerates_plain_text() -> None:
    assert parse_docstring(None) == ("", {})
    assert parse_docstring("Just text: with a colon.") == ("Just text: with a colon.", {})


def test_a_summary_wrapped_over_lines_stays_one_paragraph() -> None:
    @tool
    def lookup(order_id: str) -> str:
        """Look up an order by its number and
        return its status.

        Only orders of the last year.

        Args:
            order_id: the order number
        """
        return order_id

    assert lookup.description == (
        "Look up an order by its number and return its status.\n\nOnly orders of the last year."
    )
    assert parse_docstring("Summary.\n\nLong part.") == ("Summary.\n\nLong part.", {})


# -- validation and coercion ----------------------------------------------------------------


def test_lax_coercion_of_every_supported_type() -> None:
    @tool
    def f(
        n: int,
        x: float,
        flag: bool,
        text: str,
        maybe: int | None,
        mode: Literal["fast", "slow"],
        color: Color,
        priority: Priority,
        tags: list[int],
        scores: dict[str, float],
        pair: tuple[int, str],
        item: Item,
        address: Address,
        point: Point,
        when: dt.datetime,
        day: dt.date,
    ) -> None:
        pass

    got = f.validate(
        {
            "n": "1042",
            "x": "2.5",
            "flag": "true",
            "text": "hi",
            "maybe": None,
            "mode": "slow",
            "color": "green",
            "priority": 2,
            "tags": ["1", 2],
            "scores": {"a": "1.5"},
            "pair": ["7", "seven"],
            "item": {"sku": "A1", "qty": "3"},
            "address": {"street": "Main", "zip_code": "12345"},
            "point": {"x": 1, "y": "2"},
            "when": "2024-05-06T07:08:09",
            "day": "2024-05-06",
        }
    )
    assert got == {
        "n": 1042,
        "x": 2.5,
        "flag": True,
        "text": "hi",
        "maybe": None,
        "mode": "slow",
        "color": Color.GREEN,
        "priority": Priority.HIGH,
        "tags": [1, 2],
        "scores": {"a": 1.5},
        "pair": (7, "seven"),
        "item": Item(sku="A1", qty=3),
        "address": {"street": "Main", "zip_code": 12345},
        "point": Point(1.0, 2.0),
        "when": dt.datetime(2024, 5, 6, 7, 8, 9),
        "day": dt.date(2024, 5, 6),
    }
    assert type(got["color"]) is Color
    assert type(got["item"]) is Item
    assert type(got["point"]) is Point


@pytest.mark.parametrize(
    ("arguments", "fragment"),
    [
        ({"mode": "medium"}, "argument 'mode': input should be 'fast' or 'slow'"),
        ({"color": "blue"}, "argument 'color': input should be 'red' or 'green'"),
        ({"day": "yesterday"}, "argument 'day': input should be a valid date"),
        ({"pair": [1]}, "argument 'pair[1]': field required"),
    ],
)
def test_invalid_values_are_reported(arguments: dict[str, Any], fragment: str) -> None:
    @tool
    def f(
        mode: Literal["fast", "slow"] = "fast",
        color: Color = Color.RED,
        day: dt.date | None = None,
        pair: tuple[int, str] = (0, ""),
    ) -> None:
        pass

    with pytest.raises(ToolArgumentsError) as info:
        f.validate(arguments)
    assert str(info.value).startswith("f: ")
    assert fragment in str(info.value)


# -- definition errors ----------------------------------------------------------------------


def _definition_error(func: Any, **kwargs: Any) -> str:
    with pytest.raises(ToolDefinitionError) as info:
        Tool(func, **kwargs)
    assert isinstance(info.value, UserError)
    return str(info.value)


def test_missing_type_hint() -> None:
    def lookup(order_id, verbose: bool = False) -> str:  # type: ignore[no-untyped-def]
        return ""

    message = _definition_error(lookup)
    assert "lookup" in message
    assert "'order_id' has no type hint" in message


def test_var_args_and_kwargs_rejected() -> None:
    def with_args(*items: int) -> None:
        pass

    def with_kwargs(**options: str) -> None:
        pass

    assert "*items is not supported" in _definition_error(with_args)
    assert "**options is not supported" in _definition_error(with_kwargs)
    assert "with_kwargs" in _definition_error(with_kwargs)


def test_positional_only_rejected() -> None:
    def f(a: int, /, b: int) -> None:
        pass

    assert "parameter 'a' is positional-only" in _definition_error(f)


@pytest.mark.parametrize("name", ["", "9lives", "has space", "a" * 65, "bad/name", "é"])
def test_invalid_tool_names(name: str) -> None:
    def f() -> None:
        pass

    assert f"invalid tool name {name!r}" in _definition_error(f, name=name)


def test_valid_unusual_tool_names() -> None:
    def f() -> None:
        pass

    for name in ["_x", "a" * 64, "orders.lookup-v2"]:
        assert Tool(f, name=name).definition.name == name


def test_lambda_needs_a_name() -> None:
    message = _definition_error(lambda: None)
    assert "'<lambda>'" in message
    assert "name=" in message
    assert Tool(lambda: None, name="noop").name == "noop"


def test_not_callable_and_classes_rejected() -> None:
    assert "not callable" in _definition_error(42)
    assert "class" in _definition_error(Item)


def test_unbound_method_rejected_bound_method_accepted() -> None:
    class Shop:
        def lookup(self, order_id: int) -> str:
            return f"order {order_id}"

        @classmethod
        def make(cls, name: str) -> str:
            return name

    message = _definition_error(Shop.lookup)
    assert "'self' looks like an unbound method" in message
    assert "Shop.lookup" in message
    assert "'cls' looks like an unbound method" in _definition_error(Shop.__dict__["make"].__func__)

    bound = Tool(Shop().lookup)
    assert bound.name == "lookup"
    assert list(props(bound)) == ["order_id"]
    assert Tool(Shop.make).validate({"name": "x"}) == {"name": "x"}


def test_unsupported_type_names_the_parameter() -> None:
    def f(ok: int, thing: Opaque) -> None:
        pass

    message = _definition_error(f)
    assert "parameter 'thing' has an unsupported type" in message
    assert "'f'" in message


def test_typing_typeddict_is_reported_clearly() -> None:
    class Legacy(typing.TypedDict):
        a: int

    def f(value: Legacy) -> None:
        pass

    message = _definition_error(f)
    assert "parameter 'value'" in message
    assert "typing_extensions.TypedDict" in message


def test_unresolvable_annotation() -> None:
    def f(x: "NoSuchType") -> None:  # type: ignore[name-defined]  # noqa: F821
        pass

    message = _definition_error(f)
    assert "cannot resolve the type hints" in message
    assert "NoSuchType" in message


def test_string_annotations_resolve_from_module_globals() -> None:
    def f(item: "Item", color: "Color") -> None:
        pass

    assert f.__annotations__["item"] == "Item"
    assert Tool(f).validate({"item": {"sku": "s"}, "color": "red"}) == {
        "item": Item(sku="s"),
        "color": Color.RED,
    }


def test_bad_timeout_rejected() -> None:
    def f() -> None:
        pass

    assert "timeout" in _definition_error(f, timeout=0)
    assert "timeout" in _definition_error(f, timeout=-1.0)


def test_partial_and_callable_objects() -> None:
    def search(query: str, limit: int = 10) -> str:
        """Search the catalogue.

        Args:
            query: what to look for
        """
        return f"{query}:{limit}"

    t = Tool(functools.partial(search, limit=3))
    assert t.name == "search"
    assert t.description == "Search the catalogue."
    assert props(t)["query"] == {"type": "string", "description": "what to look for"}
    assert t.validate({"query": "x"}) == {"query": "x", "limit": 3}

    class Counter:
        """Count words."""

        def __call__(self, text: str) -> int:
            return len(text.split())

    c = Tool(Counter())
    assert (c.name, c.description) == ("Counter", "Count words.")
    assert list(props(c)) == ["text"]


def test_functools_wraps_decorator_is_seen_through() -> None:
    calls: list[str] = []

    def logged(func: Any) -> Any:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls.append(func.__name__)
            return func(*args, **kwargs)

        return wrapper

    @tool
    @logged
    def greet(name: str, excited: bool = False) -> str:
        """Greet someone."""
        return f"hi {name}" + ("!" if excited else "")

    assert greet.description == "Greet someone."
    assert list(props(greet)) == ["name", "excited"]
    assert greet.validate({"name": "Ada"}) == {"name": "Ada", "excited": False}
    assert greet("Ada", excited=True) == "hi Ada!"
    assert calls == ["greet"]
