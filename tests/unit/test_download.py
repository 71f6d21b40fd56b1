"""fetch() against a real HTTP server on loopback that misbehaves on purpose.

The served file is a small real GGUF file (``write_gguf``), or random bytes where a test needs
the body to arrive in several pieces. Backoff is set to zero so retries cost no time.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shoal.exceptions import DownloadError, IntegrityError, OfflineError, UserError
from shoal.models import download
from shoal.models.download import PART_SUFFIX, fetch, verified
from shoal.models.gguf_info import read_gguf_info
from tests.unit.download_helpers import FileServer, Served, write_gguf

PATH = "/models/tiny.gguf"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return write_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf").read_bytes()


@pytest.fixture
def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(autouse=True)
def _environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SHOAL_OFFLINE", "HF_HUB_OFFLINE", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.setenv("SHOAL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(download, "RETRY_BACKOFF", 0.0)


@pytest.fixture
def server() -> Iterator[FileServer]:
    with FileServer() as running:
        yield running


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    return tmp_path / "cache" / "models" / "tiny.gguf"


def _part(dest: Path) -> Path:
    return dest.with_name(dest.name + PART_SUFFIX)


def _leftovers(dest: Path) -> list[str]:
    """What a failed download left next to ``dest`` (the lock file is meant to stay)."""
    if not dest.parent.exists():
        return []
    return sorted(p.name for p in dest.parent.iterdir() if not p.name.endswith(".lock"))


# -- the ordinary case --------------------------------------------------------------------------


def test_downloads_verifies_and_records_the_file(
    server: FileServer, dest: Path, data: bytes, sha: str
) -> None:
    server.files[PATH] = Served(data)

    path = fetch(server.url(PATH), dest, sha256=sha, progress=False)

    assert path == dest
    assert dest.read_bytes() == data
    assert not _part(dest).exists()
    record = json.loads(dest.with_name(dest.name + ".verified.json").read_text())
    assert (record["sha256"], record["size"], record["url"]) == (sha, len(data), server.url(PATH))
    assert verified(dest, sha256=sha)
    assert "range" not in server.gets(PATH)[0].headers
    assert read_gguf_info(dest).architecture == "llama"


def test_a_verified_file_is_returned_without_the_network(
    server: FileServer, dest: Path, data: bytes, sha: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.files[PATH] = Served(data, etag=sha)
    fetch(server.url(PATH), dest, progress=False)
    monkeypatch.setenv("SHOAL_OFFLINE", "1")

    assert fetch(server.url(PATH), dest, progress=False) == dest  # same url, sidecar matches
    assert fetch("http://elsewhere.invalid/x", dest, sha256=sha, progress=False) == dest
    assert len(server.gets(PATH)) == 1


def test_a_file_already_in_place_is_hashed_instead_of_downloaded(
    server: FileServer, dest: Path, data: bytes, sha: str
) -> None:
    dest.parent.mkdir(parents=True)
    dest.write_bytes(data)

    fetch(server.url(PATH), dest, sha256=sha, progress=False)

    assert server.requests == []
    assert verified(dest, sha256=sha)


def test_progress_goes_to_a_callback(server: FileServer, dest: Path, data: bytes, sha: str) -> None:
    server.files[PATH] = Served(data)
    calls: list[tuple[int, int | None]] = []

    fetch(
        server.url(PATH), dest, sha256=sha, progress=lambda done, total: calls.append((done, total))
    )

    assert calls[0] == (0, len(data))
    assert calls[-1] == (len(data), len(data))
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_bar_is_drawn_on_a_terminal_and_retries_are_noted(
    server: FileServer, dest: Path, data: bytes, sha: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.files[PATH] = Served(data, cuts=[1000])
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)

    fetch(server.url(PATH), dest, sha256=sha, retries=1)

    shown = terminal.getvalue()
    assert "tiny.gguf" in shown
    assert "100%" in shown
    assert "retrying in 0 s (1 of 1)" in shown


def test_no_bar_when_stderr_is_not_a_terminal(
    server: FileServer, dest: Path, data: bytes, sha: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.files[PATH] = Served(data, cuts=[1000])
    pipe = io.StringIO()
    monkeypatch.setattr(sys, "stderr", pipe)

    fetch(server.url(PATH), dest, sha256=sha, retries=1)

    assert pipe.getvalue() == ""


def test_two_fetches_of_one_file_do_not_interleave(
    server: FileServer, dest: Path, data: bytes, sha: str
) -> None:
    server.files[PATH] = Served(data)
    errors: list[BaseException] = []

    def pull() -> None:
        try:
            fetch(server.url(PATH), dest, sha256=sha, progress=False)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=pull) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert len(server.gets(PATH)) == 1  # the second found the first one's verified file
    assert dest.read_bytes() == data


# -- resuming -----------------------------------------------------------------------------------


def test_a_cut_transfer_is_resumed_with_range(
    server: FileServer, dest: Path, data: bytes, sha: str
) -> None:
    half = len(data) // 2
    server.files[PATH] = Served(data, cuts=[half])

    fetch(server.url(PATH), dest, sha256=sha, progress=False, retries=1)

    first, second = server.gets(PATH)
    assert "range" not in first.headers
    assert second.headers["range"] == f"bytes={half}-"
    assert dest.read_bytes() == data


def test_a_part_left_by_an_earlier_run_is_resumed(
    server: FileServer, dest: Path, data: bytes, sha: str
) -> None:
    third = len(data) // 3
    server.files[PATH] = Served(data, cuts=[third])

    with pytest.raises(DownloadError, match="run again to resume") as caught:
        fetch(server.url(PATH), dest, sha256=sha, progress=False, retries=0)

    assert not isinstance(caught.value, (OfflineError, IntegrityError))
    assert _part(dest).read_bytes() == data[:third]
    assert not dest.exists()

    fetch(server.url(PATH), dest, sha256=sha, progress=False, retries=0)

    assert server.gets(PATH)[-1].headers["range"] == f"bytes={third}-"
    assert dest.read_bytes() == data
    assert not _part(dest).exists()


def test_ctrl_c_leaves_the_part_for_the_next_run(
    server: FileServer, dest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    payload = os.urandom(2 * 2**20)
    digest = hashlib.sha256(payload).hexdigest()
    server.files[PATH] = Served(payload)

    def interrupt(done: int, total: int | None) -> None:
        if done:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fetch(server.url(PATH), dest, sha256=digest, progress=interrupt)

    kept = _part(dest).stat().st_size
    assert 0 < kept <= len(payload)
    assert not dest.exists()

    fetch(server.url(PATH), dest, sha256=digest, progress=False)

    assert server.gets(PATH)[-1].headers["range"] == f"bytes={kept}-"
    assert dest.read_bytes() == payload


def test_a_complete_part_is_finished_on_416(
    server: FileServer, dest: Path, data: bytes, sha: str
) -> None:
    server.files[PATH] = Served(data)
    dest.parent.mkdir(parents=True)
    _part(dest).write_bytes(data)

    fetch(server.url(PATH), dest, sha256=sha, progress=False)

    assert server.gets(PATH)[0].headers["range"] == f"bytes={len(data)}-"
    assert dest.read_bytes() == data


def test_a_server_that_ignores_range_makes_it_start_over(
    server: FileServer, dest: Path, data: bytes, sha: str
) -> None:
    server.files[PATH] = Served(data, ranges=False)
    dest.parent.mkdir(parents=True)
    _part(dest).write_bytes(b"stale bytes from another file")

    fetch(server.url(PATH), dest, sha256=sha, progress=False)

    assert server.gets(PATH)[0].headers["range"] == "bytes=29-"
    assert dest.read_bytes() == data


def test_a_corrupt_part_fails_the_hash_and_is_deleted(
    server: FileServer, dest: Path, data: bytes, sha: str
) -> None:
    server.files[PATH] = Served(data)
    dest.parent.mkdir(parents=True)
    _part(dest).write_bytes(b"\0" * 100)

    with pytest.raises(IntegrityError, match="run again to fetch it afresh"):
        fetch(server.url(PATH), dest, sha256=sha, progress=False)

    assert _leftovers(dest) == []
    fetch(server.url(PATH), dest, sha256=sha, progress=False)
    assert dest.read_bytes() == data


# -- verification -------------------------------------------------------------------------------


def test_a_wrong_sha256_deletes_the_download(server: FileServer, dest: Path, data: bytes) -> None:
    server.files[PATH] = Served(data)
    wrong = "0" * 64

    with pytest.raises(IntegrityError) as caught:
        fetch(server.url(PATH), dest, sha256=wrong, progress=False)

    message = str(caught.value)
    assert f"expected sha256 {wrong} (given)" in message
    assert f"got {hashlib.sha256(data).hexdigest()}" in message
    assert _leftovers(dest) == []


def test_a_wrong_etag_from_the_server_is_caught(
    server: FileServer, dest: Path, data: bytes
) -> None:
    server.files[PATH] = Served(data, etag="f" * 64)

    with pytest.raises(IntegrityError, match="the server's ETag"):
        fetch(server.url(PATH), dest, progress=False)

    assert _leftovers(dest) == []


def test_the_sha256_comes_from_x_linked_etag_across_a_redirect(
    server: FileServer, dest: Path, data: bytes, sha: str
) -> None:
    server.redirects["/org/repo/resolve/main/tiny.gguf"] = (
        "/cdn/blob?signature=abc",
        {"X-Linked-Etag": f'"{sha}"', "X-Linked-Size": str(len(data)), "ETag": '"weak-ish"'},
    )
    server.files["/cdn/blob"] = Served(data, etag="d41d8cd98f00b204e9800998ecf8427e")  # an md5

    fetch(server.url("/org/repo/resolve/main/tiny.gguf"), dest, progress=False)

    assert dest.read_bytes() == data
    record = json.loads(dest.with_name(dest.name + ".verified.json").read_text())
    assert (record["sha256"], record["sha256_source"]) == (sha, "the server's X-Linked-Etag")


@pytest.mark.parametrize(
    ("etag_right", "size_right", "said"),
    [(False, True, "X-Linked-Etag"), (True, False, "X-Linked-Size")],
)
def test_a_wrong_linked_etag_or_size_is_caught(
    server: FileServer,
    dest: Path,
    data: bytes,
    sha: str,
    etag_right: bool,
    size_right: bool,
    said: str,
) -> None:
    linked = {
        "X-Linked-Etag": f'"{sha if etag_right else "a" * 64}"',
        "X-Linked-Size": str(len(data) if size_right else len(data) + 1),
    }
    server.redirects["/resolve/tiny.gguf"] = ("/cdn/blob", linked)
    server.files["/cdn/blob"] = Served(data)

    with pytest.raises(IntegrityError, match=f"\\(the server's {said}\\)"):
        fetch(server.url("/resolve/tiny.gguf"), dest, progress=False)

    assert _leftovers(dest) == []


def test_without_a_known_checksum_the_download_is_refused(
    server: FileServer, dest: Path, data: bytes
) -> None:
    server.files[PATH] = Served(data)

    with pytest.raises(IntegrityError, match=r"no checksum is known.*--no-verify"):
        fetch(server.url(PATH), dest, progress=False)

    assert _leftovers(dest) == []
    fetch(server.url(PATH), dest, progress=False, verify=False)
    assert dest.read_bytes() == data
    assert not dest.with_name(dest.name + ".verified.json").exists()  # nothing was verified


def test_a_size_the_server_contradicts_is_refused_before_the_body(
    server: FileServer, dest: Path, data: bytes, sha: str
) -> None:
    server.files[PATH] = Served(data)

    with pytest.raises(IntegrityError, match=f"offers {len(data)} bytes, expected {len(data) + 1}"):
        fetch(server.url(PATH), dest, sha256=sha, size=len(data) + 1, progress=False)

    assert _leftovers(dest) == []


def test_a_malformed_sha256_argument_is_a_user_error(dest: Path) -> None:
    with pytest.raises(UserError, match="64 hexadecimal digits"):
        fetch("http://127.0.0.1:9/x", dest, sha256="abc123")


# -- HTTP errors and retries --------------------------------------------------------------------


def test_404_is_a_download_error_naming_the_url(server: FileServer, dest: Path) -> None:
    with pytest.raises(DownloadError, match="HTTP 404") as caught:
        fetch(server.url("/missing.gguf"), dest, progress=False)

    assert server.url("/missing.gguf") in str(caught.value)
    assert type(caught.value) is DownloadError
    assert len(server.requests) == 1  # not retried


@pytest.mark.parametrize("status", [401, 403])
def test_access_denied_mentions_hf_token(
    server: FileServer, dest: Path, data: bytes, status: int
) -> None:
    server.files[PATH] = Served(data, statuses=[status])

    with pytest.raises(DownloadError, match=f"HTTP {status}.*HF_TOKEN"):
        fetch(server.url(PATH), dest, progress=False)


def test_server_errors_and_429_are_retried(
    server: FileServer, dest: Path, data: bytes, sha: str
) -> None:
    server.files[PATH] = Served(data, statuses=[500, 503, 429])

    fetch(server.url(PATH), dest, sha256=sha, progress=False, retries=3)

    assert len(server.gets(PATH)) == 4
    assert dest.read_bytes() == data


def test_retries_run_out(server: FileServer, dest: Path, data: bytes, sha: str) -> None:
    server.files[PATH] = Served(data, statuses=[502] * 5)

    with pytest.raises(DownloadError, match="failed 3 times in a row, last: HTTP 502"):
        fetch(server.url(PATH), dest, sha256=sha, progress=False, retries=2)

    assert len(server.gets(PATH)) == 3


def test_headers_are_sent_with_every_request(
    server: FileServer, dest: Path, data: bytes, sha: str
) -> None:
    server.files[PATH] = Served(data, statuses=[500])

    fetch(server.url(PATH), dest, sha256=sha, headers={"Authorization": "Bearer t"}, progress=False)

    assert [seen.headers["authorization"] for seen in server.gets(PATH)] == ["Bearer t"] * 2


# -- offline --------------------------------------------------------------------------------------


@pytest.mark.parametrize("variable", ["SHOAL_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_mode_fails_before_any_connection(
    server: FileServer, dest: Path, sha: str, variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, "1")

    with pytest.raises(OfflineError, match=f"offline mode is on \\({variable}=1\\)"):
        fetch(server.url(PATH), dest, sha256=sha, progress=False)

    assert server.requests == []


def test_a_refused_connection_is_offline_at_once(dest: Path, sha: str) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()

    with pytest.raises(OfflineError) as caught:
        fetch(f"http://127.0.0.1:{port}/m.gguf", dest, sha256=sha, progress=False, retries=3)

    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert message.startswith("cannot reach 127.0.0.1: ")
    assert "needs the network to download, or install it from a package" in message
    assert "Traceback" not in message


# -- the disk -------------------------------------------------------------------------------------


def test_too_little_free_space_is_refused_with_the_fix(
    server: FileServer, dest: Path, data: bytes, sha: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.files[PATH] = Served(data)
    real = shutil.disk_usage

    def tiny(path: Any) -> Any:
        return real(path)._replace(free=10)

    monkeypatch.setattr(shutil, "disk_usage", tiny)

    with pytest.raises(DownloadError, match=r"not enough space.*SHOAL_CACHE_DIR"):
        fetch(server.url(PATH), dest, sha256=sha, progress=False)

    assert not dest.exists()


def test_an_unwritable_destination_is_a_download_error(
    server: FileServer, tmp_path: Path, data: bytes, sha: str
) -> None:
    server.files[PATH] = Served(data)
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")

    with pytest.raises(DownloadError, match="cannot write"):
        fetch(server.url(PATH), blocker / "tiny.gguf", sha256=sha, progress=False)
