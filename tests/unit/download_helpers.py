"""A file server on loopback whose misbehaviour tests control, and a small real GGUF file.

:class:`FileServer` runs ``http.server`` in a thread on ``127.0.0.1`` (no other network). Each
path serves a :class:`Served` file (bytes, or a file on disk for big ones) with
``Range: bytes=N-`` support, and can be told to answer error statuses first, cut the connection
after some bytes, ignore ranges, or send any header (a wrong ``ETag``). ``redirects`` send a
``302`` with extra headers, as Hugging Face does with ``X-Linked-Etag``. Every request is
recorded in ``requests`` (path and lower-cased headers) so tests can check what was asked.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

__all__ = ["FileServer", "Seen", "Served", "write_gguf"]

_SEND_CHUNK = 64 * 1024


@dataclass
class Served:
    """One file the server offers, and how it misbehaves."""

    data: bytes | Path
    #: sent as ``ETag: "<etag>"``
    etag: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    #: whether ``Range`` is honoured (``206``); if not, every answer is the whole file (``200``)
    ranges: bool = True
    #: statuses answered (with an empty body) before the file is served, one per request
    statuses: list[int] = field(default_factory=list)
    #: for successive answers with a body: bytes sent before the connection is cut
    cuts: list[int] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.data) if isinstance(self.data, bytes) else self.data.stat().st_size


@dataclass(frozen=True)
class Seen:
    """A request the server received."""

    path: str
    headers: dict[str, str]


class FileServer:
    """``with FileServer() as server: server.files["/a"] = Served(b"...")``."""

    def __init__(self) -> None:
        self.files: dict[str, Served] = {}
        #: path -> (location, extra headers of the 302)
        self.redirects: dict[str, tuple[str, dict[str, str]]] = {}
        self.requests: list[Seen] = []
        self.lock = threading.Lock()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    def url(self, path: str) -> str:
        assert self._httpd is not None, "the server is not running"
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}{path}"

    def gets(self, path: str) -> list[Seen]:
        with self.lock:
            return [seen for seen in self.requests if seen.path == path]

    def __enter__(self) -> FileServer:
        httpd = _Server(("127.0.0.1", 0), _Handler)
        httpd.owner = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._httpd is not None
        assert self._thread is not None
        self._httpd.shutdown()
        self._httpd.server_close()  # joins the handler threads
        self._thread.join()


class _Server(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True
    owner: FileServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that went away mid-answer is expected here


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        try:
            self._answer()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _answer(self) -> None:
        owner = self.server.owner
        path = urlsplit(self.path).path
        with owner.lock:
            owner.requests.append(Seen(path, {k.lower(): v for k, v in self.headers.items()}))
            redirect = owner.redirects.get(path)
            served = owner.files.get(path)
            status = served.statuses.pop(0) if served and served.statuses else None
        if redirect is not None:
            location, extra = redirect
            self._empty(302, {"Location": location, **extra})
            return
        if served is None:
            self._empty(404)
            return
        if status is not None:
            self._empty(status, {"Retry-After": "0"} if status in (429, 503) else {})
            return

        size = served.size
        start = 0
        asked = self.headers.get("Range")
        if asked and served.ranges:
            match = re.fullmatch(r"bytes=(\d+)-", asked)
            assert match, f"unexpected Range: {asked}"
            start = int(match.group(1))
            if start >= size:
                self._empty(416, {"Content-Range": f"bytes */{size}"})
                return
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(size - start))
        self.send_header("Accept-Ranges", "bytes")
        if start:
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        if served.etag:
            self.send_header("ETag", f'"{served.etag}"')
        for name, value in served.headers.items():
            self.send_header(name, value)
        self.end_headers()
        with owner.lock:
            cut = served.cuts.pop(0) if served.cuts else None
        self._body(served, start, size if cut is None else min(size, start + cut))
        if cut is not None:
            self.close_connection = True

    def _body(self, served: Served, start: int, end: int) -> None:
        if isinstance(served.data, bytes):
            view = memoryview(served.data)
            for offset in range(start, end, _SEND_CHUNK):
                self.wfile.write(view[offset : min(end, offset + _SEND_CHUNK)])
        else:
            with served.data.open("rb") as source:
                source.seek(start)
                remaining = end - start
                while remaining > 0 and (chunk := source.read(min(_SEND_CHUNK, remaining))):
                    self.wfile.write(chunk)
                    remaining -= len(chunk)
        self.wfile.flush()

    def _empty(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()


def write_gguf(
    path: Path,
    *,
    name: str = "Tiny Test Model",
    context_length: int = 4096,
    file_type: int = 7,
    chat_template: str | None = "{% for m in messages %}{{ m.content }}{% endfor %}",
    parameter_count: int | None = None,
) -> Path:
    """A small but real GGUF file (llama architecture, two float32 tensors, 16,448 values)."""
    import numpy as np
    from gguf import GGUFWriter

    writer = GGUFWriter(path, "llama")
    writer.add_name(name)
    writer.add_context_length(context_length)
    writer.add_file_type(file_type)
    if chat_template is not None:
        writer.add_chat_template(chat_template)
    if parameter_count is not None:
        writer.add_uint64("general.parameter_count", parameter_count)
    embeddings = np.linspace(-1.0, 1.0, 256 * 64, dtype=np.float32).reshape(256, 64)
    writer.add_tensor("token_embd.weight", embeddings)
    writer.add_tensor("output_norm.weight", np.ones(64, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
