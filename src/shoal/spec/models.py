"""Named models: the ``models:`` section of an agent spec or a deployment file.

A ``models:`` section names models so that an agent's ``model:`` (or a deployment's
``default:``) can point at one of them, and so that wrapper models can be built from others::

    models:
      small: smollm2-135m                  # any model reference
      large:
        ref: ollama:qwen2.5:0.5b           # a remote reference, with a request timeout
        timeout: 60
      cloud:
        provider: azure-ai                 # a provider preset, the model id, a URL
        model: Llama-3.3-70B-Instruct
        url: https://example.services.ai.azure.com/models
      pool:
        balance: [large, ollama:qwen2.5:0.5b]        # BalancedModel
      safe:
        fallback: [large, small]           # FallbackModel
        timeout: 30
      tiered:
        escalate: [small, large]           # EscalatingModel
        attempts: 2
      main:
        router:                            # RouterModel
          rules:
            - {pattern: "refund|invoice", route: complex}
          classifier: small
          labels: {simple: "a short factual question", complex: "needs reasoning"}
          routes: {simple: tiered, complex: large}
          default: simple

Each entry is one :class:`ModelEntry` subclass, chosen by the key that says what it is
(``ref``, ``provider``, ``balance``, ``fallback``, ``escalate``, ``router``; a bare string is a
:class:`ReferenceEntry`). Wherever an entry names a model, the string is another entry's name
if there is one, else a model reference (``models.small: smollm2-135m`` may even keep the name
of the reference it stands for).

Checked when the file is loaded, without building anything or touching the network: the keys of
each kind, provider names (against :data:`~shoal.models.providers.PROVIDERS`), regexes, route
labels (a rule's route, ``default`` and each label must have a target in ``routes``), names that
are neither an entry nor a model reference Shoal knows, and cycles. Secrets never go in the
file: a key such as ``api_key:`` is refused with the environment variable to set instead.

:func:`build_models` turns a checked section into :class:`~shoal.models.base.Model` objects
without sending a request. An entry is built once and shared by every entry that names it; an
entry that is a reference is resolved with ``resolve`` when it is built. A reference written
inside a wrapper (``fallback: [smollm2-135m, ...]``) is handed to the wrapper as a string,
resolved on first use, when ``resolve`` is the default
:func:`~shoal.models.registry.resolve_model`; a server passes its own ``resolve`` (to run
embedded models in worker processes) and then every reference goes through it while building.
``ref`` entries with a ``timeout`` and ``provider`` entries are built by
:func:`~shoal.models.providers.remote_model`.

A *deployment file* is a ``models:`` section on its own, with an optional ``default:`` entry
name (:class:`DeploymentSpec`, read by :func:`shoal.spec.load_deployment`).

Errors found at load time are pydantic errors whose place is the error's ``loc`` plus the
relative path under :data:`BELOW_KEY` in its context; the loader turns them into
:class:`~shoal.exceptions.SpecError` at that line.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    SerializeAsAny,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from shoal.exceptions import SpecError, UserError
from shoal.models.balanced import BalancedModel
from shoal.models.base import Model
from shoal.models.catalog import split_reference
from shoal.models.providers import (
    PROVIDERS,
    RemoteReference,
    parse_remote_reference,
    remote_model,
)
from shoal.models.registry import ALIASES, resolve_model
from shoal.models.routing import EscalatingModel, FallbackModel, RouterModel, RouteRule

__all__ = [
    "BELOW_KEY",
    "BalanceEntry",
    "DeploymentSpec",
    "EscalateEntry",
    "FallbackEntry",
    "ModelBuilder",
    "ModelEntry",
    "ModelTable",
    "ProviderEntry",
    "ReferenceEntry",
    "Resolve",
    "RouterEntry",
    "RouterSpec",
    "RuleSpec",
    "build_model",
    "build_models",
    "check_pattern",
    "entry_keys",
    "entry_kind",
    "model_name_problem",
    "spec_error",
]

#: An error raised inside a nested model can only say where it is relative to that model: it
#: puts the rest of the path under this ``ctx`` key, and the loader appends it to ``loc``.
BELOW_KEY = "below"

_Loc = tuple[str | int, ...]
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
#: keys that would hold a secret; normalised (lower case, '-' -> '_') before the lookup
_SECRET_KEYS = frozenset(
    {
        "api_key",
        "apikey",
        "key",
        "token",
        "api_token",
        "access_token",
        "auth",
        "authorization",
        "bearer",
        "secret",
        "password",
        "credential",
        "credentials",
    }
)
#: turns a model reference into a model (:func:`~shoal.models.registry.resolve_model`, or a
#: server's own)
Resolve = Callable[[str], Model]


def spec_error(kind: str, message: str, below: _Loc = ()) -> PydanticCustomError:
    """An error ``below`` the model that raises it (user text goes in as a placeholder's
    value: it may contain braces)."""
    return PydanticCustomError(kind, "{message}", {"message": message, BELOW_KEY: below})


def check_pattern(value: str) -> str:
    """A regular expression (a router rule's or an agent route's), compiled once here to
    refuse a bad one."""
    try:
        re.compile(value, re.IGNORECASE)
    except re.error as exc:
        raise spec_error("pattern", f"{value!r} is not a valid regular expression: {exc}") from None
    return value


def _not_empty(message: str) -> AfterValidator:
    def check(value: Collection[Any]) -> Collection[Any]:
        if not value:
            raise spec_error("empty", message)
        return value

    return AfterValidator(check)


#: the models a balance, fallback or escalate entry names, in order
_Members = Annotated[tuple[str, ...], _not_empty("list at least one model")]


def _did_you_mean(word: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


# -- entries --------------------------------------------------------------------------------


class ModelEntry(BaseModel):
    """One entry of ``models:``. Validating a value as ``ModelEntry`` gives the subclass its
    kind key names (a string gives a :class:`ReferenceEntry`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: the key that says an entry is of this kind (None: the base class)
    kind_key: ClassVar[str | None] = None
    #: keys that, without any kind key, still say which kind was meant (a missing kind key is
    #: then reported for that kind)
    hint_keys: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="wrap")
    @classmethod
    def _dispatch(cls, data: Any, handler: ModelWrapValidatorHandler[ModelEntry]) -> ModelEntry:
        if cls is not ModelEntry:
            return handler(data)
        if isinstance(data, ModelEntry):
            return data
        if isinstance(data, str):
            if not data.strip():
                raise spec_error("model_reference", "a model reference cannot be empty")
            return ReferenceEntry(ref=data)
        if not isinstance(data, dict):
            raise spec_error(
                "model_entry",
                "an entry of models: must be a model reference or a mapping with one of: "
                + ", ".join(_KIND_KEYS),
            )
        _refuse_secrets(data)
        return _kind_of(data).model_validate(data)

    def references(self) -> Iterator[tuple[_Loc, str]]:
        """The models this entry names, each with its place relative to the entry."""
        return iter(())


class ReferenceEntry(ModelEntry):
    """A model reference (``small: smollm2-135m`` or ``{ref: ollama:qwen2.5:0.5b, timeout: 60}``).

    ``timeout`` (seconds per request, > 0) is only for remote references: it becomes the HTTP
    client's timeout.
    """

    kind_key: ClassVar[str | None] = "ref"

    ref: str = Field(min_length=1)
    timeout: float | None = Field(default=None, gt=0, strict=True)

    def references(self) -> Iterator[tuple[_Loc, str]]:
        yield ("ref",), self.ref


class ProviderEntry(ModelEntry):
    """A model on a provider's server: ``{provider: vllm, model: Qwen/Qwen2.5-0.5B-Instruct,
    url: http://gpu-box:8000/v1, timeout: 60}``. Without ``url`` the provider's usual address
    (or discovery) is used; the API key comes from the provider's environment variable."""

    kind_key: ClassVar[str | None] = "provider"
    hint_keys: ClassVar[frozenset[str]] = frozenset({"model", "url"})

    provider: str
    model: str = Field(min_length=1)
    url: str | None = None
    timeout: float | None = Field(default=None, gt=0, strict=True)

    @field_validator("provider")
    @classmethod
    def _check_provider(cls, value: str) -> str:
        if value not in PROVIDERS:
            hint = _did_you_mean(value, PROVIDERS) or f"; known: {', '.join(PROVIDERS)}"
            raise spec_error("provider", f"unknown provider {value!r}{hint}")
        return value

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"https?://[^/\s]+", value):
            raise spec_error("url", f"{value!r} is not an http(s) URL such as http://host:8000/v1")
        return value

    @property
    def remote(self) -> RemoteReference:
        """The remote reference this entry stands for."""
        return RemoteReference(self.provider, self.model, self.url)


class BalanceEntry(ModelEntry):
    """Endpoints serving one model, requests spread over them: ``{balance: [a, b]}``."""

    kind_key: ClassVar[str | None] = "balance"

    balance: _Members

    def references(self) -> Iterator[tuple[_Loc, str]]:
        for index, ref in enumerate(self.balance):
            yield ("balance", index), ref


class FallbackEntry(ModelEntry):
    """Models asked in order until one answers: ``{fallback: [a, b], timeout: 30}``
    (``timeout``: seconds each model gets before the next is asked)."""

    kind_key: ClassVar[str | None] = "fallback"

    fallback: _Members
    timeout: float | None = Field(default=None, gt=0, strict=True)

    def references(self) -> Iterator[tuple[_Loc, str]]:
        for index, ref in enumerate(self.fallback):
            yield ("fallback", index), ref


class EscalateEntry(ModelEntry):
    """Cheap tiers first, the next when an answer is unusable: ``{escalate: [a, b],
    attempts: 2}`` (``attempts``: tries per tier below the last, 1..10)."""

    kind_key: ClassVar[str | None] = "escalate"
    hint_keys: ClassVar[frozenset[str]] = frozenset({"attempts"})

    escalate: _Members
    attempts: int = Field(default=2, ge=1, le=10, strict=True)

    def references(self) -> Iterator[tuple[_Loc, str]]:
        for index, ref in enumerate(self.escalate):
            yield ("escalate", index), ref


class RuleSpec(BaseModel):
    """One of a router's ``rules``: a regex searched (case-insensitively) in the last user
    message, and the route label it sends the conversation to."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pattern: str = Field(min_length=1)
    route: str
    reason: str = ""

    @field_validator("pattern")
    @classmethod
    def _check_pattern(cls, value: str) -> str:
        return check_pattern(value)


class RouterSpec(BaseModel):
    """The body of a ``router:`` entry. ``routes`` maps labels to models; ``rules`` are tried
    first, then the ``classifier`` model picks a label (shown with its ``labels`` description,
    else the label itself), else ``default``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rules: tuple[RuleSpec, ...] = ()
    classifier: str | None = Field(default=None, min_length=1)
    labels: dict[str, str] | None = None
    routes: Annotated[dict[str, str], _not_empty("give at least one route (label: model)")]
    default: str

    @model_validator(mode="after")
    def _check_labels(self) -> RouterSpec:
        targets = list(self.routes)
        if self.default not in self.routes:
            raise spec_error(
                "route_label",
                f"{self.default!r} is not a label of routes{_label_hint(self.default, targets)}",
                ("default",),
            )
        for index, rule in enumerate(self.rules):
            if rule.route not in self.routes:
                raise spec_error(
                    "route_label",
                    f"{rule.route!r} has no target in routes{_label_hint(rule.route, targets)}",
                    ("rules", index, "route"),
                )
        if self.labels is not None:
            if self.classifier is None:
                raise spec_error(
                    "labels",
                    "labels are what a classifier is shown: add 'classifier:' or remove them",
                    ("labels",),
                )
            for label in self.labels:
                if label not in self.routes:
                    raise spec_error(
                        "route_label",
                        f"{label!r} has no target in routes: add '{label}: <model>' to routes "
                        f"or remove it{_did_you_mean(label, targets)}",
                        ("labels", label),
                    )
        return self


def _label_hint(label: str, targets: list[str]) -> str:
    hint = _did_you_mean(label, targets)
    return hint or f"; routes has: {', '.join(targets)}"


class RouterEntry(ModelEntry):
    """A router over other models: ``{router: {rules, classifier, labels, routes, default}}``."""

    kind_key: ClassVar[str | None] = "router"

    router: RouterSpec

    def references(self) -> Iterator[tuple[_Loc, str]]:
        if self.router.classifier is not None:
            yield ("router", "classifier"), self.router.classifier
        for label, ref in self.router.routes.items():
            yield ("router", "routes", label), ref


_KINDS: tuple[type[ModelEntry], ...] = (
    ReferenceEntry,
    ProviderEntry,
    BalanceEntry,
    FallbackEntry,
    EscalateEntry,
    RouterEntry,
)
_KIND_KEYS = tuple(kind.kind_key for kind in _KINDS if kind.kind_key is not None)


def entry_keys(keys: Collection[str]) -> list[str]:
    """The keys an entry with these keys may have: its kind's, or every kind's when the keys
    do not say which kind it is (for "unknown key ...; did you mean ..." hints)."""
    kind = entry_kind(keys)
    if kind is not None:
        return list(kind.model_fields)
    return list(dict.fromkeys(name for kind in _KINDS for name in kind.model_fields))


def entry_kind(keys: Collection[str]) -> type[ModelEntry] | None:
    """The kind of entry a mapping with these keys is (None: the keys do not say)."""
    for kind in _KINDS:
        if kind.kind_key in keys:
            return kind
    for kind in _KINDS:
        if kind.hint_keys & set(keys):
            return kind
    return None


def _kind_of(data: dict[Any, Any]) -> type[ModelEntry]:
    present = [key for key in _KIND_KEYS if key in data]
    if len(present) > 1:
        raise spec_error(
            "model_entry",
            f"{present[0]!r} and {present[1]!r} cannot be used together: an entry is one of "
            + ", ".join(_KIND_KEYS),
            (present[1],),
        )
    kind = entry_kind([key for key in data if isinstance(key, str)])
    if kind is not None:
        return kind
    for key in data:
        if difflib.get_close_matches(str(key), _KIND_KEYS, n=1, cutoff=0.6):
            # reported as any unknown key is, with the kind key it is close to
            raise PydanticCustomError(
                "extra_forbidden", "unknown key {key}", {"key": str(key), BELOW_KEY: (str(key),)}
            )
    raise spec_error(
        "model_entry",
        "an entry of models: must be a model reference or a mapping with one of: "
        + ", ".join(_KIND_KEYS),
    )


def _refuse_secrets(data: dict[Any, Any]) -> None:
    for key in data:
        if isinstance(key, str) and key.lower().replace("-", "_") in _SECRET_KEYS:
            raise spec_error("secret", _secret_message(data), (key,))


def _secret_message(data: dict[Any, Any]) -> str:
    provider: str | None = data.get("provider") if isinstance(data.get("provider"), str) else None
    ref = data.get("ref")
    if provider is None and isinstance(ref, str):
        prefix = ref.partition(":")[0]
        provider = prefix if prefix in PROVIDERS else None
    preset = PROVIDERS.get(provider) if provider is not None else None
    if preset is not None and preset.api_key_env:
        where = f"set {' or '.join(preset.api_key_env)} in the environment"
    else:
        where = "set the provider's API key environment variable (for example OPENAI_API_KEY)"
    return f"API keys do not belong in the file: {where}"


# -- the section ----------------------------------------------------------------------------


def _is_path(ref: str) -> bool:
    return ref.startswith("llamacpp:") or ref.endswith(".gguf")


def _reference_problem(ref: str, names: Collection[str]) -> str | None:
    """Why ``ref`` is neither an entry name nor a model reference Shoal can resolve."""
    ref = ref.strip()
    if ref in names or ref == "test" or _is_path(ref):
        return None
    try:
        if parse_remote_reference(ref) is not None:
            return None
    except UserError as exc:
        return str(exc)
    alias, _variant = split_reference(ref)
    try:
        aliases = list(ALIASES)
    except UserError:  # an unreadable catalog: resolving says so, with its own message
        return None
    if alias in aliases:
        return None
    prefix, colon, rest = ref.partition(":")
    close_provider = difflib.get_close_matches(prefix, list(PROVIDERS), n=1, cutoff=0.6)
    if colon and close_provider:
        hint = f"; did you mean '{close_provider[0]}:{rest}'?"
    else:
        hint = _did_you_mean(ref, [*names, *aliases])
    return (
        f"{ref!r} is neither an entry of models: nor a model Shoal knows (a catalog alias, a "
        f"path to a .gguf file, 'test' or provider:model){hint}"
    )


def _check_table(data: Any, handler: ValidatorFunctionWrapHandler) -> dict[str, ModelEntry]:
    """Each entry, then names, references and cycles across the entries."""
    models: dict[str, ModelEntry] = handler(data)
    # an entry written as a bare string has no 'ref:' key to point at
    bare = {name for name, value in data.items() if isinstance(value, str)}
    for name in models:
        if not _NAME.fullmatch(name):
            raise spec_error(
                "model_name",
                f"{name!r} is not a valid model name: use letters, digits, '_', '.' and '-' "
                "(no ':' or '/', which model references use)",
                (name,),
            )
    edges: dict[str, list[tuple[_Loc, str]]] = {}
    for name, entry in models.items():
        edges[name] = []
        for place, ref in entry.references():
            place = () if name in bare else place
            if isinstance(entry, ReferenceEntry) and ref == name:
                continue  # `smollm2-135m: smollm2-135m`: the entry keeps the reference's name
            if ref in models:
                edges[name].append((place, ref))
                continue
            problem = _reference_problem(ref, models)
            if problem is not None:
                raise spec_error("model_reference", problem, (name, *place))
        if isinstance(entry, ReferenceEntry) and entry.timeout is not None:
            if entry.ref in models and entry.ref != name:
                raise spec_error(
                    "timeout",
                    f"{entry.ref!r} is an entry of models:, not a remote reference: set the "
                    "timeout there (only remote references take one)",
                    (name, "timeout"),
                )
            if parse_remote_reference(entry.ref) is None:
                raise spec_error(
                    "timeout",
                    "only a remote reference (provider:model) takes a timeout; to bound an "
                    "embedded model's time, put it in a fallback with a timeout",
                    (name, "timeout"),
                )
    _check_cycles(edges)
    return models


def _check_cycles(edges: dict[str, list[tuple[_Loc, str]]]) -> None:
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        for place, ref in edges[name]:
            if ref in path:
                cycle = " -> ".join([*path[path.index(ref) :], ref])
                what = "refers to itself" if ref == name else f"makes a cycle: {cycle}"
                raise spec_error("model_cycle", f"{ref!r} {what}", (name, *place))
            if ref not in done:
                visit(ref, [*path, ref])
        done.add(name)

    for name in edges:
        if name not in done:
            visit(name, [name])


#: A validated ``models:`` section (the field type of AgentSpec.models and DeploymentSpec.models).
ModelTable = Annotated[dict[str, SerializeAsAny[ModelEntry]], WrapValidator(_check_table)]


def model_name_problem(name: str, models: Collection[str]) -> str | None:
    """Why ``name`` (an agent's ``model:``) is neither an entry of ``models`` nor a reference."""
    problem = _reference_problem(name, models)
    if problem is None:
        return None
    hint = _did_you_mean(name, models)
    if hint:
        return f"{name!r} is not an entry of models:{hint}"
    return problem


# -- building -------------------------------------------------------------------------------


def build_models(
    models: Mapping[str, ModelEntry],
    *,
    resolve: Resolve = resolve_model,
    location: Callable[[_Loc], str] | None = None,
) -> dict[str, Model]:
    """Every entry of a checked ``models:`` section as a model, in order (see the module
    docstring for how references are resolved). No request is sent. A :class:`UserError`
    while building an entry (a cloud provider's key not set, a reference that cannot be
    resolved) becomes a :class:`SpecError` at that entry's ``location``."""
    builder = ModelBuilder(models, resolve, location)
    return {name: builder.entry(name) for name in models}


def build_model(
    models: Mapping[str, ModelEntry],
    name: str,
    *,
    resolve: Resolve = resolve_model,
    location: Callable[[_Loc], str] | None = None,
) -> Model:
    """The entry ``name``, built with the entries it names and no others."""
    return ModelBuilder(models, resolve, location).entry(name)


class ModelBuilder:
    """Builds entries of a checked ``models:`` section on demand, each once (:meth:`entry`);
    a system file shares one between its agents and classifiers."""

    def __init__(
        self,
        models: Mapping[str, ModelEntry],
        resolve: Resolve,
        location: Callable[[_Loc], str] | None,
    ) -> None:
        self.models = models
        self.resolve = resolve
        #: leave references written in a wrapper to it: it resolves them on first use
        self.lazy = resolve is resolve_model
        self.location = location
        self.built: dict[str, Model] = {}
        self.building: list[str] = []

    def entry(self, name: str) -> Model:
        """The entry ``name`` as a model, built with the entries it names (once each)."""
        if name in self.built:
            return self.built[name]
        if name in self.building:  # only for sections that were not checked
            cycle = " -> ".join([*self.building[self.building.index(name) :], name])
            raise SpecError(f"models.{name}: makes a cycle: {cycle}", location=self._where(name))
        self.building.append(name)
        try:
            value = self._build(name, self.models[name])
        except UserError as exc:
            if isinstance(exc, SpecError):
                raise
            raise SpecError(f"models.{name}: {exc}", location=self._where(name)) from exc
        finally:
            self.building.pop()
        self.built[name] = value
        return value

    def _build(self, name: str, entry: ModelEntry) -> Model:
        if isinstance(entry, ReferenceEntry):
            if entry.ref in self.models and entry.ref != name:
                if entry.timeout is not None:  # pragma: no cover - refused when checked
                    raise UserError("only a remote reference takes a timeout")
                return self.entry(entry.ref)
            if entry.timeout is not None:
                return remote_model(entry.ref, timeout=entry.timeout)
            return self._resolved(entry.ref, name)
        if isinstance(entry, ProviderEntry):
            return remote_model(entry.remote, timeout=entry.timeout)
        if isinstance(entry, BalanceEntry):
            return BalancedModel(self._members(entry.balance, name), name=name)
        if isinstance(entry, FallbackEntry):
            return FallbackModel(
                self._members(entry.fallback, name), timeout=entry.timeout, name=name
            )
        if isinstance(entry, EscalateEntry):
            return EscalatingModel(
                self._members(entry.escalate, name), attempts=entry.attempts, name=name
            )
        if isinstance(entry, RouterEntry):
            spec = entry.router
            labels = None
            if spec.labels is not None:  # every route is a label; described or not
                labels = {label: spec.labels.get(label, label) for label in spec.routes}
            return RouterModel(
                {label: self._member(ref, name) for label, ref in spec.routes.items()},
                rules=[
                    RouteRule(rule.route, pattern=rule.pattern, reason=rule.reason)
                    for rule in spec.rules
                ],
                classifier=(
                    self._member(spec.classifier, name) if spec.classifier is not None else None
                ),
                labels=labels,
                default=spec.default,
                name=name,
            )
        raise TypeError(f"not a model entry: {entry!r}")  # pragma: no cover

    def _members(self, refs: Iterable[str], owner: str) -> list[str | Model]:
        return [self._member(ref, owner) for ref in refs]

    def _member(self, ref: str, owner: str) -> str | Model:
        if ref in self.models:
            return self.entry(ref)
        return ref if self.lazy else self._resolved(ref, owner)

    def _resolved(self, ref: str, owner: str) -> Model:
        try:
            return self.resolve(ref)
        except UserError as exc:
            if isinstance(exc, SpecError):
                raise
            raise SpecError(f"models.{owner}: {exc}", location=self._where(owner)) from exc

    def _where(self, name: str) -> str | None:
        return self.location(("models", name)) if self.location is not None else None


# -- deployment files -----------------------------------------------------------------------


class DeploymentSpec(BaseModel):
    """A deployment file: named models and which one is the default.

    Load one with :func:`shoal.spec.load_deployment`; build its models with
    :meth:`build_models`. ``source`` is the file (None for a spec made in Python).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    models: Annotated[ModelTable, _not_empty("declare at least one model")]
    #: the entry requests go to when they name none
    default: str | None = Field(default=None, min_length=1)
    source: Path | None = None

    _display: str | None = PrivateAttr(default=None)
    _lines: dict[_Loc, int] = PrivateAttr(default_factory=dict)

    @field_validator("default")
    @classmethod
    def _check_default(cls, value: str | None, info: ValidationInfo) -> str | None:
        models = info.data.get("models")
        if value is None or models is None:  # models failed: that error is the one to report
            return value
        if value not in models:
            hint = _did_you_mean(value, models) or f"; models has: {', '.join(models)}"
            raise spec_error("default", f"{value!r} is not an entry of models{hint}")
        return value

    def location(self, loc: _Loc = ()) -> str:
        """``"file:line"`` for a place in the file, or just the file when the line is unknown."""
        where = self._display if self._display is not None else str(self.source or "deployment")
        line = self._lines.get(loc)
        return f"{where}:{line}" if line is not None else where

    def _set_locations(self, display: str, lines: dict[_Loc, int]) -> None:
        self._display = display
        self._lines = dict(lines)

    def default_name(self) -> str | None:
        """The entry a request naming no model gets: ``default``, else the first entry."""
        return self.default or next(iter(self.models), None)

    def build_models(self, resolve: Resolve = resolve_model) -> dict[str, Model]:
        """Every entry as a :class:`~shoal.models.base.Model` (see :func:`build_models`)."""
        return build_models(self.models, resolve=resolve, location=self.location)

    def build_model(self, name: str | None = None, *, resolve: Resolve = resolve_model) -> Model:
        """The entry ``name`` (default: :meth:`default_name`), built with only the entries it
        needs."""
        name = name if name is not None else self.default_name()
        if name is None:
            raise SpecError("the deployment declares no models", location=self.location())
        if name not in self.models:
            raise SpecError(
                f"no model named {name!r} in the deployment{_did_you_mean(name, self.models)}",
                location=self.location(),
            )
        return build_model(self.models, name, resolve=resolve, location=self.location)
