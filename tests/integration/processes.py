"""Real OpenAI-compatible servers as child processes, for the integration tier.

- :class:`ShoalServer`: ``shoal serve`` on the default model (its own ``SHOAL_HOME``).
- :class:`LlamaCppServer`: llama-cpp-python's own server (``python -m llama_cpp.server``) on
  the same GGUF file: a second, independent engine that speaks the same API.

Both listen on loopback only, on a free port, and are ready when :meth:`start` returns.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class _Process:
    #: a path that answers 200 once the server can take requests
    ready_path = "/v1/models"

    def __init__(self, home: Path, port: int) -> None:
        self.home = home
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.log = home / f"{type(self).__name__.lower()}-{port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def is_ready(self) -> bool:
        return httpx.get(self.base + self.ready_path, timeout=2).status_code == 200

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(), env=self.env(), stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                if self.is_ready():
                    return
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.3)
        raise AssertionError(f"{self.command()} did not become ready:\n" + self.log.read_text())

    def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class ShoalServer(_Process):
    """``shoal serve --port P`` on the default model."""

    def command(self) -> list[str]:
        return [sys.executable, "-m", "shoal.cli.main", "serve", "--port", str(self.port)]

    def env(self) -> dict[str, str]:
        return {**os.environ, "SHOAL_HOME": str(self.home)}

    def is_ready(self) -> bool:
        return bool(httpx.get(self.base + "/health", timeout=2).json().get("ready"))

    def health(self) -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(self.base + "/health", timeout=5).json()
        return body


class LlamaCppServer(_Process):
    """llama-cpp-python's server on ``model`` (a GGUF path), serving it as ``alias``."""

    def __init__(self, home: Path, port: int, model: Path, alias: str) -> None:
        super().__init__(home, port)
        self.model = model
        self.alias = alias

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(self.model),
            "--model_alias",
            self.alias,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--n_ctx",
            "4096",
        ]
