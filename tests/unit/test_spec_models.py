"""The ``models:`` section of agent specs and deployment files: checks with lines, building."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import ValidationError

from shoal.exceptions import ModelError, ModelNotInstalledError, SpecError, UnknownModelError
from shoal.messages import Message, SystemMessage
from shoal.models import FunctionModel, Model, ModelRequestParameters, TestModel
from shoal.models.balanced import BalancedModel
from shoal.models.openai_compat import OpenAICompatModel
from shoal.models.routing import EscalatingModel, FallbackModel, RouterModel, RouteRule
from shoal.spec import (
    AgentSpec,
    BalanceEntry,
    DeploymentSpec,
    EscalateEntry,
    FallbackEntry,
    ProviderEntry,
    ReferenceEntry,
    RouterEntry,
    RouterSpec,
    RuleSpec,
    build_models,
    load_agent_spec,
    load_deployment,
)

# plain references are catalog aliases and remote references: the load-time check knows them;
# the tests resolve them to scripted models
SPEC = """\
name: support
models:
  small: smollm2-135m
  large: ollama:qwen2.5:0.5b
  pool:
    balance: [large, vllm:http://gpu-box:8000/v1#Qwen/Qwen2.5-0.5B-Instruct]
  safe:
    fallback: [large, small]
    timeout: 30
  tiered:
    escalate: [small, qwen2.5-0.5b]
    attempts: 3
  main:
    router:
      rules:
        - {pattern: "refund|invoice", route: complex, reason: money}
      classifier: small
      labels: {simple: "a lookup or a short factual question"}
      routes: {simple: tiered, complex: safe, bulk: pool}
      default: simple
model: main
"""


def write(directory: Path, text: str, name: str = "agent.yaml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load_error(directory: Path, text: str, name: str = "agent.yaml") -> SpecError:
    path = write(directory, text, name)
    loader = load_deployment if name == "deploy.yaml" else load_agent_spec
    with pytest.raises(SpecError) as info:
        loader(path)
    return info.value


class Scripted:
    """A ``resolve`` that gives each reference a FunctionModel named after it (one per call)."""

    def __init__(self, answers: dict[str, Callable[..., str]] | None = None) -> None:
        self.answers = answers or {}
        self.calls: list[str] = []
        self.made: dict[str, list[FunctionModel]] = {}

    def __call__(self, ref: str) -> Model:
        self.calls.append(ref)
        answer = self.answers.get(ref, lambda messages, params: f"answer from {ref}")
        model = FunctionModel(answer, name=ref)
        self.made.setdefault(ref, []).append(model)
        return model

    def one(self, ref: str) -> FunctionModel:
        (model,) = self.made[ref]
        return model


# -- loading ----------------------------------------------------------------------------------


def test_every_kind_of_entry_loads(tmp_path: Path) -> None:
    spec = load_agent_spec(write(tmp_path, SPEC))

    assert spec.model == "main"
    assert list(spec.models) == ["small", "large", "pool", "safe", "tiered", "main"]
    assert spec.models["small"] == ReferenceEntry(ref="smollm2-135m")
    assert spec.models["pool"] == BalanceEntry(
        balance=("large", "vllm:http://gpu-box:8000/v1#Qwen/Qwen2.5-0.5B-Instruct")
    )
    assert spec.models["safe"] == FallbackEntry(fallback=("large", "small"), timeout=30)
    assert spec.models["tiered"] == EscalateEntry(escalate=("small", "qwen2.5-0.5b"), attempts=3)
    assert spec.models["main"] == RouterEntry(
        router=RouterSpec(
            rules=(RuleSpec(pattern="refund|invoice", route="complex", reason="money"),),
            classifier="small",
            labels={"simple": "a lookup or a short factual question"},
            routes={"simple": "tiered", "complex": "safe", "bulk": "pool"},
            default="simple",
        )
    )


def test_reference_and_provider_entries(tmp_path: Path) -> None:
    text = """\
    name: a
    models:
      large:
        ref: ollama:qwen2.5:0.5b
        timeout: 60
      cloud:
        provider: azure-ai
        model: Llama-3.3-70B-Instruct
        url: https://example.services.ai.azure.com/models
      near: {provider: vllm, model: Qwen/Qwen2.5-0.5B-Instruct, timeout: 5}
      smollm2-135m: smollm2-135m
    """
    models = load_agent_spec(write(tmp_path, text)).models

    assert models["large"] == ReferenceEntry(ref="ollama:qwen2.5:0.5b", timeout=60)
    assert models["cloud"] == ProviderEntry(
        provider="azure-ai",
        model="Llama-3.3-70B-Instruct",
        url="https://example.services.ai.azure.com/models",
    )
    assert models["near"] == ProviderEntry(
        provider="vllm", model="Qwen/Qwen2.5-0.5B-Instruct", timeout=5
    )
    # an entry may keep the name of the reference it stands for: not a cycle
    assert models["smollm2-135m"] == ReferenceEntry(ref="smollm2-135m")


def test_without_models_the_model_is_any_reference(tmp_path: Path) -> None:
    spec = load_agent_spec(write(tmp_path, "name: a\nmodel: not-checked-here\nmodels:\n"))

    assert (spec.model, spec.models) == ("not-checked-here", {})


def test_model_may_be_a_reference_next_to_models(tmp_path: Path) -> None:
    text = "name: a\nmodels:\n  small: smollm2-135m\nmodel: qwen2.5-0.5b\n"

    assert load_agent_spec(write(tmp_path, text)).model == "qwen2.5-0.5b"


def test_spec_with_models_dumps_every_field(tmp_path: Path) -> None:
    dumped = load_agent_spec(write(tmp_path, SPEC)).model_dump()

    assert dumped["models"]["safe"] == {"fallback": ("large", "small"), "timeout": 30.0}
    assert dumped["models"]["main"]["router"]["default"] == "simple"


MODEL_ERRORS = [
    pytest.param(
        "name: a\nmodels:\n  small: smolm2-135m\n",
        3,
        "models.small: 'smolm2-135m' is neither an entry of models: nor a model Shoal knows "
        "(a catalog alias, a path to a .gguf file, 'test' or provider:model); "
        "did you mean 'smollm2-135m'?",
        id="unknown-reference",
    ),
    pytest.param(
        "name: a\nmodels:\n  large: test\n  safe:\n    fallback: [large, lagre]\n",
        5,
        "models.safe.fallback[1]: 'lagre' is neither an entry of models: nor a model Shoal "
        "knows (a catalog alias, a path to a .gguf file, 'test' or provider:model); "
        "did you mean 'large'?",
        id="unknown-name-in-fallback",
    ),
    pytest.param(
        "name: a\nmodels:\n  m:\n    router:\n      classifier: tset\n"
        "      routes: {s: test}\n      default: s\n",
        5,
        "models.m.router.classifier: 'tset' is neither an entry",
        id="unknown-classifier",
    ),
    pytest.param(
        "name: a\nmodels:\n  m:\n    router:\n      routes:\n        s: test\n"
        "        t: nowhere\n      default: s\n",
        7,
        "models.m.router.routes.t: 'nowhere' is neither an entry",
        id="unknown-route-target",
    ),
    pytest.param(
        "name: a\nmodels:\n  m: ollma:qwen2.5:0.5b\n",
        3,
        "models.m: 'ollma:qwen2.5:0.5b' is neither an entry of models: nor a model Shoal knows "
        "(a catalog alias, a path to a .gguf file, 'test' or provider:model); "
        "did you mean 'ollama:qwen2.5:0.5b'?",
        id="misspelt-provider-prefix",
    ),
    pytest.param(
        "name: a\nmodels:\n  m: 'vllm:http://gpu-box:8000/v1'\n",
        3,
        "models.m: 'vllm:http://gpu-box:8000/v1' gives a URL but no model",
        id="remote-reference-without-model",
    ),
    pytest.param(
        "name: a\nmodels:\n  a:\n    fallback: [b]\n  b:\n    escalate: [test, a]\n",
        6,
        "models.b.escalate[1]: 'a' makes a cycle: a -> b -> a",
        id="cycle",
    ),
    pytest.param(
        "name: a\nmodels:\n  a:\n    fallback: [test, a]\n",
        4,
        "models.a.fallback[1]: 'a' refers to itself",
        id="self-reference",
    ),
    pytest.param(
        "name: a\nmodels:\n  a: b\n  b:\n    ref: c\n  c:\n    balance: [a]\n",
        7,
        "models.c.balance[0]: 'a' makes a cycle: a -> b -> c -> a",
        id="cycle-through-aliases",
    ),
    pytest.param(
        "name: a\nmodels:\n  c:\n    provider: azure-ai\n    model: m\n    api_key: abc\n",
        6,
        "models.c.api_key: API keys do not belong in the file: set AZURE_AI_CHAT_KEY or "
        "AZURE_INFERENCE_CREDENTIAL in the environment",
        id="api-key-provider",
    ),
    pytest.param(
        "name: a\nmodels:\n  c:\n    ref: openai:gpt-4o-mini\n    API-Key: abc\n",
        5,
        "models.c.API-Key: API keys do not belong in the file: set OPENAI_API_KEY in the "
        "environment",
        id="api-key-remote-ref",
    ),
    pytest.param(
        "name: a\nmodels:\n  c:\n    fallback: [test]\n    token: abc\n",
        5,
        "models.c.token: API keys do not belong in the file: set the provider's API key "
        "environment variable",
        id="token-elsewhere",
    ),
    pytest.param(
        "name: a\nmodels:\n  c:\n    provider: olama\n    model: m\n",
        4,
        "models.c.provider: unknown provider 'olama'; did you mean 'ollama'?",
        id="provider-misspelt",
    ),
    pytest.param(
        "name: a\nmodels:\n  c:\n    provider: nothing\n    model: m\n",
        4,
        "models.c.provider: unknown provider 'nothing'; known: shoal, ollama, vllm, ",
        id="provider-unknown",
    ),
    pytest.param(
        "name: a\nmodels:\n  c:\n    model: m\n",
        4,
        "missing required key 'provider' in models.c",
        id="provider-missing",
    ),
    pytest.param(
        "name: a\nmodels:\n  c:\n    provider: vllm\n    model: m\n    url: gpu-box:8000\n",
        6,
        "models.c.url: 'gpu-box:8000' is not an http(s) URL",
        id="url",
    ),
    pytest.param(
        "name: a\nmodels:\n  c:\n    provider: ollama\n    model: m\n    timout: 3\n",
        6,
        "unknown key 'timout' in models.c; did you mean 'timeout'?",
        id="unknown-key-of-the-kind",
    ),
    pytest.param(
        "name: a\nmodels:\n  c:\n    provider: ollama\n    model: m\n    attempts: 3\n",
        6,
        "unknown key 'attempts' in models.c; expected one of: provider, model, url, timeout",
        id="key-of-another-kind",
    ),
    pytest.param(
        "name: a\nmodels:\n  c:\n    fallbak: [test]\n",
        4,
        "unknown key 'fallbak' in models.c; did you mean 'fallback'?",
        id="kind-key-misspelt",
    ),
    pytest.param(
        "name: a\nmodels:\n  c:\n    zzz: [test]\n",
        3,
        "models.c: an entry of models: must be a model reference or a mapping with one of: "
        "ref, provider, balance, fallback, escalate, router",
        id="no-kind",
    ),
    pytest.param(
        "name: a\nmodels:\n  c:\n    ref: test\n    balance: [test]\n",
        5,
        "models.c.balance: 'ref' and 'balance' cannot be used together",
        id="two-kinds",
    ),
    pytest.param("name: a\nmodels:\n  c: 42\n", 3, "models.c: an entry of models:", id="number"),
    pytest.param(
        "name: a\nmodels:\n  c: ''\n", 3, "models.c: a model reference cannot be empty", id="empty"
    ),
    pytest.param(
        "name: a\nmodels: [test]\n", 2, "models: Input should be a valid dictionary", id="list"
    ),
    pytest.param(
        "name: a\nmodels:\n  'ollama:x': test\n",
        3,
        "models.ollama:x: 'ollama:x' is not a valid model name",
        id="name-with-colon",
    ),
    pytest.param(
        "name: a\nmodels:\n  c:\n    ref: test\n    timeout: 5\n",
        5,
        "models.c.timeout: only a remote reference (provider:model) takes a timeout",
        id="timeout-embedded",
    ),
    pytest.param(
        "name: a\nmodels:\n  c:\n    ref: small\n    timeout: 5\n  small: test\n",
        5,
        "models.c.timeout: 'small' is an entry of models:, not a remote reference",
        id="timeout-entry",
    ),
    pytest.param(
        "name: a\nmodels:\n  c:\n    fallback: [test]\n    timeout: 0\n",
        5,
        "models.c.timeout: Input should be greater than 0",
        id="timeout-zero",
    ),
    pytest.param(
        "name: a\nmodels:\n  c:\n    escalate: []\n",
        4,
        "models.c.escalate: list at least one model",
        id="no-tiers",
    ),
    pytest.param(
        "name: a\nmodels:\n  c:\n    escalate: [test]\n    attempts: 11\n",
        5,
        "models.c.attempts: Input should be less than or equal to 10",
        id="attempts",
    ),
    pytest.param(
        "name: a\nmodels:\n  m:\n    router:\n      routes: {simple: test}\n"
        "      default: simpel\n",
        6,
        "models.m.router.default: 'simpel' is not a label of routes; did you mean 'simple'?",
        id="default-label",
    ),
    pytest.param(
        "name: a\nmodels:\n  m:\n    router:\n      rules:\n        - {pattern: x, route: hard}\n"
        "      routes: {simple: test}\n      default: simple\n",
        6,
        "models.m.router.rules[0].route: 'hard' has no target in routes; routes has: simple",
        id="rule-label",
    ),
    pytest.param(
        "name: a\nmodels:\n  m:\n    router:\n      classifier: test\n"
        "      labels:\n        simple: s\n        hard: h\n"
        "      routes: {simple: test}\n      default: simple\n",
        8,
        "models.m.router.labels.hard: 'hard' has no target in routes: add 'hard: <model>' to "
        "routes or remove it",
        id="label-without-target",
    ),
    pytest.param(
        "name: a\nmodels:\n  m:\n    router:\n      labels: {simple: s}\n"
        "      routes: {simple: test}\n      default: simple\n",
        5,
        "models.m.router.labels: labels are what a classifier is shown: add 'classifier:'",
        id="labels-without-classifier",
    ),
    pytest.param(
        "name: a\nmodels:\n  m:\n    router:\n      rules:\n        - {pattern: '(', route: s}\n"
        "      routes: {s: test}\n      default: s\n",
        6,
        "models.m.router.rules[0].pattern: '(' is not a valid regular expression: missing )",
        id="bad-pattern",
    ),
    pytest.param(
        "name: a\nmodels:\n  m:\n    router:\n      routes: {}\n      default: s\n",
        5,
        "models.m.router.routes: give at least one route (label: model)",
        id="no-routes",
    ),
    pytest.param(
        "name: a\nmodels:\n  m:\n    router:\n      routes: {s: test}\n      default: s\n"
        "      rules:\n        - {pattern: x, route: s, nope: 1}\n",
        8,
        "unknown key 'nope' in models.m.router.rules[0]; expected one of: pattern, route, reason",
        id="unknown-key-in-rule",
    ),
    pytest.param(
        "name: a\nmodels:\n  m:\n    router:\n      routes: {s: test}\n      defualt: s\n",
        5,
        "missing required key 'default' in models.m.router\n"
        "  also line 6: unknown key 'defualt' in models.m.router; did you mean 'default'?",
        id="router-key-misspelt",
    ),
    pytest.param(
        "name: a\nmodels:\n  main: test\nmodel: mian\n",
        4,
        "model: 'mian' is not an entry of models:; did you mean 'main'?",
        id="model-names-no-entry",
    ),
    pytest.param(
        "name: a\nmodels:\n  main: test\nmodel: nothing-like-it\n",
        4,
        "model: 'nothing-like-it' is neither an entry of models: nor a model Shoal knows",
        id="model-unknown",
    ),
    pytest.param(
        "name: a\nmodles:\n  main: test\n",
        2,
        "unknown key 'modles'; did you mean 'models'?",
        id="models-misspelt",
    ),
]


@pytest.mark.parametrize(("text", "line", "message"), MODEL_ERRORS)
def test_model_errors_point_at_the_line(tmp_path: Path, text: str, line: int, message: str) -> None:
    error = load_error(tmp_path, text)

    assert error.location == f"{tmp_path / 'agent.yaml'}:{line}"
    assert str(error).startswith(f"{tmp_path / 'agent.yaml'}:{line}: {message}")


def test_model_checks_run_in_python_too(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as info:
        AgentSpec(
            name="a",
            source=tmp_path / "x.yaml",
            models={"a": {"fallback": ["b"]}, "b": {"fallback": ["a"]}},
        )

    (error,) = info.value.errors()
    assert error["loc"] == ("models",)
    assert "'a' makes a cycle: a -> b -> a" in error["msg"]


# -- building ---------------------------------------------------------------------------------


def test_build_models_wires_every_entry(tmp_path: Path) -> None:
    resolve = Scripted()

    built = load_agent_spec(write(tmp_path, SPEC)).build_models(resolve)

    assert list(built) == ["small", "large", "pool", "safe", "tiered", "main"]
    small, large = built["small"], built["large"]
    assert (small, large) == (resolve.one("smollm2-135m"), resolve.one("ollama:qwen2.5:0.5b"))
    # every plain reference went through resolve, once per place it is written; names did not
    assert sorted(resolve.calls) == sorted(
        [
            "smollm2-135m",
            "ollama:qwen2.5:0.5b",
            "vllm:http://gpu-box:8000/v1#Qwen/Qwen2.5-0.5B-Instruct",
            "qwen2.5-0.5b",
        ]
    )

    pool = built["pool"]
    assert isinstance(pool, BalancedModel)
    assert pool.name == "pool"
    assert [e.slot.resolved for e in pool.endpoints] == [
        large,
        resolve.one("vllm:http://gpu-box:8000/v1#Qwen/Qwen2.5-0.5B-Instruct"),
    ]

    safe = built["safe"]
    assert isinstance(safe, FallbackModel)
    assert (safe.name, safe.timeout) == ("safe", 30)
    assert [slot.resolved for slot in safe.models] == [large, small]

    tiered = built["tiered"]
    assert isinstance(tiered, EscalatingModel)
    assert (tiered.name, tiered.attempts) == ("tiered", 3)
    assert [slot.resolved for slot in tiered.tiers] == [small, resolve.one("qwen2.5-0.5b")]

    main = built["main"]
    assert isinstance(main, RouterModel)
    assert main.name == "main"
    assert {label: slot.resolved for label, slot in main.routes.items()} == {
        "simple": tiered,
        "complex": safe,
        "bulk": pool,
    }
    assert main.classifier is not None
    assert main.classifier.resolved is small
    assert main.rules == (RouteRule("complex", pattern="refund|invoice", reason="money"),)
    assert main.default == "simple"
    # routes without a description are offered to the classifier under their label
    assert main.labels == {
        "simple": "a lookup or a short factual question",
        "complex": "complex",
        "bulk": "bulk",
    }


def test_default_resolve_leaves_references_to_the_wrappers(tmp_path: Path) -> None:
    text = """\
    name: a
    models:
      small: test
      safe:
        fallback: [smollm2-135m, small, /nowhere/model.gguf]
    model: safe
    """
    spec = load_agent_spec(write(tmp_path, text))

    built = spec.build_models()

    assert isinstance(built["small"], TestModel)
    safe = built["safe"]
    assert isinstance(safe, FallbackModel)
    # nothing resolved (a missing file would raise): references resolve on first use
    assert [(slot.reference, slot.resolved) for slot in safe.models] == [
        ("smollm2-135m", None),
        (built["small"], built["small"]),
        ("/nowhere/model.gguf", None),
    ]


def test_build_agent_builds_the_named_entry(tmp_path: Path) -> None:
    resolve = Scripted()
    spec = load_agent_spec(write(tmp_path, SPEC))

    agent = spec.build_agent(resolve=resolve)

    router = agent.model
    assert isinstance(router, RouterModel)
    assert router.name == "main"
    assert router.routes["simple"].resolved is not None
    assert router.routes["simple"].resolved.name == "tiered"


def test_build_agent_builds_only_what_the_entry_needs(tmp_path: Path) -> None:
    text = (
        "name: a\nmodels:\n  one: smollm2-135m\n  two:\n    fallback: [qwen2.5-0.5b, one]\n"
        "model: one\n"
    )
    resolve = Scripted()

    agent = load_agent_spec(write(tmp_path, text)).build_agent(resolve=resolve)

    assert agent.model is resolve.one("smollm2-135m")
    assert resolve.calls == ["smollm2-135m"]


def test_build_agent_resolves_the_entries_it_builds(tmp_path: Path) -> None:
    text = "name: a\nmodels:\n  local: /nowhere/model.gguf\n  alias: local\nmodel: alias\n"
    spec = load_agent_spec(write(tmp_path, text))

    with pytest.raises(SpecError) as info:
        spec.build_agent()

    assert info.value.location == f"{tmp_path / 'agent.yaml'}:3"
    assert "models.local: model file not found: /nowhere/model.gguf" in str(info.value)
    # a plain model: (no entry) is still left to the agent
    plain = load_agent_spec(write(tmp_path, "name: a\nmodel: /nowhere/model.gguf\n"))
    assert "model='/nowhere/model.gguf'" in repr(plain.build_agent())


def test_resolve_error_for_a_plain_model_points_at_it(tmp_path: Path) -> None:
    spec = load_agent_spec(write(tmp_path, "name: a\n\nmodel: qwen2.5-0.5b\n"))

    def resolve(ref: str) -> Model:
        raise UnknownModelError(f"the server has no {ref!r}")

    with pytest.raises(SpecError) as info:
        spec.build_agent(resolve=resolve)

    assert info.value.location == f"{tmp_path / 'agent.yaml'}:3"
    assert "model: the server has no 'qwen2.5-0.5b'" in str(info.value)


def test_build_agent_model_argument_still_wins(tmp_path: Path) -> None:
    model = TestModel()

    agent = load_agent_spec(write(tmp_path, SPEC)).build_agent(model=model, resolve=Scripted())

    assert agent.model is model


def test_build_agent_resolves_a_plain_model_with_the_given_resolve(tmp_path: Path) -> None:
    resolve = Scripted()

    agent = load_agent_spec(write(tmp_path, "name: a\nmodel: qwen2.5-0.5b\n")).build_agent(
        resolve=resolve
    )

    assert agent.model is resolve.one("qwen2.5-0.5b")


async def test_built_router_runs_the_routes_it_was_given(tmp_path: Path) -> None:
    classified: list[list[Message]] = []

    def classifier(messages: list[Message], params: ModelRequestParameters) -> str:
        if params.output_schema is not None:  # the router classifying
            classified.append(messages)
            return '"simple"'
        return "answer from the small model"

    def failing(messages: list[Message], params: ModelRequestParameters) -> str:
        raise ModelError("ollama is down")

    resolve = Scripted({"smollm2-135m": classifier, "ollama:qwen2.5:0.5b": failing})
    spec = load_agent_spec(write(tmp_path, SPEC))

    # a rule: refund -> complex = safe = fallback [large (down), small]
    refund = await spec.build_agent(resolve=resolve).run("I want a refund")
    assert refund.output == "answer from the small model"
    assert [(d.router, d.kind, d.model) for d in refund.decisions] == [
        ("main", "rule", "safe"),
        ("safe", "fallback", "smollm2-135m"),
    ]
    assert refund.decisions[0].reason == "money"
    assert "ollama is down" in refund.decisions[1].reason
    assert classified == []

    # the classifier, shown the labels: simple -> tiered = escalate [small, qwen2.5-0.5b]
    lookup = await spec.build_agent(resolve=resolve).run("Where is order 1042?")
    assert lookup.output == "answer from the small model"
    assert [(d.router, d.kind, d.model) for d in lookup.decisions] == [
        ("main", "classifier", "tiered")
    ]
    (system, user) = classified[0]
    assert isinstance(system, SystemMessage)
    assert "simple: a lookup or a short factual question" in system.content
    assert "bulk: bulk" in system.content
    assert user.content == "Where is order 1042?"


def test_remote_entries_build_remote_models(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    monkeypatch.setenv("AZURE_AI_CHAT_KEY", "secret-from-env")
    text = """\
    name: a
    models:
      large:
        ref: ollama:qwen2.5:0.5b
        timeout: 60
      cloud:
        provider: azure-ai
        model: Llama-3.3-70B-Instruct
        url: https://example.services.ai.azure.com/models
      near:
        {provider: vllm, model: Qwen/Qwen2.5-0.5B-Instruct, url: 'http://gpu:8000/v1', timeout: 5}
    """
    resolve = Scripted()

    built = load_agent_spec(write(tmp_path, text)).build_models(resolve)

    assert resolve.calls == []  # remote entries do not go through resolve
    large, cloud, near = built["large"], built["cloud"], built["near"]
    assert isinstance(large, OpenAICompatModel)
    assert (large.name, large.model, large.base_url, large.timeout) == (
        "ollama:qwen2.5:0.5b",
        "qwen2.5:0.5b",
        "http://127.0.0.1:11434/v1",
        60,
    )
    assert isinstance(cloud, OpenAICompatModel)
    assert (cloud.provider, cloud.model, cloud.base_url, cloud.api_key) == (
        "azure-ai",
        "Llama-3.3-70B-Instruct",
        "https://example.services.ai.azure.com/models",
        "secret-from-env",
    )
    assert isinstance(near, OpenAICompatModel)
    assert (near.base_url, near.timeout) == ("http://gpu:8000/v1", 5)


def test_default_resolve_builds_a_plain_remote_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    text = "name: a\nmodels:\n  large: ollama:qwen2.5:0.5b\nmodel: large\n"

    agent = load_agent_spec(write(tmp_path, text)).build_agent()

    assert isinstance(agent.model, OpenAICompatModel)
    assert (agent.model.name, agent.model.base_url) == (
        "ollama:qwen2.5:0.5b",
        "http://127.0.0.1:11434/v1",
    )


def test_missing_cloud_key_is_reported_at_the_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AZURE_AI_CHAT_KEY", "AZURE_INFERENCE_CREDENTIAL"):
        monkeypatch.delenv(name, raising=False)
    text = "name: a\nmodels:\n  small: test\n  cloud:\n    provider: azure-ai\n    model: m\n"
    spec = load_agent_spec(write(tmp_path, text))

    with pytest.raises(SpecError) as info:
        spec.build_models()

    assert info.value.location == f"{tmp_path / 'agent.yaml'}:4"
    assert "models.cloud: " in str(info.value)
    assert "set AZURE_AI_CHAT_KEY or AZURE_INFERENCE_CREDENTIAL" in str(info.value)


def test_reference_that_cannot_be_resolved_is_reported_at_the_entry(tmp_path: Path) -> None:
    text = "name: a\nmodels:\n  small: test\n\n  local: /nowhere/model.gguf\n"
    spec = load_agent_spec(write(tmp_path, text))

    with pytest.raises(SpecError) as info:
        spec.build_models()

    assert info.value.location == f"{tmp_path / 'agent.yaml'}:5"
    assert "models.local: model file not found: /nowhere/model.gguf" in str(info.value)
    assert isinstance(info.value.__cause__, ModelNotInstalledError)


def test_resolve_errors_inside_a_wrapper_point_at_the_wrapper(tmp_path: Path) -> None:
    # a server's resolve may refuse references the load-time check accepts
    text = "name: a\nmodels:\n  safe:\n    fallback: [test, smollm2-135m]\n"
    spec = load_agent_spec(write(tmp_path, text))

    def resolve(ref: str) -> Model:
        raise UnknownModelError(f"the server has no {ref!r}")

    with pytest.raises(SpecError) as info:
        spec.build_models(resolve)

    assert info.value.location == f"{tmp_path / 'agent.yaml'}:3"
    assert "models.safe: the server has no 'test'" in str(info.value)
    assert isinstance(info.value.__cause__, UnknownModelError)


def test_build_models_guards_against_unchecked_cycles() -> None:
    models = {"a": FallbackEntry(fallback=("b",)), "b": FallbackEntry(fallback=("a",))}

    with pytest.raises(SpecError, match=r"models\.a: makes a cycle: a -> b -> a"):
        build_models(models, resolve=Scripted())


# -- deployment files -------------------------------------------------------------------------

DEPLOYMENT = """\
models:
  small: smollm2-135m
  large: ollama:qwen2.5:0.5b
  safe:
    fallback: [large, small]
default: safe
"""


def test_deployment_loads_and_builds(tmp_path: Path) -> None:
    deployment = load_deployment(write(tmp_path, DEPLOYMENT, "deploy.yaml"))
    resolve = Scripted()

    assert deployment.default == "safe"
    assert deployment.source == tmp_path / "deploy.yaml"
    assert list(deployment.models) == ["small", "large", "safe"]
    default = deployment.build_model(resolve=resolve)
    assert isinstance(default, FallbackModel)
    assert [slot.resolved for slot in default.models] == [
        resolve.one("ollama:qwen2.5:0.5b"),
        resolve.one("smollm2-135m"),
    ]
    assert deployment.build_model("small", resolve=resolve).name == "smollm2-135m"
    assert list(deployment.build_models(Scripted())) == ["small", "large", "safe"]


def test_deployment_without_default_builds_its_first_entry(tmp_path: Path) -> None:
    deployment = load_deployment(write(tmp_path, "models:\n  a: qwen2.5-0.5b\n", "deploy.yaml"))

    assert deployment.default is None
    assert deployment.build_model(resolve=Scripted()).name == "qwen2.5-0.5b"


def test_deployment_unknown_name_to_build(tmp_path: Path) -> None:
    deployment = load_deployment(write(tmp_path, DEPLOYMENT, "deploy.yaml"))

    with pytest.raises(SpecError, match="no model named 'smal' in the deployment; did you mean"):
        deployment.build_model("smal", resolve=Scripted())


def test_deployment_made_in_python() -> None:
    deployment = DeploymentSpec(models={"a": "test", "b": {"fallback": ["a"]}}, default="b")

    built = deployment.build_models()

    assert isinstance(built["b"], FallbackModel)
    assert built["b"].models[0].resolved is built["a"]
    assert deployment.location(("models", "a")) == "deployment"


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (
            "models:\n  a: test\ndefault: b\n",
            3,
            "default: 'b' is not an entry of models; models has: a",
        ),
        ("models:\n  small: test\ndefault: smal\n", 3, "did you mean 'small'?"),
        ("default: a\n", 1, "missing required key 'models'"),
        ("models: {}\n", 1, "models: declare at least one model"),
        (
            "models:\n  a: test\nname: x\n",
            3,
            "unknown key 'name'; expected one of: models, default",
        ),
        ("models:\n  a: test\nsource: x\n", 3, "unknown key 'source'; expected one of: models"),
        ("- a\n", 1, "the top level must be a mapping with a 'models:' key, found a list"),
        ("models:\n  a:\n    fallback: [a]\n", 3, "models.a.fallback[0]: 'a' refers to itself"),
        (
            "models:\n  a:\n    provider: openai\n    model: gpt-4o-mini\n    key: sk-123\n",
            5,
            "models.a.key: API keys do not belong in the file: set OPENAI_API_KEY",
        ),
        ("models:\n  a: test\n  a: test\n", 3, "duplicate key 'a' (first set on line 2)"),
    ],
)
def test_deployment_errors_point_at_the_line(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    error = load_error(tmp_path, text, "deploy.yaml")

    assert error.location == f"{tmp_path / 'deploy.yaml'}:{line}"
    assert message in str(error)


def test_deployment_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no such file"):
        load_deployment(tmp_path / "nope.yaml")
