"""What the client raises.

```
ShoalError (shoal.exceptions)
└── ShoalClientError          anything shoal.client raises on purpose
    ├── ClientUsageError      misuse or configuration (also a shoal.exceptions.UserError)
    ├── ShoalAPIError         the server answered with an HTTP error
    └── ShoalConnectionError  the server could not be reached, or did not answer in time
```
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from shoal.exceptions import ShoalError, UserError

__all__ = [
    "ClientUsageError",
    "ShoalAPIError",
    "ShoalClientError",
    "ShoalConnectionError",
    "api_error",
    "unexpected_response",
]


class ShoalClientError(ShoalError):
    """Base class of everything :mod:`shoal.client` raises on purpose."""


class ClientUsageError(ShoalClientError, UserError):
    """The caller can fix it: a missing or invalid setting, a bad argument."""


class ShoalAPIError(ShoalClientError):
    """The server answered with an HTTP error.

    ``str(error)`` is ``"<status>: <message>"``. ``code`` is the server's machine-readable code
    (for example ``"overloaded_error"`` or ``"thread_not_found_error"``) when it sent one;
    ``retry_after`` is the ``Retry-After`` header in seconds, when there was one.
    """

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        *,
        type: str | None = None,
        param: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.code = code
        self.type = type
        self.param = param
        self.retry_after = retry_after


class ShoalConnectionError(ShoalClientError):
    """No answer: the connection failed, broke, or the server took longer than the timeout."""


def api_error(response: httpx.Response) -> ShoalAPIError:
    """The error a non-2xx ``response`` stands for, from its ``{"error": {...}}`` body.

    A body of another shape (a proxy's HTML page, say) keeps its first 200 characters as the
    message, so the caller still sees what answered.
    """
    status = response.status_code
    retry_after = retry_after_seconds(response)
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    detail = body.get("error") if isinstance(body, dict) else None
    if isinstance(detail, dict) and isinstance(detail.get("message"), str):
        return ShoalAPIError(
            status,
            detail["message"],
            _str_or_none(detail.get("code")),
            type=_str_or_none(detail.get("type")),
            param=_str_or_none(detail.get("param")),
            retry_after=retry_after,
        )
    text = " ".join(response.text.split())[:200]
    message = text or response.reason_phrase or "request failed"
    return ShoalAPIError(status, message, retry_after=retry_after)


def unexpected_response(response: httpx.Response, problem: str) -> ShoalAPIError:
    """A 2xx answer the client cannot read: the endpoint is probably not a Shoal server."""
    request = response.request
    return ShoalAPIError(
        response.status_code,
        f"unexpected response to {request.method} {request.url.path}: {problem}",
        "unexpected_response",
    )


def retry_after_seconds(response: httpx.Response) -> float | None:
    """The ``Retry-After`` header in seconds (the delay form only), or None."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # the HTTP-date form: Shoal never sends it; fall back to backoff
    return seconds if seconds >= 0 else None


def _str_or_none(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value)
