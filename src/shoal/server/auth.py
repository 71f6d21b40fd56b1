"""Who is calling: the Bearer key a request sent, and the role that key carries.

``shoal serve`` accepts plain keys (``--api-key``: no role) and role keys (``--role-key
ROLE=KEY``). The ASGI edge (:class:`~shoal.server.app._Edge`) matches the request's key with
:class:`KeyTable` and writes the role into the request's ASGI scope state, always (``None`` for
a plain key, an open path, or a server without keys), so nothing a client sends in a header or
the body can set it. Endpoints read it with :func:`caller_role` and pass it to every agent and
flow run, where guards (``ToolPermissionGuard``) decide by it.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence

from starlette.requests import Request
from starlette.types import Scope

__all__ = ["ROLE_STATE", "KeyTable", "caller_role", "set_role"]

#: the key of the caller's role in the ASGI scope's ``state`` (``request.state.shoal_role``)
ROLE_STATE = "shoal_role"


class KeyTable:
    """The accepted keys and the role of each (``None``: a plain key)."""

    def __init__(self, api_keys: Sequence[str], role_keys: Mapping[str, str]) -> None:
        self._entries: list[tuple[bytes, str | None]] = [(key.encode(), None) for key in api_keys]
        self._entries += [(key.encode(), role) for key, role in role_keys.items()]

    def __bool__(self) -> bool:
        return bool(self._entries)

    def match(self, token: bytes) -> tuple[bool, str | None]:
        """Whether ``token`` is an accepted key, and its role. Every key is compared, each in
        constant time, so the time taken does not tell which key (if any) matched."""
        found: tuple[bool, str | None] = (False, None)
        for key, role in self._entries:
            if hmac.compare_digest(token, key) and not found[0]:
                found = (True, role)
        return found


def set_role(scope: Scope, role: str | None) -> None:
    """Record the caller's role in ``scope`` (overwriting whatever was there)."""
    scope.setdefault("state", {})[ROLE_STATE] = role


def caller_role(request: Request) -> str | None:
    """The role of the key this request was authenticated with (``None``: no role)."""
    role = request.scope.get("state", {}).get(ROLE_STATE)
    return role if isinstance(role, str) else None
