"""The OpenAI-compatible HTTP server (layer L5, like the CLI): ``shoal serve``.

Imports FastAPI and uvicorn; nothing below this layer imports it, and ``import shoal`` does not.
"""

from shoal.server.app import create_app
from shoal.server.serve import check_port, serve
from shoal.server.settings import ServerSettings

__all__ = ["ServerSettings", "check_port", "create_app", "serve"]
