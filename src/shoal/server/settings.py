"""What ``shoal serve`` is configured with: one frozen object, built by the CLI or by tests.

API keys come in two kinds: plain keys (``api_keys``), whose requests run without a role, and
role keys (``role_keys``, key -> role), whose requests run every agent and flow in that role
(:mod:`shoal.server.auth`); :func:`parse_role_keys` reads them from ``ROLE=KEY`` items. Keys
are secrets: they are kept out of the settings' ``repr`` and out of every error message.

The residency limits (how many models stay loaded, in how much memory, for how long when idle)
default to the environment (``SHOAL_MAX_MEMORY``, ``SHOAL_MAX_LOADED_MODELS``,
``SHOAL_KEEP_ALIVE``) and else to :func:`~shoal.models.residency_settings`'s defaults.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from shoal.exceptions import UserError
from shoal.models import DEFAULT_MODEL, ResidencySettings, residency_settings

__all__ = ["ROLE_NAME", "ServerSettings", "is_loopback", "parse_role_keys"]

#: what a role name may be made of
ROLE_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_ROLE_CHARS = "letters, digits, '_', '.' and '-'"


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_role_keys(options: Iterable[str] = (), env: str = "") -> dict[str, str]:
    """``--role-key ROLE=KEY`` values and ``$SHOAL_ROLE_KEYS`` (comma-separated ``ROLE=KEY``
    items) as ``{key: role}``. Each item is split at its first ``=``, so a key may contain
    ``=``. A key given for two different roles is an error; messages never echo a key."""
    items = [(f"--role-key #{i}", item) for i, item in enumerate(options, 1)]
    items += [
        (f"$SHOAL_ROLE_KEYS item {i}", item)
        for i, item in enumerate((part.strip() for part in env.split(",") if part.strip()), 1)
    ]
    keys: dict[str, str] = {}
    for where, item in items:
        role, sep, key = item.partition("=")
        role, key = role.strip(), key.strip()
        if not sep:
            raise UserError(f"{where}: expected ROLE=KEY (for example staff=KEY), found no '='")
        if not role:
            raise UserError(f"{where}: the role before '=' is empty; write ROLE=KEY")
        if not ROLE_NAME.fullmatch(role):
            # not echoed: a reversed KEY=ROLE would print the key
            raise UserError(f"{where}: the role before '=' may use only {_ROLE_CHARS}")
        if not key:
            raise UserError(f"{where}: the key of role {role!r} is empty; write {role}=KEY")
        known = keys.setdefault(key, role)
        if known != role:
            raise UserError(
                f"{where}: the same key is given for roles {known!r} and {role!r}; "
                "give each key one role"
            )
    return keys


@dataclass(frozen=True)
class ServerSettings:
    """Limits and defaults of one server. Every limit has a default a laptop can live with."""

    host: str = "127.0.0.1"
    port: int = 8000
    #: the model loaded at start-up and used when a request names no model
    default_model: str = DEFAULT_MODEL
    #: other model references requests may name (started on first use); the default is added
    models: tuple[str, ...] = ()
    #: agent spec files hosted by the server (addressed by agent name as the ``model``)
    agent_specs: tuple[Path, ...] = ()
    #: system files (models, agents, flows): every agent and flow is served under its name,
    #: each system's entry under the system's name
    systems: tuple[Path, ...] = ()
    #: a deployment file (``models:``, ``default:``): its named models (remote endpoints,
    #: routers, fallbacks, escalation tiers) are served under their names
    deployment: Path | None = None
    #: Bearer tokens accepted, whose requests run without a role; with no ``role_keys``
    #: either: no authentication (only allowed on a loopback address)
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    #: Bearer tokens that carry a role, ``{key: role}``: agents and flows run in that role for
    #: their requests (guards such as ``ToolPermissionGuard`` decide by it)
    role_keys: Mapping[str, str] = field(default_factory=dict, repr=False)
    #: SQLite file of threads and stored responses
    database: Path | None = None
    #: requests running at once on one model; the engine generates for one at a time
    max_active: int = 1
    #: requests waiting per model before new ones get 429
    max_queue: int = 32
    #: seconds a request may take, queueing included, before it fails with 504
    request_timeout: float = 300.0
    #: seconds a model may take to load before requests fail with 503
    load_timeout: float = 300.0
    max_body_bytes: int = 1_000_000
    max_messages: int = 256
    #: largest ``max_tokens`` a request may ask for
    max_tokens_limit: int = 4096
    #: seconds in-flight requests get to finish when the server is asked to stop
    shutdown_timeout: float = 30.0
    #: run the embedded engine in a worker process (crash isolation); False runs it in-process
    isolate: bool = True
    #: memory the loaded models may take together, in MB (None: no budget)
    max_memory_mb: int | None = field(default_factory=lambda: residency_settings().max_memory_mb)
    #: models loaded at once; the least recently used idle one is unloaded first (None: any)
    max_loaded_models: int | None = field(
        default_factory=lambda: residency_settings().max_loaded_models
    )
    #: seconds an idle model stays loaded (0: unloaded after each request; None: forever)
    keep_alive_s: float | None = field(default_factory=lambda: residency_settings().keep_alive_s)

    def __post_init__(self) -> None:
        self._check_keys()
        if not is_loopback(self.host) and not self.api_keys and not self.role_keys:
            raise UserError(
                f"refusing to listen on {self.host} without API keys: anyone on the network "
                "could use the models; pass --api-key or --role-key (or SHOAL_API_KEYS, "
                "SHOAL_ROLE_KEYS), or bind 127.0.0.1"
            )
        for name in ("max_active", "max_queue", "max_body_bytes", "max_messages"):
            if getattr(self, name) < (0 if name == "max_queue" else 1):
                raise UserError(f"server setting {name} must be positive")
        if self.request_timeout <= 0 or self.load_timeout <= 0:
            raise UserError("server timeouts must be positive")
        if not 0 < self.port < 65536:
            raise UserError(f"port {self.port} is not between 1 and 65535")
        _ = self.residency  # checks the residency limits

    def _check_keys(self) -> None:
        """Keys are non-empty, roles well formed, and no key is both plain and a role's; the
        mapping is frozen like the rest. Messages name roles, never keys."""
        role_keys = MappingProxyType(dict(self.role_keys))
        object.__setattr__(self, "role_keys", role_keys)
        if any(not key.strip() for key in self.api_keys):
            raise UserError("an API key is empty; give each --api-key a value")
        for key, role in role_keys.items():
            if not isinstance(role, str) or not ROLE_NAME.fullmatch(role):
                raise UserError(f"a role key's role must be made of {_ROLE_CHARS}")
            if not key.strip():
                raise UserError(f"the key of role {role!r} is empty")
            if key in self.api_keys:
                raise UserError(
                    f"a key is given both as a plain API key and as a key of role {role!r}; "
                    "give it once (--role-key gives it the role)"
                )

    @property
    def residency(self) -> ResidencySettings:
        return ResidencySettings(self.max_memory_mb, self.max_loaded_models, self.keep_alive_s)

    @property
    def served_models(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((self.default_model, *self.models)))
