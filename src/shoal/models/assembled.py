"""GGUF files too big for one PyPI package: shipped in parts, assembled once into the cache.

An :class:`AssembledModel` names an ordered list of parts (a file inside each of several
installed distributions), the size and sha256 of their concatenation, and the file name it gets
in ``cache_dir()/models/``. :meth:`AssembledModel.locate` returns that file, building it the
first time:

1. If the file is there and its sidecar (``<file>.verified.json``) records the expected sha256
   and size and the file's current size and mtime, it is returned at once (no re-hashing).
2. Otherwise, under an exclusive lock (``<file>.lock``, ``fcntl.flock``), the check is repeated
   (another process may just have finished); a file of the right size with a missing or stale
   sidecar is re-hashed, and kept if it matches.
3. Otherwise the parts are found through ``importlib.metadata`` and streamed into a temporary
   file in the same directory while being hashed; size and sha256 are checked, the file is
   fsynced and moved into place with ``os.replace``, then the sidecar is written.

Nothing is downloaded. A progress bar goes to stderr only when stderr is a terminal. A failure
(missing part, wrong hash, full disk, no permission) removes the temporary file and leaves
nothing half-written in place.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import hashlib
import importlib.metadata
import io
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from shoal.exceptions import ModelLoadError, ModelNotInstalledError
from shoal.settings import cache_dir

if sys.platform != "win32":
    import fcntl

__all__ = ["AssembledModel", "ModelPart", "ModelStatus", "file_lock", "write_json_atomic"]

#: bytes copied (and hashed) per read while assembling
CHUNK_SIZE = 8 * 2**20
SIDECAR_SUFFIX = ".verified.json"
LOCK_SUFFIX = ".lock"
_TMP_SUFFIX = ".tmp"

#: ``progress(done_bytes, total_bytes)``, called while assembling
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class ModelStatus:
    """What ``shoal models list`` shows for an alias; computing it never loads or assembles.

    ``path`` is where the file is, or (``ready`` false, ``installed`` true) where it will be
    once assembled. ``detail`` says why it is not installed, or what happens on first use.
    """

    installed: bool
    path: Path | None = None
    size: int | None = None
    ready: bool = False
    detail: str = ""


@dataclass(frozen=True)
class ModelPart:
    """One piece: ``filename`` (a path inside the distribution, as in its RECORD)."""

    distribution: str
    filename: str
    version: str | None = None

    @property
    def requirement(self) -> str:
        return f"{self.distribution}=={self.version}" if self.version else self.distribution


@dataclass(frozen=True)
class _FoundPart:
    part: ModelPart
    path: Path
    version: str
    size: int


@dataclass(frozen=True)
class AssembledModel:
    """A GGUF file concatenated from parts shipped in several PyPI distributions."""

    alias: str
    description: str
    parameters: str
    filename: str
    parts: tuple[ModelPart, ...]
    size: int
    sha256: str
    #: the ``shoal`` extra that installs every part (``pip install 'shoal[extra]'``)
    extra: str | None = None

    # -- where things are ---------------------------------------------------------------

    @property
    def directory(self) -> Path:
        return cache_dir() / "models"

    @property
    def path(self) -> Path:
        """Where the assembled file is (or will be)."""
        return self.directory / self.filename

    @property
    def sidecar(self) -> Path:
        return self.directory / (self.filename + SIDECAR_SUFFIX)

    @property
    def install_command(self) -> str:
        if self.extra:
            return f"pip install 'shoal[{self.extra}]'"
        return self._explicit_install

    @property
    def _explicit_install(self) -> str:
        return "pip install " + " ".join(p.requirement for p in self.parts)

    def _hint(self, parts: tuple[ModelPart, ...] | list[ModelPart] | None = None) -> str:
        explicit = "pip install " + " ".join(p.requirement for p in (parts or self.parts))
        if self.extra:
            return f"install it with: pip install 'shoal[{self.extra}]' (or: {explicit})"
        return f"install it with: {explicit}"

    # -- the registry's interface -------------------------------------------------------

    def locate(self, *, progress: bool | Progress | None = None) -> Path:
        """The verified file, assembled first if need be.

        ``progress``: ``None`` shows a bar on stderr when it is a terminal, ``False`` never,
        ``True`` always, or a callable ``(done, total)``.
        """
        path = self.path
        if self.verified():
            return path
        with self._lock():
            if self.verified():
                return path
            if self._reverify_existing():
                return path
            found = self._find_parts()
            self._assemble(found, _progress_for(self.alias, self.size, progress))
        return path

    def installed(self) -> bool:
        """Whether :meth:`locate` can succeed: the file is verified or every part is there."""
        return self.status().installed

    def status(self) -> ModelStatus:
        if self.verified():
            return ModelStatus(
                installed=True,
                path=self.path,
                size=self.size,
                ready=True,
                detail=f"assembled from {len(self.parts)} packages, sha256 verified",
            )
        try:
            self._find_parts()
        except ModelNotInstalledError as exc:
            if self._unverified_size() == self.size:  # locate() re-hashes it, needing no parts
                return ModelStatus(
                    installed=True,
                    path=self.path,
                    size=self.size,
                    ready=False,
                    detail="assembled earlier, not verified since; hashed on first use",
                )
            return ModelStatus(installed=False, detail=str(exc))
        return ModelStatus(
            installed=True,
            path=self.path,
            size=self.size,
            ready=False,
            detail=(
                f"parts installed, not yet assembled (assembled on first use, "
                f"~{self.size / 1e6:.0f} MB in {self.directory})"
            ),
        )

    # -- verification -------------------------------------------------------------------

    def verified(self) -> bool:
        """Whether the file is in place and its sidecar vouches for it (no hashing)."""
        try:
            stat = self.path.stat()
            record = json.loads(self.sidecar.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return (
            isinstance(record, dict)
            and record.get("sha256") == self.sha256
            and record.get("size") == self.size == stat.st_size
            and record.get("mtime_ns") == stat.st_mtime_ns
        )

    def _unverified_size(self) -> int | None:
        try:
            return self.path.stat().st_size
        except OSError:
            return None

    def _reverify_existing(self) -> bool:
        """A file of the right size without a valid sidecar: hash it; keep it if it matches."""
        path = self.path
        try:
            if path.stat().st_size != self.size:
                self._discard(path)
                return False
            digest = hashlib.sha256()
            with path.open("rb") as source:
                _copy(source, None, digest, self.size, None)
        except OSError:
            self._discard(path)
            return False
        if digest.hexdigest() != self.sha256:
            self._discard(path)
            return False
        with contextlib.suppress(OSError):  # a read-only cache: still good, hashed next time
            self._write_sidecar(self._installed_versions())
        return True

    def _discard(self, path: Path) -> None:
        for stale in (path, self.sidecar):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()

    def _write_sidecar(self, parts: list[dict[str, Any]]) -> None:
        stat = self.path.stat()
        record = {
            "alias": self.alias,
            "file": self.filename,
            "sha256": self.sha256,
            "size": self.size,
            "mtime_ns": stat.st_mtime_ns,
            "verified_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "parts": parts,
        }
        write_json_atomic(self.sidecar, record)

    def _installed_versions(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for part in self.parts:
            try:
                version: str | None = importlib.metadata.distribution(part.distribution).version
            except importlib.metadata.PackageNotFoundError:
                version = None
            rows.append(
                {"distribution": part.distribution, "version": version, "file": part.filename}
            )
        return rows

    # -- the parts ----------------------------------------------------------------------

    def _find_parts(self) -> list[_FoundPart]:
        """Every part's installed file, or :class:`ModelNotInstalledError` naming the gaps."""
        found: list[_FoundPart] = []
        missing: list[ModelPart] = []
        broken: list[ModelPart] = []
        for part in self.parts:
            try:
                dist = importlib.metadata.distribution(part.distribution)
            except importlib.metadata.PackageNotFoundError:
                missing.append(part)
                continue
            path = _file_in(dist, part.filename)
            if path is None:
                broken.append(part)
                continue
            found.append(_FoundPart(part, path, dist.version, path.stat().st_size))
        if missing:
            names = ", ".join(p.distribution for p in missing)
            raise ModelNotInstalledError(
                f"model {self.alias!r} is not installed: {len(missing)} of its "
                f"{len(self.parts)} part packages missing ({names}); {self._hint(missing)}"
            )
        if broken:
            names = ", ".join(f"{p.filename} (in {p.distribution})" for p in broken)
            raise ModelNotInstalledError(
                f"model {self.alias!r}: {names} missing from the installed package; "
                f"reinstall with: pip install --force-reinstall "
                + " ".join(p.requirement for p in broken)
            )
        total = sum(f.size for f in found)
        if total != self.size:
            raise ModelNotInstalledError(
                f"model {self.alias!r}: its installed parts add up to {total} bytes, expected "
                f"{self.size} ({self._versions(found)}); reinstall with: "
                f"pip install --force-reinstall {' '.join(p.requirement for p in self.parts)}"
            )
        return found

    @staticmethod
    def _versions(found: list[_FoundPart]) -> str:
        return ", ".join(f"{f.part.distribution} {f.version}" for f in found)

    # -- assembly -----------------------------------------------------------------------

    def _assemble(self, found: list[_FoundPart], progress: Progress | None) -> None:
        directory = self.directory
        try:
            directory.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(directory).free
        except OSError as exc:
            raise self._os_error(exc) from exc
        if free < self.size:
            raise ModelLoadError(
                f"cannot assemble model {self.alias!r} in {directory}: it needs "
                f"{_mb(self.size)} free, only {_mb(free)} left; free some space or set "
                f"SHOAL_CACHE_DIR to another directory"
            )
        self._remove_leftovers()
        digest = hashlib.sha256()
        tmp: str | None = None
        try:
            fd, tmp = tempfile.mkstemp(
                dir=directory, prefix=f".{self.filename}.", suffix=_TMP_SUFFIX
            )
            with os.fdopen(fd, "wb") as out:
                done = 0
                for item in found:
                    with item.path.open("rb") as source:
                        done = _copy(source, out, digest, self.size, progress, done)
                out.flush()
                os.fsync(out.fileno())
            written = os.stat(tmp).st_size
            got = digest.hexdigest()
            if written != self.size or got != self.sha256:
                raise ModelNotInstalledError(
                    f"model {self.alias!r}: the assembled file does not match; expected "
                    f"{self.size} bytes, sha256 {self.sha256}; got {written} bytes, sha256 "
                    f"{got} (parts: {self._versions(found)}); reinstall them with: "
                    f"pip install --force-reinstall " + " ".join(p.requirement for p in self.parts)
                )
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.path)
            tmp = None
        except OSError as exc:
            raise self._os_error(exc) from exc
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                if isinstance(progress, _Bar):
                    progress.abort()
        parts = [
            {"distribution": f.part.distribution, "version": f.version, "file": f.part.filename}
            for f in found
        ]
        try:
            self._write_sidecar(parts)
        except OSError as exc:
            raise self._os_error(exc) from exc

    def _os_error(self, exc: OSError) -> ModelLoadError:
        reason = exc.strerror or str(exc)
        if exc.filename:
            reason += f" ({exc.filename})"
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            fix = (
                f"it needs {_mb(self.size)}; free some space or set SHOAL_CACHE_DIR to "
                f"another directory"
            )
        else:
            fix = "set SHOAL_CACHE_DIR to a writable directory"
        return ModelLoadError(
            f"cannot assemble model {self.alias!r} in {self.directory}: {reason}; {fix}"
        )

    def _remove_leftovers(self) -> None:
        """Temporary files of an assembly that was killed. Only called under the lock."""
        if not _HAVE_FLOCK:
            return  # without a lock another process may be writing one right now
        for leftover in self.directory.glob(f".{self.filename}.*{_TMP_SUFFIX}"):
            with contextlib.suppress(OSError):
                leftover.unlink()

    def _lock(self) -> contextlib.AbstractContextManager[None]:
        """Exclusive across threads and processes while checking and assembling."""
        return file_lock(
            self.directory / (self.filename + LOCK_SUFFIX),
            waiting=f"another process assembling {self.alias}",
        )


_HAVE_FLOCK = sys.platform != "win32"
_thread_locks: dict[Path, threading.Lock] = {}
_thread_locks_guard = threading.Lock()


def _thread_lock(path: Path) -> threading.Lock:
    with _thread_locks_guard:
        return _thread_locks.setdefault(path, threading.Lock())


def _file_in(dist: importlib.metadata.Distribution, filename: str) -> Path | None:
    for entry in dist.files or ():
        if str(entry) == filename or (entry.name == filename and "/" not in filename):
            path = Path(str(dist.locate_file(entry)))
            if path.is_file():
                return path
    return None


def _copy(
    source: io.BufferedIOBase,
    out: IO[bytes] | None,
    digest: Any,
    total: int,
    progress: Progress | None,
    done: int = 0,
) -> int:
    buffer = bytearray(CHUNK_SIZE)
    view = memoryview(buffer)
    while n := source.readinto(buffer):
        chunk = view[:n]
        digest.update(chunk)
        if out is not None:
            out.write(chunk)
        done += n
        if progress is not None:
            progress(done, total)
    return done


def _mb(size: int) -> str:
    return f"{size / 1e6:.0f} MB"


class _Bar:
    """``shoal: assembling alias [#####.....] 52% 256/491 MB`` on stderr, redrawn in place."""

    def __init__(self, alias: str, stream: IO[str]) -> None:
        self.alias = alias
        self.stream = stream
        self.started = time.monotonic()
        self.shown = -1

    def __call__(self, done: int, total: int) -> None:
        percent = 100 * done // total if total else 100
        if percent == self.shown:
            return
        self.shown = percent
        filled = percent // 4
        bar = "#" * filled + "." * (25 - filled)
        line = f"\rshoal: assembling {self.alias} [{bar}] {percent:3d}% {_mb(done)}/{_mb(total)}"
        if done >= total:
            line += f" in {time.monotonic() - self.started:.1f} s\n"
        self.stream.write(line)
        self.stream.flush()

    def abort(self) -> None:
        """End a bar left half-drawn by a failure."""
        if 0 <= self.shown < 100:
            self.stream.write("\n")
            self.stream.flush()


def _progress_for(alias: str, total: int, choice: bool | Progress | None) -> Progress | None:
    if callable(choice):
        return choice
    stream = sys.stderr
    if choice is None:
        choice = stream is not None and stream.isatty()
    return _Bar(alias, stream) if choice and stream is not None else None


def write_json_atomic(path: Path, record: dict[str, Any]) -> None:
    """Write ``record`` as JSON to ``path`` so that a reader sees the old file or the new one,
    never half of it (a temporary file in the same directory, then ``os.replace``)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(record, out, indent=2)
            out.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def file_lock(lock_path: Path, *, waiting: str) -> Iterator[None]:
    """Exclusive across threads (a lock per path) and processes (``flock`` on ``lock_path``)
    while one file is checked and written; says ``shoal: waiting for {waiting}...`` on a
    terminal when another holder has it. Without ``flock``, or when the lock file cannot be
    created (a read-only cache: a verified file there is still usable, and writing fails with
    its own clear error), only threads are excluded; a temporary file and ``os.replace`` still
    keep the result whole."""
    with _thread_lock(lock_path):
        if not _HAVE_FLOCK:
            yield
            return
        try:
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            yield
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if sys.stderr is not None and sys.stderr.isatty():
                    print(f"shoal: waiting for {waiting}...", file=sys.stderr, flush=True)
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock
