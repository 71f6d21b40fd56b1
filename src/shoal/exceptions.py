"""Every error Shoal raises, in one tree.

```
ShoalError                      base of everything Shoal raises on purpose
├── UserError                   misuse: the caller can fix it
│   ├── UnknownModelError       a model reference no resolver knows
│   ├── ModelNotInstalledError  the alias is known but its file/package is missing
│   ├── ToolDefinitionError     a function that cannot become a tool
│   ├── SpecError               a malformed agent spec (YAML), with file/line/field
│   ├── ApprovalError           nothing awaits approval, or an unknown call was named
│   └── ContextOverflowError    a request that cannot fit the model's context at all
├── ModelError                  the model or its engine failed
│   ├── ModelLoadError          the weights could not be loaded
│   ├── ModelCrashedError       the engine process died (killed, native crash, out of memory)
│   ├── ModelBehaviorError      the model kept producing unusable output (retries spent)
│   └── RemoteModelError        an HTTP model endpoint failed (status and body, or no answer)
│       └── ModelTimeoutError   a remote endpoint did not answer in time
├── ToolError                   a tool call went wrong
│   ├── ToolArgumentsError      arguments failed validation (fed back to the model)
│   ├── UnknownToolError        the model named a tool that was not offered
│   ├── ToolExecutionError      the function raised; the original is ``__cause__``
│   │   └── SandboxError        a sandboxed file or shell tool refused or stopped an action
│   └── ToolTimeoutError        the function ran past its timeout
├── GuardError                  a limit or policy stopped the action
│   ├── OverloadedError         a model's request queue is full (HTTP 429, retry later)
│   ├── DeadlineExceededError   a request ran past its deadline
│   ├── MemoryBudgetError       a model cannot be loaded within the memory budget
│   └── GuardBlockedError       a guard refused an input, a tool call or an output
│       └── RateLimitedError    a rate limit was reached (HTTP 429, retry later)
├── DownloadError               fetching a model file failed
│   ├── OfflineError            the network is needed but not reachable (or offline mode)
│   └── IntegrityError          the file's size or sha256 is not the expected one
└── StoreError                  the thread store failed or was asked for a missing thread
    └── ThreadNotFoundError
```

Errors a model can fix (``ToolArgumentsError``, ``UnknownToolError``, a failing tool) go back
to it as a short message and count against the run's retry budget; the rest reach the caller.
Two tables map classes to outcomes: :data:`CLI_EXIT_CODES` (documented in ``docs/cli.md``) and,
for the HTTP server, :data:`HTTP_STATUS` (documented in ``docs/server.md``).

Exceptions here never log or print in their constructors.
"""

from __future__ import annotations

__all__ = [
    "CLI_EXIT_CODES",
    "HTTP_STATUS",
    "ApprovalError",
    "ContextOverflowError",
    "DeadlineExceededError",
    "DownloadError",
    "GuardBlockedError",
    "GuardError",
    "IntegrityError",
    "MemoryBudgetError",
    "ModelBehaviorError",
    "ModelCrashedError",
    "ModelError",
    "ModelLoadError",
    "ModelNotInstalledError",
    "ModelTimeoutError",
    "OfflineError",
    "OverloadedError",
    "RateLimitedError",
    "RemoteModelError",
    "SandboxError",
    "ShoalError",
    "SpecError",
    "StoreError",
    "ThreadNotFoundError",
    "ToolArgumentsError",
    "ToolDefinitionError",
    "ToolError",
    "ToolExecutionError",
    "ToolTimeoutError",
    "UnknownModelError",
    "UnknownToolError",
    "UserError",
    "exit_code_for",
    "http_status_for",
]


class ShoalError(Exception):
    """Base class of every error Shoal raises on purpose."""


# -- misuse ---------------------------------------------------------------------------------


class UserError(ShoalError):
    """The caller asked for something that cannot work; the message says how to fix it."""


class UnknownModelError(UserError):
    """A model reference that no resolver understands."""


class ModelNotInstalledError(UserError):
    """A known model whose weights are not on this machine."""


class ToolDefinitionError(UserError):
    """A callable that cannot be turned into a tool (bad signature, unsupported type)."""


class SpecError(UserError):
    """A malformed agent spec. ``location`` is ``"file:line"`` when known."""

    def __init__(self, message: str, *, location: str | None = None) -> None:
        super().__init__(f"{location}: {message}" if location else message)
        self.location = location


class ApprovalError(UserError):
    """Resuming a paused run went wrong: nothing awaits approval in the thread, or a call id
    that is not pending was named."""


class ContextOverflowError(UserError):
    """The system prompt, tool definitions and newest message do not fit the context."""


# -- model ----------------------------------------------------------------------------------


class ModelError(ShoalError):
    """The model or its engine failed."""


class ModelLoadError(ModelError):
    """The model file exists but could not be loaded."""


class ModelCrashedError(ModelError):
    """The process running the engine died; the request it was serving is lost."""


class ModelBehaviorError(ModelError):
    """The model kept producing output that could not be used, after all retries."""


class RemoteModelError(ModelError):
    """An OpenAI-compatible endpoint failed: an error status (``status``, ``body``) or no
    answer at all (``status`` is None: refused, reset, unreachable), after the retries."""

    def __init__(
        self, message: str, *, status: int | None = None, body: str = "", url: str = ""
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = body
        self.url = url


class ModelTimeoutError(RemoteModelError):
    """A remote endpoint did not answer within its timeout."""


# -- tools ----------------------------------------------------------------------------------


class ToolError(ShoalError):
    """A tool call went wrong. ``tool_name`` names the tool when known."""

    def __init__(self, message: str, *, tool_name: str | None = None) -> None:
        super().__init__(message)
        self.tool_name = tool_name


class ToolArgumentsError(ToolError):
    """The arguments the model produced do not validate against the tool's schema."""


class UnknownToolError(ToolError):
    """The model named a tool that was not offered to it."""


class ToolExecutionError(ToolError):
    """The tool function raised; the original exception is ``__cause__``."""


class SandboxError(ToolExecutionError):
    """The sandbox refused an action (a path leaving the workspace, a size cap, a command or
    option not allowed; nothing was changed) or stopped a command at its time limit."""


class ToolTimeoutError(ToolError):
    """The tool function did not finish within its timeout."""


# -- policy and storage ---------------------------------------------------------------------


class GuardError(ShoalError):
    """A limit or policy stopped an action."""


class OverloadedError(GuardError):
    """Too many requests are waiting for a model. ``retry_after`` is a hint in seconds."""

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DeadlineExceededError(GuardError):
    """A request did not finish within its deadline; its generation was stopped."""


class MemoryBudgetError(GuardError):
    """A model does not fit ``max_memory`` / ``max_loaded_models`` even after unloading every
    idle model (the others are busy), or is bigger than the whole budget."""


class GuardBlockedError(GuardError):
    """A guard refused an input, a tool call or an output: ``guard`` (its name), ``stage``
    (``input``, ``tool_call``, ``tool_result`` or ``output``) and ``reason``."""

    def __init__(self, reason: str, *, guard: str = "", stage: str = "input") -> None:
        who = f"guard {guard}" if guard else "a guard"
        super().__init__(f"blocked by {who} ({stage}): {reason}")
        self.guard = guard
        self.stage = stage
        self.reason = reason


class RateLimitedError(GuardBlockedError):
    """A rate limit was reached; ``retry_after`` is a hint in seconds (None: unknown)."""

    def __init__(
        self,
        reason: str,
        *,
        guard: str = "",
        stage: str = "input",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(reason, guard=guard, stage=stage)
        self.retry_after = retry_after


class DownloadError(ShoalError):
    """Fetching a model file failed (HTTP error, transfer cut short, disk full)."""


class OfflineError(DownloadError):
    """A pull needs the network and the network is not reachable (or offline mode is on)."""


class IntegrityError(DownloadError):
    """A downloaded or assembled file does not have the expected size or sha256."""


class StoreError(ShoalError):
    """The thread store failed."""


class ThreadNotFoundError(StoreError):
    """No thread with the given id."""


# -- outcome tables -------------------------------------------------------------------------

#: CLI exit codes by error class; the most specific class wins. Documented in docs/cli.md.
CLI_EXIT_CODES: dict[type[BaseException], int] = {
    ShoalError: 1,
    UserError: 2,
    SpecError: 3,
    UnknownModelError: 4,
    ModelNotInstalledError: 4,
    ContextOverflowError: 5,
    ModelError: 6,
    ModelCrashedError: 6,
    ModelBehaviorError: 7,
    RemoteModelError: 6,
    ToolError: 8,
    GuardError: 9,
    OverloadedError: 9,
    DeadlineExceededError: 9,
    MemoryBudgetError: 9,
    GuardBlockedError: 9,
    RateLimitedError: 9,
    StoreError: 10,
    DownloadError: 11,
    OfflineError: 11,
    IntegrityError: 11,
    ThreadNotFoundError: 10,
}


def exit_code_for(error: BaseException) -> int:
    """The CLI exit code for ``error``: its nearest class in :data:`CLI_EXIT_CODES`."""
    return _nearest(CLI_EXIT_CODES, error, 1)


#: HTTP status codes by error class for the server; the most specific class wins.
HTTP_STATUS: dict[type[BaseException], int] = {
    ShoalError: 500,
    UserError: 400,
    UnknownModelError: 404,
    ModelNotInstalledError: 404,
    ModelError: 500,
    ModelLoadError: 503,
    ModelCrashedError: 503,
    ModelBehaviorError: 502,
    RemoteModelError: 502,
    ModelTimeoutError: 504,
    ToolError: 500,
    GuardError: 403,
    OverloadedError: 429,
    DeadlineExceededError: 504,
    MemoryBudgetError: 503,
    GuardBlockedError: 403,
    RateLimitedError: 429,
    ApprovalError: 409,
    StoreError: 500,
    DownloadError: 502,
    ThreadNotFoundError: 404,
}


def http_status_for(error: BaseException) -> int:
    """The HTTP status for ``error``: its nearest class in :data:`HTTP_STATUS`."""
    return _nearest(HTTP_STATUS, error, 500)


def _nearest(table: dict[type[BaseException], int], error: BaseException, default: int) -> int:
    for cls in type(error).__mro__:
        if cls in table:
            return table[cls]
    return default
