"""The embedded engine: llama.cpp in this process, through ``llama-cpp-python``.

This module and :mod:`shoal.models.grammars` (which builds the grammars) are the only ones that
import ``llama_cpp``, and they do so lazily, when a model is first loaded or a grammar first
built, so ``import shoal`` stays fast. One :class:`LlamaCppModel` holds one ``Llama`` instance,
loaded once and reused; requests are serialised on it (llama.cpp contexts are not thread-safe)
and run in a worker thread so the event loop stays free while tokens are produced.

Prompts are rendered with the GGUF's own chat template (:mod:`shoal.models.prompt`); tool calls
and structured answers are constrained with a GBNF grammar built from the schemas
(:func:`shoal.models.grammars.grammar_for`) using llama.cpp's own JSON-schema converter.

A turn evaluates only what is new. llama-cpp-python keeps the KV cache of the last sequence and
evaluates only the tokens after the longest common prefix with it; on top of that, after every
request the state of the sequence (prompt and reply) is copied into a
:class:`~shoal.models.prefix_cache.PrefixCache` (bounded, LRU), and before a request the entry
sharing the longest prefix with the new prompt is restored when it beats the live context. So
when agents with different system prompts and tools, or several conversations, take turns,
each turn still pays only for its new tokens. Only the sequence's KV cells are copied
(``llama_state_seq_get_data``: about 23 KB per token for SmolLM2-135M, 12 KB for
Qwen2.5-0.5B), not llama-cpp-python's ``save_state``, which also copies a logits buffer of
``n_batch x n_vocab`` floats (100-300 MB) and is why its ``LlamaRAMCache`` is not used here.
The reused tokens are reported as ``usage.cached_prompt_tokens``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import functools
import os
import re
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

from shoal.exceptions import (
    ContextOverflowError,
    ModelLoadError,
    ModelNotInstalledError,
    UserError,
)
from shoal.hardware import estimate_model_memory
from shoal.messages import Message, ToolDefinition, Usage
from shoal.models.base import (
    FinishReason,
    Model,
    ModelRequestParameters,
    ModelResponse,
    ModelStreamEvent,
    ResponseDone,
    TextDelta,
)
from shoal.models.grammars import grammar_for
from shoal.models.grammars import import_llama_cpp as _import_llama_cpp
from shoal.models.grammars import schema_converter as _schema_converter
from shoal.models.guard import check_model_requests_allowed
from shoal.models.prefix_cache import PrefixCache, common_prefix_length
from shoal.models.profiles import ModelProfile, profile_from_gguf_metadata
from shoal.models.prompt import ChatTemplate, request_turns
from shoal.models.residency import default_residency
from shoal.settings import ModelSettings, merge_settings
from shoal.toolcalls import (
    CALL_TAIL,
    NO_CALL_GRAMMAR,
    ParsedOutput,
    TextStreamSplitter,
    build_arguments_grammar,
    build_value_grammar,
    call_head,
    parse_model_output,
    required_fields,
)

#: llama-cpp-python's objects are used through Any: its own type hints are looser than its
#: runtime behaviour (completion results typed as str | dict unions)
Llama = Any
LlamaGrammar = Any

__all__ = ["DEFAULT_MAX_CONTEXT", "DEFAULT_PREFIX_CACHE_MB", "LlamaCppModel", "engine_info"]

#: context size used when the caller does not choose one: enough for an agent's prompt and a
#: few turns, without reserving the KV cache for a model's full trained context
DEFAULT_MAX_CONTEXT = 4096

#: memory for evaluated prefixes per loaded model when the caller does not choose
#: (``$SHOAL_PREFIX_CACHE_MB`` overrides; 0 turns the cache off)
DEFAULT_PREFIX_CACHE_MB = 256

_END = object()


class LlamaCppModel(Model):
    """A GGUF model run in-process by llama.cpp."""

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        name: str | None = None,
        n_ctx: int | None = None,
        n_threads: int | None = None,
        n_gpu_layers: int = 0,
        profile: ModelProfile | None = None,
        prefix_cache_mb: int | None = None,
    ) -> None:
        self.model_path = Path(model_path)
        self.name = name or self.model_path.stem
        self._n_ctx = n_ctx
        self._n_threads = n_threads
        self._n_gpu_layers = n_gpu_layers
        self._profile_override = profile
        self._llm: Llama = None
        self._template: ChatTemplate | None = None
        self._profile: ModelProfile | None = profile
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()
        self.load_seconds: float | None = None
        #: evaluated prefixes of earlier requests, restored when a new prompt starts with them
        self.prefix_cache = PrefixCache(_prefix_cache_bytes(prefix_cache_mb))

    # -- loading --------------------------------------------------------------------------

    @property
    def profile(self) -> ModelProfile:  # type: ignore[override]
        if self._profile is None:
            self.load()
        assert self._profile is not None
        return self._profile

    @property
    def loaded(self) -> bool:
        return self._llm is not None

    def load(self) -> None:
        """Load the weights now (otherwise the first request does). Safe to call twice."""
        with self._load_lock:
            if self._llm is not None:
                return
            check_model_requests_allowed(self.name)
            if not self.model_path.is_file():
                raise ModelNotInstalledError(f"model file not found: {self.model_path}")
            llama_cpp = _import_llama_cpp()
            started = time.perf_counter()
            wanted = self._n_ctx or DEFAULT_MAX_CONTEXT
            llm = self._open(llama_cpp, wanted)
            metadata = dict(llm.metadata)
            profile = self._profile_override or profile_from_gguf_metadata(metadata)
            if self._n_ctx is None and profile.context_length < wanted:
                # a model trained on a shorter context than our default: load it at its size
                llm.close()
                llm = self._open(llama_cpp, profile.context_length)
            self._profile = profile.replace(context_length=llm.n_ctx())
            self._template = ChatTemplate(
                metadata.get("tokenizer.chat_template"),
                bos_token=_token_text(llm, llm.token_bos()),
                eos_token=_token_text(llm, llm.token_eos()),
            )
            self._llm = llm
            self.load_seconds = time.perf_counter() - started

    def _open(self, llama_cpp: Any, n_ctx: int) -> Llama:
        try:
            return llama_cpp.Llama(
                model_path=str(self.model_path),
                n_ctx=n_ctx,
                n_threads=self._n_threads or _default_threads(),
                n_gpu_layers=self._n_gpu_layers,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelLoadError(f"cannot load {self.model_path}: {exc}") from exc

    async def prepare(self) -> None:
        await asyncio.to_thread(self.load)

    # -- residency (shoal.models.residency.Resident) ----------------------------------------

    def memory_bytes(self) -> int | None:
        """None: in-process weights cannot be measured apart from the rest of the process, so
        the residency manager goes by :meth:`estimated_bytes`."""
        return None

    def estimated_bytes(self) -> int:
        """Weights, KV cache and buffers at this context size, plus the prefix cache's cap."""
        try:
            size = self.model_path.stat().st_size
        except OSError:
            size = 0
        context = self._n_ctx or DEFAULT_MAX_CONTEXT
        return estimate_model_memory(size, context) * 2**20 + self.prefix_cache.capacity_bytes

    async def unload(self) -> None:
        """Free the weights and the prefix cache; the next request loads them again."""
        await self.close()

    async def close(self) -> None:
        with self._load_lock, self._run_lock:
            llm, self._llm = self._llm, None
            self.prefix_cache.clear()
            if llm is not None:
                llm.close()

    # -- prompt ---------------------------------------------------------------------------

    def render_prompt(self, messages: Sequence[Message], params: ModelRequestParameters) -> str:
        """The exact prompt text a request sends to the engine."""
        self.load()
        assert self._template is not None
        turns = request_turns(messages, params, self.profile.tool_result_style)
        return self._template.render(turns, add_generation_prompt=True)

    def count_tokens(self, messages: Sequence[Message], params: ModelRequestParameters) -> int:
        prompt = self.render_prompt(messages, params)
        return len(self._tokenize(prompt))

    def _tokenize(self, text: str) -> list[int]:
        assert self._llm is not None
        tokens: list[int] = self._llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)
        return tokens

    @functools.lru_cache(maxsize=32)  # noqa: B019 - bounded; one model object lives long
    def _grammar(self, gbnf: str) -> LlamaGrammar:
        llama_cpp = _import_llama_cpp()
        return llama_cpp.LlamaGrammar.from_string(gbnf, verbose=False)

    def grammar_for(self, params: ModelRequestParameters) -> str | None:
        """The GBNF text that constrains a request, or None for free text."""
        return grammar_for(params)

    def _plan(self, params: ModelRequestParameters) -> _Plan:
        """How to decode: one grammar throughout, or decide the branch on the first token.

        A call to one known tool (a named ``tool_choice``, or ``required`` with one tool) is
        decoded from its arguments on: the head (``<tool_call>`` and the name), which a grammar
        would force token by token at decode speed, is evaluated with the prompt at prompt
        speed, and the tail is appended once the arguments object closes. When every argument
        is required (and no others allowed), the keys are forced too: each ``"key": `` is
        evaluated and only the values are sampled, each under the grammar of its schema.

        A grammar halves llama.cpp's decode speed even when it allows any text, so in ``auto``
        mode with free text only the first token is sampled under the text-or-call grammar:
        if it opens a call the call is decoded under the call grammar (the same tokens a single
        constrained pass would give), otherwise the answer continues unconstrained. An answer
        that opens a JSON object, bare or in a ``json`` code fence, is a model writing a call
        in its own format (small Qwen models do): it is decoded under the call grammar too.
        """
        if not params.constrained:
            return _Plan(grammar=None, peek=None)
        tools = params.call_tools()
        if params.call_required and len(tools) == 1:
            # the call's head is known: evaluate it with the prompt, sample only the arguments
            (tool,) = tools
            copy = params.copy_sources if params.output_schema is None else ()
            arguments = build_arguments_grammar(
                tool, converter_factory=_schema_converter, copy_sources=copy
            )
            keys = required_fields(tool.parameters) or []
            fields = tuple(
                (name, build_value_grammar(schema, converter_factory=_schema_converter,
                                           copy_sources=copy, leading_space=True,
                                           suffix="}" if index == len(keys) - 1 else ","))
                for index, (name, schema) in enumerate(keys)
            )  # fmt: skip
            return _Plan(grammar=arguments, peek=None, head=call_head(tool.name), fields=fields)
        if params.output_schema is None and not params.call_required:
            if params.offered_tools():
                required = dataclasses.replace(params, tool_choice="required")
                return _Plan(grammar=self.grammar_for(required), peek=self.grammar_for(params))
            if params.tools:
                # tools are described but may not be called: the answer must not open a call
                return _Plan(grammar=None, peek=NO_CALL_GRAMMAR)
        return _Plan(grammar=self.grammar_for(params), peek=None)

    # -- generation -----------------------------------------------------------------------

    async def request_stream(
        self, messages: Sequence[Message], params: ModelRequestParameters
    ) -> AsyncIterator[ModelStreamEvent]:
        # under the process's memory budget: loading may first unload idle models
        async with default_residency().use(self):
            async for event in self._stream(messages, params):
                yield event

    async def _stream(
        self, messages: Sequence[Message], params: ModelRequestParameters
    ) -> AsyncIterator[ModelStreamEvent]:
        await self.prepare()
        settings = merge_settings(self.profile.default_settings, params.settings)
        prompt = self.render_prompt(messages, params)
        plan = self._plan(params)
        offered = {t.name: t for t in params.offered_tools()}
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        cancelled = threading.Event()

        def produce() -> None:
            try:
                for item in self._generate(prompt, plan, settings, cancelled):
                    loop.call_soon_threadsafe(queue.put_nowait, item)
            except BaseException as exc:  # handed to the consumer, re-raised there
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, _END)

        worker = loop.run_in_executor(None, produce)
        splitter = TextStreamSplitter()
        pieces: list[str] = []
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, str):
                    pieces.append(item)
                    shown = splitter.feed(item)
                    if shown:
                        yield TextDelta(shown)
                    continue
                finish_reason, usage = item
                raw = "".join(pieces)
                tail = splitter.flush()
                if tail:
                    yield TextDelta(tail)
                yield ResponseDone(
                    self._response(
                        raw,
                        finish_reason,
                        usage,
                        tools=offered,
                        constrained=plan.grammar is not None,
                    )
                )
        finally:
            cancelled.set()
            with contextlib.suppress(Exception):
                await worker

    def _response(
        self,
        raw: str,
        finish_reason: str,
        usage: Usage,
        *,
        tools: dict[str, ToolDefinition],
        constrained: bool,
    ) -> ModelResponse:
        if not tools:
            parsed = ParsedOutput(text=raw.strip())
        else:
            parsed = parse_model_output(raw, tools, constrained=constrained)
        reason: FinishReason = "length" if finish_reason == "length" else "stop"
        if parsed.calls:
            reason = "tool_calls"
        return ModelResponse(
            text=parsed.text,
            tool_calls=parsed.calls,
            raw=raw,
            finish_reason=reason,
            usage=usage,
            parse_error=parsed.error,
            model_name=self.name,
        )

    def _generate(
        self, prompt: str, plan: _Plan, settings: ModelSettings, cancelled: threading.Event
    ) -> Iterator[str | tuple[str, Usage]]:
        """Runs in a worker thread: yields text pieces, then ``(finish_reason, usage)``."""
        with self._run_lock:
            llm = self._llm
            if llm is None:
                raise ModelLoadError(f"{self.name} was closed")
            tokens = self._tokenize(prompt)
            if len(tokens) + 1 > llm.n_ctx():
                raise ContextOverflowError(
                    f"the prompt takes {len(tokens)} tokens; {self.name} holds {llm.n_ctx()}"
                )
            started = time.perf_counter()
            cached = self._restore_prefix(llm, tokens)
            try:
                yield from self._decode(llm, tokens, cached, plan, settings, cancelled, started)
            finally:
                self._keep_prefix(llm)

    def _decode(
        self,
        llm: Llama,
        tokens: list[int],
        cached: int,
        plan: _Plan,
        settings: ModelSettings,
        cancelled: threading.Event,
        started: float,
    ) -> Iterator[str | tuple[str, Usage]]:
        """Sample the reply to ``tokens`` as :meth:`_generate` describes (run lock held)."""
        max_tokens = min(settings.max_tokens or 512, llm.n_ctx() - len(tokens))
        sampling = _sampling(settings, (*self.profile.stop, *settings.stop))
        produced: list[str] = []
        finish = "stop"
        grammar, start = plan.grammar, tokens
        if plan.head is not None:
            head = self._tokenize_piece(plan.head)
            start = tokens + head
            produced.append(plan.head)
            yield plan.head
            max_tokens -= len(head)
            if max_tokens <= 0:
                max_tokens, finish = 0, "length"
        if plan.peek is not None:
            first = llm.create_completion(
                prompt=tokens, max_tokens=1, grammar=self._grammar(plan.peek), **sampling
            )["choices"][0]
            text = first["text"]
            if _may_open_json(text) and first["finish_reason"] != "stop":
                # "{" or a code fence: the model may be writing a call in its own format
                more = llm.create_completion(
                    prompt=tokens + self._tokenize_piece(text), max_tokens=3, **sampling
                )["choices"][0]["text"]
                if _opens_json_call(text + more):
                    text = "<"  # decode the call it means, under the call grammar
            if not text or not text.lstrip().startswith("<"):
                # the answer is text: go on without a grammar from the token we have
                grammar = None
                start = tokens + self._tokenize_piece(text)
                produced.append(text)
                if text:
                    yield text
                max_tokens -= 1
                if not text or first["finish_reason"] == "stop" or max_tokens <= 0:
                    max_tokens = 0
                    finish = first["finish_reason"] or "stop"
        if max_tokens > 0:
            if plan.fields:
                sample = self._sample_fields(
                    llm, start, plan.fields, max_tokens, sampling, cancelled
                )
            else:
                sample = self._sample(llm, start, grammar, max_tokens, sampling, cancelled)
            for piece in sample:
                if isinstance(piece, _Finish):
                    finish = piece.reason
                else:
                    produced.append(piece)
                    yield piece
            if plan.head is not None and finish != "length" and not cancelled.is_set():
                produced.append(CALL_TAIL)
                yield CALL_TAIL
        usage = Usage(
            requests=1,
            prompt_tokens=len(tokens),
            completion_tokens=len(self._tokenize_piece("".join(produced))),
            cached_prompt_tokens=cached,
            model_seconds=time.perf_counter() - started,
        )
        yield finish, usage

    def _sample(
        self,
        llm: Llama,
        prompt: list[int],
        grammar: str | None,
        max_tokens: int,
        sampling: dict[str, Any],
        cancelled: threading.Event,
    ) -> Iterator[str | _Finish]:
        """Sample a continuation of ``prompt``: its text pieces, then how it ended."""
        finish = "stop"
        stream = llm.create_completion(
            prompt=prompt,
            max_tokens=max_tokens,
            grammar=self._grammar(grammar) if grammar else None,
            stream=True,
            **sampling,
        )
        try:
            for chunk in stream:
                choice = chunk["choices"][0]
                if choice["text"]:
                    yield choice["text"]
                if choice.get("finish_reason"):
                    finish = choice["finish_reason"]
                if cancelled.is_set():
                    break
        finally:
            stream.close()
        yield _Finish(finish)

    def _sample_fields(
        self,
        llm: Llama,
        prompt: list[int],
        fields: tuple[tuple[str, str], ...],
        max_tokens: int,
        sampling: dict[str, Any],
        cancelled: threading.Event,
    ) -> Iterator[str | _Finish]:
        """An arguments object whose keys are known: each ``"key":`` is evaluated with the
        prompt, each value (with the ``,`` or ``}`` after it) sampled under its own grammar
        (see :meth:`_plan`)."""
        budget = max_tokens
        for index, (key, grammar) in enumerate(fields):
            # ends at the colon: the value's grammar lets the model write the space itself,
            # and the comma (or closing brace) after the value
            separator = ('{"' if index == 0 else ' "') + key + '":'
            yield separator
            forced = self._tokenize_piece(separator)
            prompt = prompt + forced
            budget -= len(forced)
            finish = "length"
            if budget > 0:
                for piece in self._sample(llm, prompt, grammar, budget, sampling, cancelled):
                    if isinstance(piece, _Finish):
                        finish = piece.reason
                    else:
                        yield piece
            if finish == "length" or cancelled.is_set():
                yield _Finish(finish)
                return
            # what the engine evaluated: the prompt and the value (not the end token)
            held = int(llm.n_tokens)
            budget -= held - len(prompt) + 1
            prompt = llm.input_ids[:held].tolist()
        yield _Finish("stop")

    def _restore_prefix(self, llm: Llama, tokens: list[int]) -> int:
        """Make the engine hold the longest evaluated prefix of ``tokens`` it can; its length.

        The live context wins unless the cache shares more tokens with the prompt; then the
        cached sequence is copied into the context (its tail past the shared part is discarded
        by llama-cpp-python's own prefix check when the completion starts).
        """
        live = _common_prefix(llm, tokens)
        if not self.prefix_cache.enabled:
            return live
        try:
            entry, shared = self.prefix_cache.lookup(tokens, better_than=live)
        except KeyError:
            return live
        llama_cpp = _import_llama_cpp()
        ctx = llm._ctx
        ctx.kv_cache_seq_rm(0, 0, -1)
        buffer = (ctypes.c_uint8 * entry.size).from_buffer_copy(entry.state)
        if llama_cpp.llama_state_seq_set_data(ctx.ctx, buffer, entry.size, 0) != entry.size:
            # the context cannot take it (should not happen: same model, same context size)
            ctx.kv_cache_seq_rm(0, 0, -1)
            llm.n_tokens = 0
            self.prefix_cache.clear()
            return 0
        held = len(entry.tokens)
        llm.input_ids[:held] = entry.tokens
        llm.n_tokens = held
        # the logits buffer is stale: make llama-cpp-python evaluate at least one token
        llm._requires_eval = True
        return min(shared, len(tokens) - 1)

    def _keep_prefix(self, llm: Llama) -> None:
        """Copy the state of the sequence the engine holds into the prefix cache."""
        held = int(llm.n_tokens)
        cache = self.prefix_cache
        if not cache.enabled or held < cache.min_tokens:
            return
        tokens = llm.input_ids[:held].tolist()
        if cache.covers(tokens):
            return
        llama_cpp = _import_llama_cpp()
        ctx = llm._ctx.ctx
        size = int(llama_cpp.llama_state_seq_get_size(ctx, 0))
        if size <= 0 or size > cache.capacity_bytes:
            return
        buffer = (ctypes.c_uint8 * size)()
        written = int(llama_cpp.llama_state_seq_get_data(ctx, buffer, size, 0))
        if 0 < written <= size:
            cache.store(tokens, bytes(memoryview(buffer)[:written]))

    def _tokenize_piece(self, text: str) -> list[int]:
        assert self._llm is not None
        if not text:
            return []
        tokens: list[int] = self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        return tokens


_JSON_CALL_START = re.compile(r"\s*(?:```(?:json|tool_call)?\s*)?\[?\s*\{")


def _may_open_json(text: str) -> bool:
    return text.lstrip().startswith(("{", "[", "`"))


def _opens_json_call(text: str) -> bool:
    """Whether an answer's first tokens open a JSON object (bare or in a json code fence):
    a model writing its call in its own format rather than the Hermes tags."""
    return _JSON_CALL_START.match(text) is not None


@dataclasses.dataclass(frozen=True)
class _Plan:
    #: the grammar for the whole output (None: free text)
    grammar: str | None
    #: when set, the first token is sampled under this grammar to choose text or call
    peek: str | None
    #: when set, the output starts with this text, evaluated rather than sampled; ``grammar``
    #: constrains what follows, and :data:`CALL_TAIL` ends it
    head: str | None = None
    #: after ``head``: the arguments' keys and a grammar for each value, when all are known
    fields: tuple[tuple[str, str], ...] = ()


@dataclasses.dataclass(frozen=True)
class _Finish:
    """How a sampling pass ended (``stop``, ``length``), after its text pieces."""

    reason: str


def _sampling(settings: ModelSettings, stop: Sequence[str]) -> dict[str, Any]:
    """llama-cpp-python's sampling arguments; unset values mean greedy, unfiltered sampling."""
    return {
        "temperature": settings.temperature if settings.temperature is not None else 0.0,
        "top_p": settings.top_p if settings.top_p is not None else 1.0,
        "top_k": settings.top_k if settings.top_k is not None else 0,
        "min_p": settings.min_p if settings.min_p is not None else 0.0,
        "repeat_penalty": settings.repeat_penalty or 1.0,
        "stop": list(dict.fromkeys(stop)),
        "seed": settings.seed,
    }


def _common_prefix(llm: Llama, tokens: Sequence[int]) -> int:
    """How many leading prompt tokens the engine already holds evaluated."""
    count = common_prefix_length(llm.input_ids[: llm.n_tokens].tolist(), tokens)
    # llama-cpp-python always re-evaluates the last prompt token to get fresh logits
    return min(count, len(tokens) - 1)


def _token_text(llm: Llama, token: int) -> str:
    if token < 0:
        return ""
    return bytes(llm.detokenize([token], special=True)).decode("utf-8", errors="ignore")


def _prefix_cache_bytes(megabytes: int | None) -> int:
    if megabytes is None:
        text = os.environ.get("SHOAL_PREFIX_CACHE_MB", "").strip()
        try:
            megabytes = int(text) if text else DEFAULT_PREFIX_CACHE_MB
        except ValueError:
            raise UserError(
                f"SHOAL_PREFIX_CACHE_MB must be a whole number of megabytes, not {text!r}"
            ) from None
    if megabytes < 0:
        raise UserError(f"the prefix cache size must be >= 0 MB, not {megabytes}")
    return megabytes * 2**20


def _default_threads() -> int:
    """Physical-ish cores: llama.cpp gains nothing from hyper-threads on the decode path."""
    count = os.cpu_count() or 1
    return max(1, count if count <= 4 else count // 2)


def engine_info() -> dict[str, str]:
    """The embedded engine's version and the CPU/GPU backends llama.cpp was built with."""
    try:
        llama_cpp = _import_llama_cpp()
    except ModelLoadError as exc:
        return {"error": str(exc)}
    info = llama_cpp.llama_print_system_info()
    text = info.decode("utf-8", "replace") if isinstance(info, bytes) else str(info)
    return {"llama_cpp_python": str(llama_cpp.__version__), "system_info": text.strip()}
