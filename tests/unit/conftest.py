"""The unit tier: no weights, no network. Real model requests are switched off here."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal.models import allow_model_requests
from shoal.observability import configure


@pytest.fixture(autouse=True)
def _audit_log_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The CLI writes an audit log (default: in the user's data directory); keep tests' own."""
    monkeypatch.setenv("SHOAL_AUDIT_LOG", str(tmp_path / "audit.jsonl"))
    yield
    configure(metrics=False)  # a command's sinks end with its test


@pytest.fixture(autouse=True)
def _no_real_models() -> Iterator[None]:
    with allow_model_requests(False):
        yield
