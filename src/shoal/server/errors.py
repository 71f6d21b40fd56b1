"""Errors on the wire, in OpenAI's shape, with one status table (``HTTP_STATUS``).

Every error response has the body ``{"error": {"message", "type", "param", "code"}}`` that the
OpenAI SDKs parse into their exception classes. A :class:`~shoal.exceptions.ShoalError` gets the
status of its nearest class in :data:`~shoal.exceptions.HTTP_STATUS`; request validation errors
are 400 with the offending field in ``param``; anything unexpected is a 500 whose message says
so without leaking a traceback (the traceback goes to the server log).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from shoal.exceptions import (
    ModelError,
    OverloadedError,
    ShoalError,
    StoreError,
    ToolError,
    http_status_for,
)

__all__ = [
    "ApiError",
    "BodyTooLargeError",
    "error_body",
    "error_code",
    "install_error_handlers",
    "shoal_error_response",
]

log = logging.getLogger("shoal.server")

_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    502: "server_error",
    503: "service_unavailable",
    504: "timeout_error",
}


class ApiError(Exception):
    """An error the server raises itself, with its status and OpenAI fields."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}


class BodyTooLargeError(Exception):
    """A chunked request body grew past the server's limit while it was read."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body is larger than {limit} bytes")
        self.limit = limit


def error_body(
    status: int, message: str, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": _TYPES.get(
                status, "server_error" if status >= 500 else "invalid_request_error"
            ),
            "param": param,
            "code": code,
        }
    }


def error_code(error: ShoalError) -> str:
    """A stable machine-readable code: the error class name in snake case."""
    name = type(error).__name__
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")


def shoal_error_response(error: ShoalError) -> JSONResponse:
    status = http_status_for(error)
    headers: dict[str, str] = {}
    if isinstance(error, OverloadedError):
        headers["Retry-After"] = str(max(1, round(error.retry_after)))
    if status >= 500 and not isinstance(error, ModelError | StoreError | ToolError):
        log.warning("request failed: %s: %s", type(error).__name__, error)
    return JSONResponse(
        error_body(status, str(error), code=error_code(error)), status_code=status, headers=headers
    )


def _param(loc: tuple[Any, ...]) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or None


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(
            error_body(exc.status, exc.message, param=exc.param, code=exc.code),
            status_code=exc.status,
            headers=exc.headers,
        )

    @app.exception_handler(BodyTooLargeError)
    async def _too_large(request: Request, exc: BodyTooLargeError) -> JSONResponse:
        return JSONResponse(error_body(413, str(exc)), status_code=413)

    @app.exception_handler(ShoalError)
    async def _shoal_error(request: Request, exc: ShoalError) -> JSONResponse:
        return shoal_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        param = _param(tuple(first.get("loc", ())))
        message = str(first.get("msg", "invalid request"))
        if param:
            message = f"{param}: {message}"
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
        return JSONResponse(
            error_body(400, message, param=param, code="invalid_request"), status_code=400
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404 and message == "Not Found":
            message = f"no route {request.method} {request.url.path}"
        if exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        return JSONResponse(
            error_body(exc.status_code, message),
            status_code=exc.status_code,
            headers=dict(exc.headers or {}),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse(
            error_body(500, f"internal error ({type(exc).__name__}); see the server log"),
            status_code=500,
        )
