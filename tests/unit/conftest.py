"""The unit tier: no weights, no network. Real model requests are switched off here."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shoal.models import allow_model_requests


@pytest.fixture(autouse=True)
def _no_real_models() -> Iterator[None]:
    with allow_model_requests(False):
        yield
