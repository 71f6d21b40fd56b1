"""What an OpenAI-compatible endpoint really honours, measured once and cached.

Servers that speak OpenAI's chat API differ in what they do with the fields beyond the basics:
llama.cpp's servers take a GBNF ``grammar``; vLLM takes ``guided_json``; llama-server a
``json_schema``; Ollama takes ``tools`` but ignores ``tool_choice``; OpenAI and Azure reject
fields they do not know. Many servers *ignore* an unknown field rather than reject it, so the
only reliable test is to send the field and look for its effect. :class:`Capabilities` records
the result; :func:`probe_capabilities` measures it; :class:`CapabilityCache` keeps it on disk
(``cache_dir()/remote/capabilities.json``) so an endpoint is probed once a day, not per run;
:func:`assumed_capabilities` is the fallback when probing is off or fails.

Probing, in order (each POST is one small chat-completions request: ``temperature`` 0 and
``max_tokens`` 64; for the cloud presets no temperature and a 256-token budget, as
``max_completion_tokens`` for OpenAI and Azure OpenAI, whose reasoning models refuse both
``max_tokens`` and a temperature):

1. **Server kind** (GETs only, from the server root, stopping at the first that answers as
   expected; the provider's own paths first): ``/health`` (Shoal: JSON with ``default_model``
   and ``residency``), ``/props`` (llama-server: ``default_generation_settings``),
   ``/openapi.json`` (llama-cpp-python: title "llama.cpp Python API"), ``/api/version``
   (Ollama: ``{"version": ...}``), ``/api/v1/models`` and ``/api/v0/models`` (LM Studio's
   native REST API), ``/openai/status`` (Foundry Local: ``modelDirPath``), ``/version``
   (vLLM: ``{"version": ...}``). Skipped for the cloud presets (openai, azure, azure-ai): at
   most 8 GETs.
2. **Grammar** (1 POST): body ``"grammar": 'root ::= "shoal-probe"'``; honoured when the answer
   is exactly ``shoal-probe`` (no model writes that unprompted). Skipped for the cloud presets,
   which take no GBNF.
3. **JSON schema** (1-3 POSTs, stopping at the first honoured): a schema whose only valid value
   is ``{"code": "shoal-probe-7q"}`` (an ``enum`` of one string the model cannot guess), sent as
   ``response_format`` (OpenAI ``json_schema``), then as ``guided_json`` (vLLM, or an unknown
   server), then as ``json_schema`` (llama-server, or an unknown server); honoured when the
   answer parses to exactly that value.
4. **Native tools** (2 POSTs): a ``shoal_probe`` function offered with ``tool_choice`` naming it
   and a prompt that does not ask for it (``tool_choice`` is honoured when the call comes back
   anyway, as a native ``tool_calls`` entry); then with ``tool_choice: "auto"`` and a prompt
   asking for the call (native tools are honoured when the request is accepted and a native call
   comes back; vLLM started without ``--enable-auto-tool-choice`` rejects it with 400, Foundry
   Local and some chat templates write the call into ``content``, which is noted).

So a probe costs at most 8 GETs and 6 POSTs (typically 1-2 GETs and 4-5 POSTs). A probe that
gets an error status or an answer showing no effect records "not honoured" and a note; a probe
that times out counts as not honoured. When the server accepted *none* of the POSTs, it
rejected the probe's own form rather than the features, so nothing was measured and the
preset's assumptions are kept (``probed=False``, the errors in the notes). A server that cannot
be reached at all raises (the caller falls back to :func:`assumed_capabilities`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Final

from shoal.exceptions import ModelTimeoutError, RemoteModelError
from shoal.models.assembled import write_json_atomic
from shoal.settings import cache_dir

__all__ = [
    "JSON_SCHEMA_MODES",
    "PROBE_GRAMMAR",
    "PROBE_TOOL",
    "PROBE_TOOL_NAME",
    "SERVER_KINDS",
    "Capabilities",
    "CapabilityCache",
    "Get",
    "Post",
    "assumed_capabilities",
    "probe_and_cache",
    "probe_capabilities",
]

log = logging.getLogger(__name__)

#: the server kinds :attr:`Capabilities.server` can name
SERVER_KINDS: Final = (
    "shoal",
    "llama-cpp-python",
    "llama-server",
    "ollama",
    "vllm",
    "foundry-local",
    "lmstudio",
    "openai",
    "azure",
    "unknown",
)

#: how a JSON schema can be sent: OpenAI's ``response_format``, vLLM's ``guided_json``,
#: llama-server's ``json_schema`` body field
JSON_SCHEMA_MODES: Final = ("response_format", "guided_json", "json_schema")


@dataclass(frozen=True)
class Capabilities:
    """What one endpoint (base URL + model) honours."""

    #: shoal | llama-cpp-python | llama-server | ollama | vllm | foundry-local | lmstudio |
    #: openai | azure | unknown
    server: str = "unknown"
    #: OpenAI ``tools`` / ``tool_calls`` fields honoured
    native_tools: bool = False
    #: ``tool_choice`` ``"required"`` and a named function honoured
    tool_choice: bool = False
    #: how to send a JSON schema: "response_format" | "guided_json" | "json_schema" | None
    json_schema: str | None = None
    #: a GBNF grammar in the body's ``grammar`` field honoured
    grammar: bool = False
    #: measured against the endpoint (else assumed from the provider preset)
    probed: bool = False
    #: what probing found (or why a value is assumed), for ``shoal models probe`` and docs
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; :meth:`from_dict` reads it back."""
        data = asdict(self)
        data["notes"] = list(self.notes)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Capabilities:
        """Read :meth:`to_dict`'s output. Raises ``ValueError`` when a field has the wrong type
        or value (a corrupt cache entry), ignores keys it does not know (a newer version's)."""
        server = data.get("server", "unknown")
        json_schema = data.get("json_schema")
        notes = data.get("notes", [])
        flags = {key: data.get(key, False) for key in ("native_tools", "tool_choice", "grammar")}
        flags["probed"] = data.get("probed", False)
        if not isinstance(server, str):
            raise ValueError(f"server must be a string, not {server!r}")
        if json_schema is not None and json_schema not in JSON_SCHEMA_MODES:
            raise ValueError(f"json_schema must be one of {JSON_SCHEMA_MODES}, not {json_schema!r}")
        if not isinstance(notes, list | tuple) or not all(isinstance(n, str) for n in notes):
            raise ValueError("notes must be a list of strings")
        for key, value in flags.items():
            if not isinstance(value, bool):
                raise ValueError(f"{key} must be true or false, not {value!r}")
        return cls(
            server=server,
            json_schema=json_schema,
            notes=tuple(notes),
            native_tools=flags["native_tools"],
            tool_choice=flags["tool_choice"],
            grammar=flags["grammar"],
            probed=flags["probed"],
        )


# -- assumptions per preset -----------------------------------------------------------------

#: What each provider preset is assumed to honour when it is not probed. Each entry says where
#: the assumption comes from; probing replaces all of it.
_ASSUMED: Final[dict[str, Capabilities]] = {
    # Shoal's own server (shoal.server.chat): tools and tool_choice natively, response_format
    # json_schema; unknown body fields such as "grammar" are ignored.
    "shoal": Capabilities(
        server="shoal", native_tools=True, tool_choice=True, json_schema="response_format"
    ),
    # llama-cpp-python's server: "grammar" in the chat body (llama_cpp/server/types.py);
    # response_format only as {"type": "json_object", "schema": ...}; native tools only with the
    # functionary / chatml-function-calling chat formats, so not assumed.
    "llamacpp-server": Capabilities(server="llama-cpp-python", grammar=True),
    # llama.cpp's llama-server (tools/server/README.md): "grammar" and "json_schema" body
    # fields; native tools only when started with --jinja, so not assumed.
    "llama-server": Capabilities(server="llama-server", grammar=True, json_schema="json_schema"),
    # Ollama (docs.ollama.com/api/openai-compatibility): tools supported; tool_choice listed
    # as unsupported in older versions of that page, so not assumed; response_format
    # json_schema enforced since v0.5 (structured outputs).
    "ollama": Capabilities(server="ollama", native_tools=True, json_schema="response_format"),
    # vLLM (docs: tool calling, structured outputs): a named tool_choice always works, "auto"
    # needs --enable-auto-tool-choice, so native tools are not assumed; guided_json body field.
    "vllm": Capabilities(server="vllm", tool_choice=True, json_schema="guided_json"),
    # LM Studio (docs: structured output, tool use): response_format json_schema and tools.
    "lmstudio": Capabilities(server="lmstudio", native_tools=True, json_schema="response_format"),
    # Foundry Local: OpenAI-compatible; tool calls may come back in "content", so not assumed.
    "foundry": Capabilities(server="foundry-local"),
    # OpenAI and Azure OpenAI: tools, tool_choice, response_format json_schema (structured
    # outputs); unknown body fields are rejected, no GBNF.
    "openai": Capabilities(
        server="openai", native_tools=True, tool_choice=True, json_schema="response_format"
    ),
    "azure": Capabilities(
        server="azure", native_tools=True, tool_choice=True, json_schema="response_format"
    ),
    # Azure AI Foundry model inference: tools and response_format depend on the deployed model;
    # tools are assumed (the catalog's chat models take them), a schema is not.
    "azure-ai": Capabilities(server="azure", native_tools=True),
}

_CLOUD: Final = frozenset({"openai", "azure", "azure-ai"})


def assumed_capabilities(provider: str) -> Capabilities:
    """What the preset ``provider`` is assumed to honour without probing (``probed=False``).
    An unknown provider (``openai-compat``, anything else) is assumed to honour nothing beyond
    plain chat: tools are described in the prompt and answers parsed from text."""
    caps = _ASSUMED.get(provider)
    if caps is None:
        return Capabilities(notes=(f"assumed for {provider!r}: plain chat only, not probed",))
    return replace(caps, notes=(f"assumed from the {provider!r} preset, not probed",))


# -- probing --------------------------------------------------------------------------------

#: ``post(body) -> (status, JSON or text)``: one chat-completions request with a complete
#: body (``model`` included; the callable adds the URL, key, query and timeouts). An error
#: status is returned, not raised (a ``RemoteModelError`` carrying a status is read the same
#: way); only an unreachable server should raise
Post = Callable[[dict[str, Any]], Awaitable[tuple[int, Any]]]
#: ``get(path) -> (status, JSON or text)``; ``path`` is from the server root (the base URL
#: without its ``/v1``), e.g. ``"/health"``
Get = Callable[[str], Awaitable[tuple[int, Any]]]

#: the grammar probe: the only string it allows
PROBE_GRAMMAR: Final = 'root ::= "shoal-probe"'
_GRAMMAR_TEXT: Final = "shoal-probe"
#: the JSON schema probe: its only valid value
_SCHEMA_VALUE: Final = {"code": "shoal-probe-7q"}
_PROBE_SCHEMA: Final = {
    "type": "object",
    "properties": {"code": {"type": "string", "enum": ["shoal-probe-7q"]}},
    "required": ["code"],
    "additionalProperties": False,
}
#: the native tools probe's function
PROBE_TOOL_NAME: Final = "shoal_probe"
PROBE_TOOL: Final = {
    "type": "function",
    "function": {
        "name": PROBE_TOOL_NAME,
        "description": "Report the probe code.",
        "parameters": {
            "type": "object",
            "properties": {"code": {"type": "string"}},
            "required": ["code"],
        },
    },
}
#: completion budget of a probe: enough for a short call written as text
_MAX_TOKENS: Final = 64
#: cloud models may reason before answering
_CLOUD_MAX_TOKENS: Final = 256


def _is_shoal(body: Any) -> bool:
    return isinstance(body, dict) and "default_model" in body and "residency" in body


def _is_llama_server(body: Any) -> bool:
    return isinstance(body, dict) and (
        "default_generation_settings" in body or "total_slots" in body
    )


def _is_llama_cpp_python(body: Any) -> bool:
    info = body.get("info") if isinstance(body, dict) else None
    return isinstance(info, dict) and "llama.cpp Python" in str(info.get("title", ""))


def _has_version(body: Any) -> bool:
    return isinstance(body, dict) and isinstance(body.get("version"), str)


def _is_lmstudio(body: Any) -> bool:
    # v1 (LM Studio 0.4+): {"models": [{"key", "loaded_instances", ...}]};
    # v0: {"data": [{"id", "arch", "state", ...}]}
    if not isinstance(body, dict):
        return False
    v1 = body.get("models")
    v0 = body.get("data")
    return (
        isinstance(v1, list) and any(isinstance(m, dict) and "loaded_instances" in m for m in v1)
    ) or (
        isinstance(v0, list)
        and any(isinstance(m, dict) and "arch" in m and "state" in m for m in v0)
    )


def _is_foundry_local(body: Any) -> bool:
    # the Foundry Local SDK reads the model cache directory from GET /openai/status
    return isinstance(body, dict) and "modelDirPath" in body


#: (server kind, path from the server root, how its answer looks, statuses that count)
_IDENTIFY: Final[tuple[tuple[str, str, Callable[[Any], bool], tuple[int, ...]], ...]] = (
    ("shoal", "/health", _is_shoal, (200, 503)),
    ("llama-server", "/props", _is_llama_server, (200,)),
    ("llama-cpp-python", "/openapi.json", _is_llama_cpp_python, (200,)),
    ("ollama", "/api/version", _has_version, (200,)),
    ("lmstudio", "/api/v1/models", _is_lmstudio, (200,)),
    ("lmstudio", "/api/v0/models", _is_lmstudio, (200,)),
    ("foundry-local", "/openai/status", _is_foundry_local, (200,)),
    ("vllm", "/version", _has_version, (200,)),
)

#: provider preset -> the server kind it is expected to be (tried first)
_PROVIDER_SERVER: Final = {
    "shoal": "shoal",
    "llama-server": "llama-server",
    "llamacpp-server": "llama-cpp-python",
    "ollama": "ollama",
    "vllm": "vllm",
    "lmstudio": "lmstudio",
    "foundry": "foundry-local",
    "openai": "openai",
    "azure": "azure",
    "azure-ai": "azure",
}


async def _identify(get: Get, provider: str, notes: list[str]) -> str:
    expected = _PROVIDER_SERVER.get(provider)
    order = sorted(_IDENTIFY, key=lambda entry: entry[0] != expected)
    for kind, path, looks_right, statuses in order:
        try:
            status, body = await get(path)
        except ModelTimeoutError:
            continue  # a path that hangs identifies nothing; an unreachable server raises
        if status in statuses and looks_right(body):
            notes.append(f"server: {kind} (GET {path} answered)")
            return kind
    notes.append("server: unknown (no identification path answered as expected)")
    return "unknown"


def _message(body: Any) -> dict[str, Any] | None:
    """``choices[0].message`` of a chat completion, or None."""
    if not isinstance(body, dict):
        return None
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    message = choices[0].get("message")
    return message if isinstance(message, dict) else None


def _content(body: Any) -> str | None:
    message = _message(body)
    content = message.get("content") if message else None
    return content if isinstance(content, str) else None


def _native_call_names(body: Any) -> list[str]:
    message = _message(body)
    calls = message.get("tool_calls") if message else None
    names: list[str] = []
    for call in calls if isinstance(calls, list) else []:
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            names.append(function["name"])
    return names


def _error_text(status: int, body: Any) -> str:
    text = body if isinstance(body, str) else json.dumps(body)
    text = " ".join(text.split())
    return f"HTTP {status}: {text[:160]}" if text else f"HTTP {status}"


class _Prober:
    """Sends the probe requests for one endpoint and keeps the notes."""

    def __init__(self, post: Post, *, model: str, provider: str) -> None:
        self.post = post
        self.model = model
        self.provider = provider
        self.notes: list[str] = []
        #: requests the server accepted (status 200); none at all means it rejected the probe's
        #: own form (an unknown parameter, a model that takes no temperature), not a feature
        self.accepted = 0

    async def send(self, prompt: str, fields: Mapping[str, Any]) -> tuple[int, Any]:
        """One probe request: ``prompt`` as the user turn plus ``fields``; a timeout counts as
        a failed probe (status 0)."""
        request: dict[str, Any] = {"model": self.model, "messages": _user(prompt)}
        if self.provider in _CLOUD:
            # reasoning models take no temperature and spend tokens before answering; OpenAI
            # and Azure OpenAI want max_completion_tokens (max_tokens is rejected by o-series)
            field = "max_tokens" if self.provider == "azure-ai" else "max_completion_tokens"
            request[field] = _CLOUD_MAX_TOKENS
        else:
            request.update(temperature=0, max_tokens=_MAX_TOKENS)
        request.update(fields)
        try:
            status, answer = await self.post(request)
        except ModelTimeoutError as exc:
            return 0, f"timed out: {exc}"
        except RemoteModelError as exc:
            if exc.status is None:
                raise  # unreachable: the caller falls back to the assumptions
            status, answer = exc.status, exc.body
        if status == 200:
            self.accepted += 1
        return status, answer

    async def grammar(self) -> bool:
        status, body = await self.send("Say hello.", {"grammar": PROBE_GRAMMAR})
        if status != 200:
            self.notes.append(f"grammar: not honoured ({_error_text(status, body)})")
            return False
        content = _content(body)
        if content is not None and content.strip() == _GRAMMAR_TEXT:
            self.notes.append("grammar: honoured (GBNF in the body's 'grammar' field)")
            return True
        self.notes.append(f"grammar: ignored (the answer {_clip(content)} is not the grammar's)")
        return False

    async def json_schema(self, server: str) -> str | None:
        for mode, extra in _schema_bodies(server):
            prompt = "Reply with a JSON object that has a 'code' field."
            status, body = await self.send(prompt, extra)
            if status != 200:
                self.notes.append(
                    f"json schema via {mode}: not honoured ({_error_text(status, body)})"
                )
                continue
            content = _content(body)
            try:
                value = json.loads(content) if content is not None else None
            except json.JSONDecodeError:
                value = None
            if value == _SCHEMA_VALUE:
                self.notes.append(f"json schema via {mode}: honoured")
                return mode
            self.notes.append(f"json schema via {mode}: ignored (the answer {_clip(content)})")
        return None

    async def tools(self) -> tuple[bool, bool]:
        """(native_tools, tool_choice)."""
        named = {"type": "function", "function": {"name": PROBE_TOOL_NAME}}
        status, body = await self.send("Say hello.", {"tools": [PROBE_TOOL], "tool_choice": named})
        forced = status == 200 and PROBE_TOOL_NAME in _native_call_names(body)
        if status != 200:
            self.notes.append(f"tool_choice: not honoured ({_error_text(status, body)})")
        elif forced:
            self.notes.append("tool_choice: honoured (the named function was called unasked)")
        elif _call_in_content(_content(body)):
            self.notes.append("tool_choice: the call came back in 'content', not in tool_calls")
        else:
            self.notes.append("tool_choice: ignored (the named function was not called)")

        ask = f"Call the {PROBE_TOOL_NAME} function with code 42."
        status, body = await self.send(ask, {"tools": [PROBE_TOOL], "tool_choice": "auto"})
        if status != 200:
            self.notes.append(
                f"native tools: not honoured with tool_choice auto ({_error_text(status, body)})"
            )
            return False, forced
        if PROBE_TOOL_NAME in _native_call_names(body):
            self.notes.append("native tools: honoured (tool_calls came back)")
            return True, forced
        if _call_in_content(_content(body)):
            self.notes.append("native tools: the call came back in 'content' (parse the text)")
            return False, forced
        if forced:
            self.notes.append("native tools: honoured (tool_calls came back when forced)")
            return True, forced
        self.notes.append("native tools: no call came back when asked for one")
        return False, forced


def _clip(text: str | None) -> str:
    return repr((text or "")[:40])


def _user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def _schema_bodies(server: str) -> list[tuple[str, dict[str, Any]]]:
    strict = {"name": "answer", "schema": _PROBE_SCHEMA, "strict": True}
    bodies: list[tuple[str, dict[str, Any]]] = [
        ("response_format", {"response_format": {"type": "json_schema", "json_schema": strict}})
    ]
    if server in ("vllm", "unknown"):
        bodies.append(("guided_json", {"guided_json": _PROBE_SCHEMA}))
    if server in ("llama-server", "unknown"):
        bodies.append(("json_schema", {"json_schema": _PROBE_SCHEMA}))
    return bodies


def _call_in_content(content: str | None) -> bool:
    return content is not None and PROBE_TOOL_NAME in content


async def probe_capabilities(post: Post, get: Get, *, model: str, provider: str) -> Capabilities:
    """Measure what the endpoint behind ``post``/``get`` honours for ``model`` (the requests
    are listed in the module docstring). ``post`` gets complete bodies (``model`` included).
    Raises what ``post``/``get`` raise when the server cannot be reached at all; any other
    failure is recorded as "not honoured" with a note. When the server accepted none of the
    probe requests, nothing was measured: the result is :func:`assumed_capabilities` with the
    errors in its notes."""
    prober = _Prober(post, model=model, provider=provider)
    notes = prober.notes
    notes.append(f"probed {model!r} ({provider}) at {time.strftime('%Y-%m-%d %H:%M:%S')}")
    if provider in _CLOUD:
        server = _PROVIDER_SERVER[provider]
        notes.append(f"server: {server} (the {provider!r} preset; not identified)")
        notes.append("grammar: not probed (cloud APIs take no GBNF)")
        grammar = False
    else:
        server = await _identify(get, provider, notes)
        grammar = await prober.grammar()
    json_schema = await prober.json_schema(server)
    native_tools, tool_choice = await prober.tools()
    if prober.accepted == 0:
        assumed = assumed_capabilities(provider)
        note = "the server accepted no probe request: keeping the preset's assumptions"
        return replace(assumed, notes=(*notes, note, *assumed.notes))
    caps = Capabilities(
        server=server,
        native_tools=native_tools,
        tool_choice=tool_choice,
        json_schema=json_schema,
        grammar=grammar,
        probed=True,
        notes=tuple(notes),
    )
    log.info("capabilities of %s (%s): %s", model, provider, caps)
    return caps


# -- cache ----------------------------------------------------------------------------------


class CapabilityCache:
    """Probed capabilities on disk, one JSON file of ``{key: {"at": time, "capabilities":
    {...}}}`` entries (key ``f"{base_url}#{model}"``). Entries older than ``ttl`` seconds are
    ignored; a corrupt file or entry is ignored (and the file rewritten on the next
    :meth:`put`); writes are atomic (a temporary file and ``os.replace``)."""

    def __init__(self, path: Path | None = None, ttl: float = 86400.0) -> None:
        self.path = path if path is not None else cache_dir() / "remote" / "capabilities.json"
        self.ttl = ttl

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("ignoring the capability cache %s: %s", self.path, exc)
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, key: str) -> Capabilities | None:
        """The cached capabilities for ``key``, or None (missing, expired or corrupt)."""
        entry = self._load().get(key)
        if not isinstance(entry, dict):
            return None
        at = entry.get("at")
        caps = entry.get("capabilities")
        if not isinstance(at, int | float) or not isinstance(caps, dict):
            return None
        if time.time() - at > self.ttl:
            return None
        try:
            return Capabilities.from_dict(caps)
        except ValueError:
            return None

    def put(self, key: str, caps: Capabilities) -> None:
        """Store ``caps`` for ``key`` (dropping expired entries). A cache that cannot be
        written is logged and skipped: probing again next time is the only cost."""
        now = time.time()
        data = {
            k: v
            for k, v in self._load().items()
            if isinstance(v, dict)
            and isinstance(v.get("at"), int | float)
            and now - v["at"] <= self.ttl
        }
        data[key] = {"at": now, "capabilities": caps.to_dict()}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.path, data)
        except OSError as exc:
            log.warning("could not write the capability cache %s: %s", self.path, exc)


async def probe_and_cache(
    post: Post,
    get: Get,
    *,
    model: str,
    provider: str,
    key: str,
    cache: CapabilityCache | None = None,
    refresh: bool = False,
) -> Capabilities:
    """The cached capabilities for ``key`` (``f"{base_url}#{model}"``), else probe and cache
    them. ``refresh`` probes even when a fresh entry is cached."""
    cache = cache if cache is not None else CapabilityCache()
    if not refresh:
        cached = cache.get(key)
        if cached is not None:
            return cached
    caps = await probe_capabilities(post, get, model=model, provider=provider)
    cache.put(key, caps)
    return caps
