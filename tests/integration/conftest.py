"""The integration tier: the real embedded default model, loaded once per session.

Tests here assert invariants (a call parses and validates, the tool is declared, the loop
stops, a thread survives a restart), not prose. Greedy decoding keeps them repeatable.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal.models import LlamaCppModel, resolve_model
from shoal.observability import configure

REPO = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.model)


@pytest.fixture(autouse=True)
def _audit_log_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``shoal`` commands write an audit log (default: in the user's data directory)."""
    monkeypatch.setenv("SHOAL_AUDIT_LOG", str(tmp_path / "audit.jsonl"))
    yield
    configure(metrics=False)  # a command's sinks end with its test


@pytest.fixture(scope="session")
def smollm() -> LlamaCppModel:
    model = resolve_model("smollm2-135m")
    assert isinstance(model, LlamaCppModel)
    model.load()
    return model


@pytest.fixture
def support_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    db = tmp_path / "support.db"
    monkeypatch.setenv("SHOAL_SUPPORT_DB", str(db))
    return db
