"""Where the client connects and how patiently: :class:`ClientConfig`, from arguments or the
environment (``SHOAL_ENDPOINT``, ``SHOAL_API_KEY``, ``SHOAL_TIMEOUT``, ``SHOAL_MAX_RETRIES``).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from shoal.client._errors import ClientUsageError

__all__ = [
    "ENV_API_KEY",
    "ENV_ENDPOINT",
    "ENV_MAX_RETRIES",
    "ENV_TIMEOUT",
    "ClientConfig",
    "configure",
]

ENV_ENDPOINT = "SHOAL_ENDPOINT"
ENV_API_KEY = "SHOAL_API_KEY"
ENV_TIMEOUT = "SHOAL_TIMEOUT"
ENV_MAX_RETRIES = "SHOAL_MAX_RETRIES"

DEFAULT_TIMEOUT = 120.0
DEFAULT_MAX_RETRIES = 3

_NO_ENDPOINT = (
    f"no server endpoint: pass endpoint= or set {ENV_ENDPOINT} (e.g. http://127.0.0.1:8000)"
)


@dataclass(frozen=True)
class ClientConfig:
    """The settings of one client. Values are checked when the object is made."""

    #: the server's root URL, ``http(s)://host:port`` (a trailing ``/v1`` is dropped)
    endpoint: str
    #: sent as ``Authorization: Bearer <key>``; None for a server running without keys
    api_key: str | None = dataclasses.field(default=None, repr=False)
    #: seconds one HTTP request may take (a run included) before the call fails
    timeout: float = DEFAULT_TIMEOUT
    #: retries after a connection failure, a 429 or a 503 (0: never retry)
    max_retries: int = DEFAULT_MAX_RETRIES
    #: first backoff delay in seconds; it doubles with each retry
    backoff: float = 0.5
    #: the longest wait between two attempts, whatever ``Retry-After`` asks for
    max_retry_delay: float = 30.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "endpoint", _normalise_endpoint(self.endpoint, "endpoint"))
        if self.api_key == "":
            object.__setattr__(self, "api_key", None)
        for name in ("timeout", "backoff", "max_retry_delay"):
            value = getattr(self, name)
            if not _is_number(value) or not math.isfinite(value) or value < 0:
                raise ClientUsageError(f"{name} must be a number of seconds >= 0, not {value!r}")
        if self.timeout == 0:
            raise ClientUsageError("timeout must be more than 0 seconds")
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int):
            raise ClientUsageError(f"max_retries must be a whole number, not {self.max_retries!r}")
        if self.max_retries < 0:
            raise ClientUsageError(f"max_retries must be 0 or more, not {self.max_retries}")

    def __repr__(self) -> str:
        key = "None" if self.api_key is None else "'***'"
        return (
            f"ClientConfig(endpoint={self.endpoint!r}, api_key={key}, timeout={self.timeout!r}, "
            f"max_retries={self.max_retries!r})"
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ClientConfig:
        """The configuration in the environment (``os.environ`` unless ``env`` is given).

        ``SHOAL_ENDPOINT`` is required; an empty variable counts as unset.
        """
        return cls.resolve(env=env)

    @classmethod
    def resolve(
        cls,
        endpoint: str | None = None,
        api_key: str | None = None,
        timeout: float | None = None,
        max_retries: int | None = None,
        *,
        env: Mapping[str, str] | None = None,
    ) -> ClientConfig:
        """Arguments that are not None, else the environment, else the defaults.

        A variable is read (and checked) only when its argument is None.
        """
        env = os.environ if env is None else env

        def read(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        if endpoint is None:
            endpoint = read(ENV_ENDPOINT)
            if endpoint is None:
                raise ClientUsageError(_NO_ENDPOINT)
            endpoint = _normalise_endpoint(endpoint, ENV_ENDPOINT)
        if api_key is None:
            api_key = read(ENV_API_KEY)
        if timeout is None and (raw := read(ENV_TIMEOUT)) is not None:
            timeout = _parse_timeout(raw)
        if max_retries is None and (raw := read(ENV_MAX_RETRIES)) is not None:
            max_retries = _parse_retries(raw)
        return cls(
            endpoint=endpoint,
            api_key=api_key,
            timeout=DEFAULT_TIMEOUT if timeout is None else timeout,
            max_retries=DEFAULT_MAX_RETRIES if max_retries is None else max_retries,
        )


def configure(
    config: ClientConfig | None,
    endpoint: str | None,
    api_key: str | None,
    timeout: float | None,
    max_retries: int | None,
) -> ClientConfig:
    """A client's configuration: ``config`` with the arguments given (not None) applied, or,
    without ``config``, the arguments over the environment."""
    if config is None:
        return ClientConfig.resolve(endpoint, api_key, timeout, max_retries)
    return dataclasses.replace(
        config,
        endpoint=config.endpoint if endpoint is None else endpoint,
        api_key=config.api_key if api_key is None else api_key,
        timeout=config.timeout if timeout is None else timeout,
        max_retries=config.max_retries if max_retries is None else max_retries,
    )


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _normalise_endpoint(endpoint: object, source: str) -> str:
    """``endpoint`` without a trailing slash or ``/v1``, once it is known to be an HTTP URL."""
    if not isinstance(endpoint, str) or not endpoint.strip():
        raise ClientUsageError(_NO_ENDPOINT)
    text = endpoint.strip()
    try:
        url = httpx.URL(text)
    except httpx.InvalidURL as exc:
        raise ClientUsageError(f"{source}={text!r} is not a URL ({exc})") from None
    if url.scheme not in ("http", "https") or not url.host:
        example = f"http://{text}" if "://" not in text else "http://127.0.0.1:8000"
        raise ClientUsageError(
            f"{source}={text!r} is not an http:// or https:// URL with a host (e.g. {example})"
        )
    if url.port is not None and not 0 < url.port < 65536:
        raise ClientUsageError(f"{source}={text!r}: port {url.port} is not between 1 and 65535")
    if url.query or url.fragment:
        raise ClientUsageError(f"{source}={text!r} must not have a query or a fragment")
    text = text.rstrip("/")
    if text.endswith("/v1"):  # the OpenAI SDKs' base URL; the client adds /v1 itself
        text = text[: -len("/v1")]
    return text


def _parse_timeout(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ClientUsageError(
            f"{ENV_TIMEOUT}={raw!r} is not a number of seconds (e.g. {ENV_TIMEOUT}=120)"
        ) from None
    if not math.isfinite(value) or value <= 0:
        raise ClientUsageError(f"{ENV_TIMEOUT}={raw!r} must be more than 0 seconds")
    return value


def _parse_retries(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ClientUsageError(
            f"{ENV_MAX_RETRIES}={raw!r} is not a whole number (e.g. {ENV_MAX_RETRIES}=3)"
        ) from None
    if value < 0:
        raise ClientUsageError(f"{ENV_MAX_RETRIES}={raw!r} must be 0 or more (0: never retry)")
    return value
