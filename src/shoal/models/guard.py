"""A process-wide switch that forbids loading or querying real models.

The unit test tier turns it off (``tests/unit/conftest.py``) so that no test there can reach a
real engine by accident; the test doubles in :mod:`shoal.models.test` ignore it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from shoal.exceptions import ModelError

__all__ = ["allow_model_requests", "check_model_requests_allowed", "model_requests_allowed"]

_allowed = True


def model_requests_allowed() -> bool:
    return _allowed


@contextlib.contextmanager
def allow_model_requests(allowed: bool) -> Iterator[None]:
    """Within the block, real model loads and requests are allowed or not."""
    global _allowed
    previous, _allowed = _allowed, allowed
    try:
        yield
    finally:
        _allowed = previous


def check_model_requests_allowed(name: str) -> None:
    if not _allowed:
        raise ModelError(f"real model requests are disabled here (tried to use {name})")
