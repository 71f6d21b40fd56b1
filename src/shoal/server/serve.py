"""Running the server: uvicorn with graceful shutdown.

On SIGINT/SIGTERM uvicorn stops accepting connections and gives in-flight requests
``shutdown_timeout`` seconds to finish; then the app's shutdown stops the engine workers and
closes the thread store (SQLite commits are atomic, so nothing is left half-written).
"""

from __future__ import annotations

import errno
import socket

import uvicorn

from shoal.exceptions import UserError
from shoal.server.app import create_app
from shoal.server.settings import ServerSettings

__all__ = ["check_port", "serve"]


def check_port(host: str, port: int) -> None:
    """Fail with a clear message if ``host:port`` cannot be bound (before loading anything)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UserError(
                    f"port {port} on {host} is already in use; pick another with --port"
                ) from None
            raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def serve(settings: ServerSettings, *, log_level: str = "info") -> None:
    """Serve until interrupted."""
    check_port(settings.host, settings.port)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        timeout_graceful_shutdown=int(settings.shutdown_timeout),
        server_header=False,
    )
    uvicorn.Server(config).run()
