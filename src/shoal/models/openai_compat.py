"""A model served over HTTP by any OpenAI-compatible chat-completions endpoint.

:class:`OpenAICompatModel` talks to llama-server, llama-cpp-python's server, ``shoal serve``,
Ollama, vLLM, LM Studio, Foundry Local, OpenAI and Azure through one ``httpx.AsyncClient``
(pooled, one per model object and event loop, created on first use, closed by :meth:`close`).
``httpx`` is imported on first use, so ``import shoal`` does not load it.

**What the endpoint honours** (:class:`~shoal.models.capabilities.Capabilities`) is given, or
probed once on the first request (one probe at a time, cached on disk by
:func:`~shoal.models.capabilities.probe_and_cache`). When probing fails with an error from the
server, the provider preset's :func:`~shoal.models.capabilities.assumed_capabilities` are used
and :attr:`OpenAICompatModel.notes` says so.

**How a request is sent**, strongest mechanism first. No tool or schema is ever dropped: what
cannot be enforced is at least described in the prompt, and text is always read back with
:func:`~shoal.toolcalls.parse_model_output`.

1. Tools offered and the server takes a GBNF ``grammar``: the tools are described in the prompt
   (:func:`~shoal.models.prompt.to_chat_turns`, Hermes) and the body carries the same grammar
   the embedded engine decodes under (:func:`~shoal.models.grammars.grammar_for`).
2. Tools offered and the server takes native ``tools``: the conversation goes in the native shape
   (:func:`~shoal.models.wire.messages_json`), tools with their narrowed call schemas, and
   ``tool_choice`` when the server honours it. A required call on a server that ignores
   ``tool_choice`` but honours a JSON schema is asked for as a *call object* instead (3). Calls
   that come back in ``content`` (Foundry Local, some chat templates) are parsed from the text.
   A server that refuses native tools for a tool choice (vLLM without
   ``--enable-auto-tool-choice`` answers 400) is asked again with the tools in the prompt, and
   remembers it for that tool choice.
3. Otherwise: tools in the prompt, calls parsed from the text; a required call is constrained to
   a call object (:func:`~shoal.models.wire.call_object_schema`) when the server honours a JSON
   schema, else asked for in a system line.

An answer schema (a text answer) goes as the grammar (1), else the way the server takes a JSON
schema (:func:`~shoal.models.wire.schema_fields`: ``response_format``, ``guided_json``,
``json_schema``), else as a system line asking for JSON (the agent loop validates). With
``params.constrained=False`` no grammar or schema is sent: prompt and parse only.

**Streaming** reads ``text/event-stream`` ``data:`` lines until ``[DONE]``. Text is streamed as it
comes when it cannot be a call (no tools offered), or held back only around a ``<tool_call>`` tag
(grammar and native modes); text that may be a call in another format is streamed once parsed.
Native ``tool_calls`` fragments are merged by index. ``stream_options.include_usage`` is sent only
to servers known to take it.

**Errors and retries**: 429, 500, 502, 503, 504, refused connections and dropped connections are
retried ``max_retries`` times with exponential backoff from ``backoff`` seconds, honouring a
``Retry-After`` header (capped at 30 s), before the reply starts (a stream that fails half-way is
not replayed). A read timeout (``timeout``, per read: the whole reply for a non-streamed request)
is not retried: the server may still be working on it. Other 4xx answers fail at once. Every
failure is a :class:`~shoal.exceptions.RemoteModelError` (``ModelTimeoutError`` for timeouts)
whose message says what to check (the key and its environment variable for 401/403, the model id
and URL for 404, whether the server runs for a refused connection).
"""

from __future__ import annotations

import asyncio
import re
import time
import urllib.parse
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from shoal.exceptions import (
    ModelLoadError,
    ModelTimeoutError,
    RemoteModelError,
    ShoalError,
    UserError,
)
from shoal.messages import Message, ToolDefinition, Usage
from shoal.models import wire
from shoal.models.base import (
    FinishReason,
    Model,
    ModelRequestParameters,
    ModelResponse,
    ModelStreamEvent,
    ResponseDone,
    TextDelta,
)
from shoal.models.capabilities import Capabilities, assumed_capabilities, probe_and_cache
from shoal.models.grammars import grammar_for
from shoal.models.guard import check_model_requests_allowed
from shoal.models.profiles import (
    FAMILY_PROFILES,
    ModelProfile,
    for_size,
    parameters_from_label,
)
from shoal.models.prompt import request_turns
from shoal.settings import merge_settings
from shoal.toolcalls import NO_CALL_GRAMMAR, ParsedOutput, TextStreamSplitter, parse_model_output

if TYPE_CHECKING:
    import httpx

__all__ = ["OpenAICompatModel", "family_for_model_id"]

#: statuses worth another try: rate limits and server-side failures
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: the longest a Retry-After header (or the backoff) makes a retry wait
MAX_RETRY_DELAY = 30.0
#: servers that take ``stream_options: {"include_usage": true}`` (llama-server reports usage in
#: a stream only when asked, since ggml-org/llama.cpp#16052), and presets whose API takes it
_STREAM_USAGE_SERVERS = frozenset({"openai", "vllm", "llama-server", "ollama", "shoal"})
_STREAM_USAGE_PROVIDERS = frozenset({"openai", "azure"})
#: a 400 that refuses native tools for a tool choice (vLLM: '"auto" tool choice requires
#: --enable-auto-tool-choice and --tool-call-parser to be set')
_TOOL_CHOICE_REFUSED = re.compile(r"tool[_ -]choice|tool-call-parser", re.IGNORECASE)

_FAMILIES = (
    ("smollm", "smollm2"),
    ("qwen", "qwen2"),
    ("gemma", "gemma3"),
    ("phi", "phi"),
    ("llama", "llama3"),
)


def family_for_model_id(model: str) -> str:
    """The profile family a server's model id suggests (``generic`` when none does)."""
    lowered = model.lower()
    for needle, family in _FAMILIES:
        if re.search(rf"(?<![a-z]){needle}", lowered):
            return family
    return "generic"


@dataclass(frozen=True)
class _Plan:
    """How one request is sent and how its reply is read."""

    #: the body fields besides ``model`` and ``stream``
    body: dict[str, Any]
    #: ``grammar`` | ``native`` | ``call-schema`` | ``schema`` | ``prompt`` (for notes and tests)
    mechanism: str
    #: the tools the reply may call, by name (narrowed schemas)
    tools: dict[str, ToolDefinition]
    #: text was decoded under a call grammar: a call is a Hermes block, nothing else
    constrained: bool = False
    #: the answer comes back as ``{"answer": ...}`` (see :func:`wire.schema_fields`)
    wrapped: bool = False
    #: ``all`` (stream content at once), ``split`` (hold back a ``<tool_call>``), ``hold``
    stream_text: Literal["all", "split", "hold"] = "all"
    #: the tool-choice kind native tools were used for (see ``_refused``)
    choice_kind: str = ""


class OpenAICompatModel(Model):
    """A model behind an OpenAI-compatible ``/chat/completions`` endpoint."""

    def __init__(
        self,
        model: str,
        *,
        base_url: str,
        api_key: str | None = None,
        name: str | None = None,
        provider: str = "openai-compat",
        auth_header: Literal["bearer", "api-key"] = "bearer",
        query: Mapping[str, str] | None = None,
        chat_path: str = "/chat/completions",
        headers: Mapping[str, str] | None = None,
        timeout: float = 120.0,
        connect_timeout: float = 5.0,
        max_retries: int = 2,
        backoff: float = 0.5,
        capabilities: Capabilities | None = None,
        probe: bool = True,
        profile: ModelProfile | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        api_key_env: str | None = None,
    ) -> None:
        if not re.match(r"https?://[^/]", base_url):
            raise UserError(f"base_url must start with http:// or https://, not {base_url!r}")
        if timeout <= 0 or connect_timeout <= 0 or max_retries < 0 or backoff < 0:
            raise UserError("timeouts must be > 0 s, max_retries and backoff >= 0")
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        #: the environment variable the key comes from, named in 401/403 messages
        self.api_key_env = api_key_env
        self.provider = provider
        self.name = name or f"{provider}:{model}"
        self.auth_header = auth_header
        self.query = dict(query or {})
        self.chat_path = "/" + chat_path.lstrip("/")
        self.headers = dict(headers or {})
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.probe = probe
        #: what happened that a caller may want to know (probing fell back, a mechanism refused)
        self.notes: list[str] = []
        self._caps = capabilities
        self._profile_override = profile
        self._base_profile = for_size(
            FAMILY_PROFILES[family_for_model_id(model)], parameters_from_label(model)
        ).replace(supports_grammar=True)
        self._transport = transport
        self._http: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._probe_lock: asyncio.Lock | None = None
        #: tool-choice kinds (``auto``, ``forced``, ``none``) the server refused native tools for
        self._refused: set[str] = set()
        #: grammars cannot be built here (llama-cpp-python missing): skip the mechanism
        self._no_grammar = False

    # -- description ------------------------------------------------------------------------

    @property
    def profile(self) -> ModelProfile:  # type: ignore[override]
        if self._profile_override is not None:
            return self._profile_override
        native = self._caps.native_tools if self._caps is not None else False
        return self._base_profile.replace(native_tools=native)

    @property
    def capabilities(self) -> Capabilities | None:
        """What the endpoint honours, once known (given, probed or assumed)."""
        return self._caps

    @property
    def chat_url(self) -> str:
        return self.base_url + self.chat_path

    def __repr__(self) -> str:
        return f"OpenAICompatModel({self.model!r}, base_url={self.base_url!r}, name={self.name!r})"

    # -- connection -------------------------------------------------------------------------

    def _client(self) -> httpx.AsyncClient:
        import httpx

        loop = asyncio.get_running_loop()
        if self._http is None or self._loop is not loop:
            # a pool belongs to one event loop: a new loop (another asyncio.run) gets its own
            headers = dict(self.headers)
            if self.api_key:
                if self.auth_header == "api-key":
                    headers["api-key"] = self.api_key
                else:
                    headers["Authorization"] = f"Bearer {self.api_key}"
            self._http = httpx.AsyncClient(
                transport=self._transport,
                headers=headers,
                params=self.query,
                timeout=httpx.Timeout(self.timeout, connect=self.connect_timeout),
            )
            self._loop = loop
            self._probe_lock = asyncio.Lock()
        return self._http

    def _guard(self) -> None:
        if self._transport is None:  # a test transport is not a real model
            check_model_requests_allowed(self.name)

    async def close(self) -> None:
        http, self._http = self._http, None
        if http is not None and self._loop is asyncio.get_running_loop():
            await http.aclose()

    async def prepare(self) -> None:
        """Probe the endpoint now (otherwise the first request does)."""
        await self._capabilities()

    async def probe_endpoint(self, *, refresh: bool = False) -> Capabilities:
        """What the endpoint honours: cached, or probed now (always with ``refresh``); the
        result is what later requests use."""
        return await self._capabilities(refresh=refresh)

    async def health(self) -> bool:
        """Whether ``GET {base_url}/models`` gets an answer below 500 within 2 seconds: the
        server is up (an Azure deployment URL has no ``/models`` and answers 404; a key the
        server refuses is the request's error to report, not a reason to avoid the endpoint)."""
        import httpx

        self._guard()
        try:
            response = await self._client().get(self.base_url + "/models", timeout=2.0)
        except httpx.HTTPError:
            return False
        return response.status_code < 500

    # -- capabilities -----------------------------------------------------------------------

    async def _capabilities(self, *, refresh: bool = False) -> Capabilities:
        """Known capabilities, else probed once (always probed again with ``refresh``)."""
        if self._caps is not None and not refresh:
            return self._caps
        if not self.probe and not refresh:
            self._caps = assumed_capabilities(self.provider)
            return self._caps
        self._client()
        assert self._probe_lock is not None
        async with self._probe_lock:
            if self._caps is None or refresh:
                self._caps = await self._probe_capabilities(refresh=refresh)
        return self._caps

    async def _probe_capabilities(self, *, refresh: bool = False) -> Capabilities:
        try:
            return await probe_and_cache(
                self._probe_post,
                self._probe_get,
                model=self.model,
                provider=self.provider,
                key=f"{self.base_url}#{self.model}",
                refresh=refresh,
            )
        except RemoteModelError as exc:
            if exc.status is None:
                raise  # the server cannot be reached: the request could not go either
            error: ShoalError = exc
        except ShoalError as exc:
            error = exc
        caps = assumed_capabilities(self.provider)
        self.notes.append(f"probing {self.base_url} failed ({error}); {caps.notes[0]}")
        return caps

    async def _probe_post(self, body: dict[str, Any]) -> tuple[int, Any]:
        """One probe request: its status and JSON (or text); raises only when unreachable."""
        return await self._probe_send("POST", self.chat_url, {"model": self.model, **body})

    async def _probe_get(self, path: str) -> tuple[int, Any]:
        parts = urllib.parse.urlsplit(self.base_url)
        url = urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))
        return await self._probe_send("GET", url, None)

    async def _probe_send(self, method: str, url: str, body: Any) -> tuple[int, Any]:
        import httpx

        try:
            response = await self._send(method, url, body, 0)
        except ModelTimeoutError as exc:
            if isinstance(exc.__cause__, httpx.ConnectTimeout):  # unreachable, not slow
                raise RemoteModelError(str(exc), url=url) from exc
            raise
        return response.status_code, wire.json_or_text(response.text)

    # -- HTTP -------------------------------------------------------------------------------

    async def _send(
        self, method: str, url: str, body: dict[str, Any] | None, retries: int, stream: bool = False
    ) -> httpx.Response:
        """One request, retried ``retries`` times on RETRY_STATUSES and dropped connections.
        Returns the response whatever its status (read unless ``stream``)."""
        import httpx

        self._guard()
        client = self._client()
        attempt = 0
        while True:
            request = client.build_request(method, url, json=body)
            try:
                response = await client.send(request, stream=stream)
            except httpx.TransportError as exc:
                if isinstance(exc, httpx.TimeoutException) and not isinstance(
                    exc, httpx.ConnectTimeout
                ):
                    raise self._timeout_error(url, exc) from exc  # it may still be working on it
                if attempt >= retries:
                    raise self._connection_error(url, exc, attempt + 1) from exc
                await _sleep(self._delay(attempt, None))
            else:
                if response.status_code not in RETRY_STATUSES or attempt >= retries:
                    return response
                await response.aclose()
                await _sleep(self._delay(attempt, response.headers.get("retry-after")))
            attempt += 1

    async def _post_chat(self, body: dict[str, Any], *, stream: bool) -> httpx.Response:
        """POST a chat completion; any error status becomes a RemoteModelError."""
        response = await self._send("POST", self.chat_url, body, self.max_retries, stream=stream)
        if response.status_code >= 400:
            text = (await response.aread()).decode("utf-8", "replace")
            await response.aclose()
            raise self._status_error(response.status_code, text)
        return response

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        seconds = wire.retry_after_seconds(retry_after)
        if seconds is None:
            seconds = self.backoff * 2**attempt
        return min(max(seconds, 0.0), MAX_RETRY_DELAY)

    def _status_error(self, status: int, body: str) -> RemoteModelError:
        hint = wire.status_hint(
            status,
            model=self.model,
            base_url=self.base_url,
            key_sent=bool(self.api_key),
            key_env=self.api_key_env,
            attempts=self.max_retries + 1,
        )
        detail = wire.error_detail(body) or "no details"
        message = f"{self.name}: {self.chat_url} answered HTTP {status} ({detail}): {hint}"
        return RemoteModelError(message, status=status, body=body[:500], url=self.chat_url)

    def _connection_error(self, url: str, exc: Exception, attempts: int) -> RemoteModelError:
        import httpx

        reason = str(exc) or type(exc).__name__
        tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
        if isinstance(exc, httpx.ConnectTimeout):
            message = (
                f"{self.name}: could not connect to {url} within {self.connect_timeout:g} s "
                f"({tries}): is the server running and reachable?"
            )
            return ModelTimeoutError(message, url=url)
        if isinstance(exc, httpx.ConnectError):
            message = f"{self.name}: cannot connect to {url} ({reason}): is the server running?"
        else:
            message = f"{self.name}: the connection to {url} failed ({reason})"
        return RemoteModelError(f"{message} [{tries}]", url=url)

    def _timeout_error(self, url: str, exc: Exception) -> ModelTimeoutError:
        return ModelTimeoutError(
            f"{self.name}: {url} did not answer within {self.timeout:g} s "
            f"({type(exc).__name__}); a slow model needs a larger timeout=",
            url=url,
        )

    # -- planning ---------------------------------------------------------------------------

    def _plan(
        self, messages: Sequence[Message], params: ModelRequestParameters, caps: Capabilities
    ) -> _Plan:
        """Choose the mechanism (see the module docstring) and build the body."""
        offered = params.call_tools()
        tools = {t.name: t for t in offered}
        settings = merge_settings(self.profile.default_settings, params.settings)
        body = wire.sampling_json(settings, caps.server)
        if self.provider in ("openai", "azure") and "max_tokens" in body:
            # OpenAI's reasoning models refuse max_tokens; every current model takes this
            body["max_completion_tokens"] = body.pop("max_tokens")
        constrained = params.constrained
        kind = params.tool_choice if params.tool_choice in ("auto", "none") else "forced"
        grammar: str | None = None
        use_grammar = constrained and caps.grammar and not self._no_grammar
        if use_grammar:
            grammar = self._grammar(params)
            use_grammar = not self._no_grammar  # False when it could not be built
        if use_grammar:
            if grammar is None and params.tools and params.output_schema is None:
                grammar = NO_CALL_GRAMMAR  # tools described but none callable: no call opens
            if grammar is not None:
                body["grammar"] = grammar
            turns = self._prompt_turns(messages, params)
            split: Literal["split", "all"] = "split" if offered else "all"
            return _Plan({**body, "messages": turns}, "grammar", tools, bool(offered), False, split)

        native = constrained and caps.native_tools and kind not in self._refused
        schema_mode = caps.json_schema if constrained else None
        required = params.call_required
        schema = params.output_schema if not required else None
        mechanism, wrapped, lines = "prompt", False, []
        if offered and native and (caps.tool_choice or not required or not schema_mode):
            mechanism = "native"
            if caps.tool_choice:
                body["tools"] = wire.tools_json(params.narrowed(params.described_tools()))
                body["tool_choice"] = wire.tool_choice_json(params.tool_choice)
            else:
                body["tools"] = wire.tools_json(offered)
        elif offered and required and schema_mode:
            mechanism = "call-schema"
            fields, wrapped = wire.schema_fields(wire.call_object_schema(offered), schema_mode)
            body.update(fields)
        elif not offered and schema is not None and schema_mode:
            mechanism = "schema"
            fields, wrapped = wire.schema_fields(schema, schema_mode)
            body.update(fields)
        if required and mechanism in ("native", "prompt") and "tool_choice" not in body:
            lines.append(wire.call_instruction(offered))
        if schema is not None and mechanism != "schema":
            lines.append(wire.json_instruction(schema))
        # a conversation with native tools keeps the native shape when no call is offered
        native_shape = mechanism == "native" or (not offered and native and bool(params.tools))
        if native_shape and not offered and caps.tool_choice:
            body["tools"] = wire.tools_json(params.tools)
            body["tool_choice"] = "none"
        shown = wire.with_system_lines(messages, lines)
        body["messages"] = (
            wire.messages_json(shown) if native_shape else self._prompt_turns(shown, params)
        )
        stream_text: Literal["all", "split", "hold"] = "all"
        if mechanism == "native":
            stream_text = "split"
        elif offered or wrapped:
            stream_text = "hold"
        choice_kind = kind if "tools" in body else ""
        return _Plan(body, mechanism, tools, False, wrapped, stream_text, choice_kind)

    def _grammar(self, params: ModelRequestParameters) -> str | None:
        try:
            return grammar_for(params)
        except ModelLoadError as exc:
            # llama-cpp-python converts the schemas: without it, use the next mechanism
            self._no_grammar = True
            self.notes.append(f"grammars cannot be built here ({exc}); using the next mechanism")
            return None

    def _prompt_turns(
        self, messages: Sequence[Message], params: ModelRequestParameters
    ) -> list[dict[str, str]]:
        """Turns with the tools described in the system turn, as the embedded engine's prompt."""
        return request_turns(messages, params, self.profile.tool_result_style)

    def _body(self, plan: _Plan, *, stream: bool, caps: Capabilities) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, **plan.body, "stream": stream}
        if stream and (
            caps.server in _STREAM_USAGE_SERVERS or self.provider in _STREAM_USAGE_PROVIDERS
        ):
            body["stream_options"] = {"include_usage": True}
        return body

    async def _open(
        self, messages: Sequence[Message], params: ModelRequestParameters, *, stream: bool
    ) -> tuple[_Plan, httpx.Response]:
        """Plan and send a request; when the server refuses native tools for this tool choice,
        plan again without them (once) and remember the refusal."""
        caps = await self._capabilities()
        plan = self._plan(messages, params, caps)
        try:
            return plan, await self._post_chat(
                self._body(plan, stream=stream, caps=caps), stream=stream
            )
        except RemoteModelError as exc:
            refused = (
                exc.status == 400
                and plan.choice_kind
                and "tools" in plan.body
                and _TOOL_CHOICE_REFUSED.search(exc.body)
            )
            if not refused:
                raise
            self._refused.add(plan.choice_kind)
            self.notes.append(
                f"{self.chat_url} refused native tools with tool_choice {params.tool_choice!r} "
                f"({wire.error_detail(exc.body)}); describing the tools in the prompt instead"
            )
        plan = self._plan(messages, params, caps)
        return plan, await self._post_chat(
            self._body(plan, stream=stream, caps=caps), stream=stream
        )

    # -- requests ---------------------------------------------------------------------------

    async def request(
        self, messages: Sequence[Message], params: ModelRequestParameters
    ) -> ModelResponse:
        """One completion, not streamed."""
        started = time.perf_counter()
        plan, response = await self._open(messages, params, stream=False)
        return self._response(plan, self._read(response.text), started)

    async def request_stream(
        self, messages: Sequence[Message], params: ModelRequestParameters
    ) -> AsyncIterator[ModelStreamEvent]:
        import httpx

        started = time.perf_counter()
        plan, response = await self._open(messages, params, stream=True)
        streamed = False
        splitter = TextStreamSplitter() if plan.stream_text == "split" else None
        try:
            if "application/json" in response.headers.get("content-type", ""):
                # a server that answered the stream request with one JSON reply
                reply = self._read((await response.aread()).decode("utf-8", "replace"))
            else:
                acc = wire.StreamAccumulator()
                sse = wire.SSEDecoder()
                async for line in response.aiter_lines():
                    data = sse.feed(line)
                    if data == wire.DONE:
                        break
                    piece = acc.feed(self._chunk(data)) if data is not None else ""
                    shown = splitter.feed(piece) if splitter is not None and piece else piece
                    if shown and plan.stream_text != "hold":
                        streamed = True
                        yield TextDelta(shown)
                else:
                    tail = sse.flush()
                    if tail is not None:
                        acc.feed(self._chunk(tail))
                reply = acc.reply()
        except httpx.TimeoutException as exc:
            raise self._timeout_error(self.chat_url, exc) from exc
        except httpx.TransportError as exc:
            raise self._connection_error(self.chat_url, exc, 1) from exc
        finally:
            await response.aclose()
        result = self._response(plan, reply, started)
        text_only = bool(result.text) and not result.tool_calls and result.parse_error is None
        rest = splitter.flush() if splitter is not None and streamed else ""
        if text_only and (rest or not streamed):
            yield TextDelta(rest or result.text or "")
        yield ResponseDone(result)

    def _bad_reply(self, what: str, text: str) -> RemoteModelError:
        return RemoteModelError(
            f"{self.name}: {self.chat_url} {what}", status=200, body=text[:500], url=self.chat_url
        )

    def _read(self, text: str) -> wire.Reply:
        """A whole ``chat.completion`` reply."""
        data = wire.json_or_text(text)
        if not isinstance(data, dict):
            raise self._bad_reply(f"answered with something other than JSON: {text[:200]!r}", text)
        try:
            return wire.read_reply(data)
        except ValueError as exc:
            raise self._bad_reply(
                f"answered without a completion ({exc}): {text[:200]}", text
            ) from None

    def _chunk(self, text: str) -> dict[str, Any]:
        """One streamed chunk (a server may report an error as a chunk)."""
        chunk = wire.json_or_text(text)
        if not isinstance(chunk, dict):
            raise self._bad_reply(f"streamed something other than JSON: {text[:200]!r}", text)
        if "error" in chunk and not chunk.get("choices"):
            detail = wire.error_detail(text)
            raise self._bad_reply(f"reported an error mid-stream: {detail}", text)
        return chunk

    def _response(self, plan: _Plan, reply: wire.Reply, started: float) -> ModelResponse:
        content = reply.content
        if reply.calls or reply.call_error:
            parsed = ParsedOutput(content.strip() or None, reply.calls, reply.call_error)
        else:
            answer = wire.unwrap_answer(content) if plan.wrapped else content
            parsed = (
                parse_model_output(answer, plan.tools, constrained=plan.constrained)
                if plan.tools
                else ParsedOutput(text=answer.strip())
            )
        reason: FinishReason = "length" if reply.finish_reason == "length" else "stop"
        if parsed.calls:
            reason = "tool_calls"
        usage = reply.usage or wire.WireUsage()
        return ModelResponse(
            text=parsed.text,
            tool_calls=parsed.calls,
            raw=wire.raw_text(content, reply.calls),
            finish_reason=reason,
            usage=Usage(
                requests=1,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                cached_prompt_tokens=usage.cached_prompt_tokens,
                model_seconds=time.perf_counter() - started,
            ),
            parse_error=parsed.error,
            model_name=self.name,
        )


# -- helpers ----------------------------------------------------------------------------------


async def _sleep(seconds: float) -> None:
    """The wait between retries (a seam for tests)."""
    await asyncio.sleep(seconds)
