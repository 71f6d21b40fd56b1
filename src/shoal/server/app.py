"""The FastAPI application behind ``shoal serve``.

:func:`create_app` wires the routes (chat completions, responses, threads, models, health,
metrics) to one :class:`~shoal.server.state.ServerState`. Around them, one ASGI middleware
(:class:`_Edge`) does what every request needs, in this order: count it (route template, status,
latency), check the Bearer key when keys are configured (``/health`` stays open for probes),
record the role the key carries (:mod:`shoal.server.auth`), and cap the request body. On
start-up the default model begins loading in the background, so ``/health`` answers at once and
reports ``loading`` until the model is ``ready``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shoal import __version__
from shoal.exceptions import UserError
from shoal.models import Model
from shoal.server import approvals, chat, responses, threads
from shoal.server.auth import KeyTable, set_role
from shoal.server.engines import EnginePool, ModelFactory
from shoal.server.errors import ApiError, BodyTooLargeError, error_body, install_error_handlers
from shoal.server.metrics import CONTENT_TYPE_LATEST, ServerMetrics
from shoal.server.response_store import MEMORY, ResponseStore
from shoal.server.settings import ServerSettings
from shoal.server.state import HostedAgent, ServerState
from shoal.server.systems import host_systems
from shoal.settings import data_dir
from shoal.spec import load_agent_spec, load_deployment
from shoal.threads import InMemoryThreadStore, SQLiteThreadStore, ThreadStore

__all__ = ["create_app"]

log = logging.getLogger("shoal.server")

_OPEN_PATHS = ("/health",)


def create_app(
    settings: ServerSettings | None = None,
    *,
    store: ThreadStore | None = None,
    factory: ModelFactory | None = None,
    preload: bool = True,
) -> FastAPI:
    """The server application. ``factory`` replaces how models are made (tests pass
    in-process test models); ``preload=False`` leaves the default model to its first request."""
    settings = settings or ServerSettings()
    metrics = ServerMetrics()
    pool = EnginePool(
        settings.served_models,
        metrics=metrics,
        max_active=settings.max_active,
        max_queue=settings.max_queue,
        isolate=settings.isolate,
        load_timeout=settings.load_timeout,
        factory=factory,
        residency=settings.residency,
    )
    db = settings.database or data_dir() / "server.db"
    threads_store = store if store is not None else SQLiteThreadStore(db)
    state = ServerState(
        settings=settings,
        pool=pool,
        store=threads_store,
        metrics=metrics,
        # stored responses share the database file; in memory when the threads are
        responses=ResponseStore(MEMORY if isinstance(threads_store, InMemoryThreadStore) else db),
    )
    if settings.deployment is not None:
        deployment = load_deployment(settings.deployment)
        for name, model in deployment.build_models(resolve=pool.make_model).items():
            pool.add_named(name, model)
    state.agents = _hosted_agents(state)
    host_systems(state)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loading: asyncio.Task[None] | None = None
        if preload:
            loading = asyncio.create_task(_preload(state))
        try:
            yield
        finally:
            if loading is not None and not loading.done():
                loading.cancel()
            await pool.close()
            await state.store.close()
            await state.responses.close()

    app = FastAPI(
        title="Shoal",
        version=__version__,
        description="OpenAI-compatible API for agents on small local models.",
        lifespan=lifespan,
    )
    app.state.shoal = state
    install_error_handlers(app)
    app.include_router(chat.router)
    app.include_router(responses.router)
    app.include_router(threads.router)
    app.include_router(approvals.router)
    _add_service_routes(app)
    app.add_middleware(_Edge, state=state)
    return app


def _hosted_agents(state: ServerState) -> dict[str, HostedAgent]:
    agents: dict[str, HostedAgent] = {}
    for path in state.settings.agent_specs:
        spec = load_agent_spec(path)
        if spec.name in agents:
            raise UserError(f"two agent specs are named {spec.name!r} ({path})")
        if spec.name in state.pool.servable():
            raise UserError(f"agent {spec.name!r} ({path}) has the name of a model; rename it")
        if spec.model in spec.models:
            # the spec names one of its own models: built here, served as "agent.entry"
            reference = f"{spec.name}.{spec.model}"
            built = spec.build_model(resolve=state.pool.make_model)
            assert isinstance(built, Model)  # an entry is always built
            state.pool.add_named(reference, built)
            engine = state.pool.get(reference)
        else:
            engine = state.pool.get(spec.model)
        agent = spec.build_agent(model=engine.model, store=state.store)
        agents[spec.name] = HostedAgent(agent, engine.reference, _first_line(spec.instructions))
    return agents


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line[:200]


async def _preload(state: ServerState) -> None:
    engine = state.pool.get(None)
    try:
        await engine.prepare()
    except Exception as exc:  # reported by /health; requests retry the load
        log.error("loading %s failed: %s", engine.reference, exc)


def _add_service_routes(app: FastAPI) -> None:
    @app.get("/health", tags=["service"])
    async def health(request: Request) -> JSONResponse:
        """Liveness (the server answers) and readiness (the default model is loaded, or was
        and has been unloaded to save memory: its next request loads it again)."""
        state: ServerState = request.app.state.shoal
        engines = state.pool.engines()
        default = state.pool.default
        models = {ref: engine.health() for ref, engine in engines.items()}
        ready_state = models.get(default, {}).get("state", "stopped")
        ready = ready_state in ("ready", "unloaded")
        residency = state.pool.residency_snapshot()
        budget = residency.max_memory_bytes
        body = {
            "status": "ok" if ready else ready_state,
            "ready": ready,
            "version": __version__,
            "uptime_seconds": round(time.time() - state.started_at, 1),
            "default_model": default,
            "models": models,
            "agents": sorted(state.agents),
            "systems": sorted(state.systems),
            "residency": {
                "max_memory_mb": None if budget is None else budget // 2**20,
                "used_mb": round(residency.used_bytes / 2**20),
                "max_loaded_models": residency.max_loaded_models,
                "loaded_models": residency.loaded_models,
                "keep_alive_s": residency.keep_alive_s,
            },
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics", tags=["service"])
    async def metrics(request: Request) -> Response:
        """Prometheus metrics."""
        state: ServerState = request.app.state.shoal
        return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models", tags=["models"])
    async def list_models(request: Request) -> dict[str, Any]:
        """The models this server can run, the agents it hosts, and the systems and their
        flows (use any as ``model``)."""
        state: ServerState = request.app.state.shoal
        created = int(state.started_at)
        data: list[dict[str, Any]] = [
            {"id": ref, "object": "model", "created": created, "owned_by": "shoal"}
            for ref in state.pool.servable()
        ]
        for name, hosted in state.agents.items():
            data.append(
                {
                    "id": name,
                    "object": "model",
                    "created": created,
                    "owned_by": "shoal-agent",
                    "description": hosted.description,
                    "model": hosted.model,
                    "tools": list(hosted.agent.tools),
                }
            )
        for name, flow in state.flows.items():
            system = flow.system
            item: dict[str, Any] = {
                "id": name,
                "object": "model",
                "created": created,
                "owned_by": f"shoal-{flow.kind}",
                "description": flow.description,
                "system": system.name,
                "runs": flow.member,
            }
            if flow.kind == "system":
                item["agents"] = list(system.agents)
                item["flows"] = list(system.flows)
            data.append(item)
        return {"object": "list", "data": data}

    @app.get("/v1/models/{model_id}", tags=["models"])
    async def get_model(model_id: str, request: Request) -> dict[str, Any]:
        """One model or hosted agent."""
        listing = await list_models(request)
        for item in listing["data"]:
            if item["id"] == model_id:
                return dict(item)
        raise ApiError(404, f"no model, agent or flow named {model_id!r}", param="model")


class _Edge:
    """Metrics, authentication (and the caller's role) and the body limit, for every HTTP
    request."""

    def __init__(self, app: ASGIApp, *, state: ServerState) -> None:
        self.app = app
        self.state = state
        self.keys = KeyTable(state.settings.api_keys, state.settings.role_keys)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            refusal = self._refuse(scope)
            if refusal is not None:
                await refusal(scope, receive, send_wrapper)
                return
            await self.app(scope, self._limited(receive, send_wrapper), send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.state.metrics.requests.labels(template, scope["method"], str(status)).inc()
            self.state.metrics.latency.labels(template).observe(time.perf_counter() - started)

    def _refuse(self, scope: Scope) -> Response | None:
        settings = self.state.settings
        set_role(scope, None)  # set here only: never from anything the client sends
        if self.keys and scope["path"] not in _OPEN_PATHS:
            headers = dict(scope["headers"])
            auth = headers.get(b"authorization", b"")
            scheme, _, token = auth.partition(b" ")
            matched, role = self.keys.match(token.strip())
            if scheme.lower() != b"bearer" or not matched:
                return JSONResponse(
                    error_body(401, "missing or wrong API key (send Authorization: Bearer KEY)"),
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
            set_role(scope, role)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > settings.max_body_bytes
            except ValueError:
                return JSONResponse(error_body(400, "bad Content-Length"), status_code=400)
            if too_big:
                return _too_big(settings.max_body_bytes)
        return None

    def _limited(self, receive: Receive, send: Send) -> Receive:
        """``receive`` that stops a chunked body at the limit."""
        limit = self.state.settings.max_body_bytes
        seen = 0

        async def wrapped() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLargeError(limit)
            return message

        return wrapped


def _too_big(limit: int) -> JSONResponse:
    return JSONResponse(
        error_body(413, f"request body is larger than {limit} bytes"), status_code=413
    )
