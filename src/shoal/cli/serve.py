"""``shoal serve``: the OpenAI-compatible server (see docs/server.md)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from shoal.models import DEFAULT_MODEL, residency_settings

__all__ = ["serve"]


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=int, help="Port to listen on.")
@click.option(
    "--model",
    "default_model",
    default=None,
    help="Model loaded at start and used when a request names none "
    f"[default: the deployment's default, else {DEFAULT_MODEL}].",
)
@click.option(
    "--deployment",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Deployment file (YAML, a models: section and a default:): its named models "
    "(remote endpoints, routers, fallbacks, escalation tiers) are served under their names.",
)
@click.option(
    "--agent",
    "agents",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Agent spec (YAML) to host; repeat for more. Clients address it by its name.",
)
@click.option(
    "--system",
    "systems",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="System file (YAML: models, agents, flows) to host; repeat for more. Clients address "
    "the system by its name (its entry), and each agent and flow by its name.",
)
@click.option(
    "--api-key",
    "api_keys",
    multiple=True,
    help="Accepted Bearer token, with no role; repeat for more (also $SHOAL_API_KEYS, "
    "comma-separated).",
)
@click.option(
    "--role-key",
    "role_keys",
    multiple=True,
    metavar="ROLE=KEY",
    help="Accepted Bearer token whose requests run agents and flows in ROLE (guards such as "
    "ToolPermissionGuard decide by it); repeat for more (also $SHOAL_ROLE_KEYS, "
    "comma-separated ROLE=KEY items).",
)
@click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="SQLite file for threads and stored responses [default: $SHOAL_HOME/server.db].",
)
@click.option(
    "--max-queue",
    default=32,
    show_default=True,
    type=int,
    help="Waiting requests per model before 429.",
)
@click.option(
    "--timeout",
    "request_timeout",
    default=300.0,
    show_default=True,
    type=float,
    help="Seconds a request may take, queueing included.",
)
@click.option(
    "--max-tokens-limit",
    default=4096,
    show_default=True,
    type=int,
    help="Largest max_tokens a request may ask for.",
)
@click.option(
    "--max-memory",
    metavar="SIZE",
    default=None,
    help="Memory the loaded models may take together: 6GB, 6000MB, 75% (of RAM) or none "
    "[default: $SHOAL_MAX_MEMORY, else 75%].",
)
@click.option(
    "--max-loaded-models",
    metavar="N",
    default=None,
    help="Models loaded at once; the least recently used idle one is unloaded first "
    "[default: $SHOAL_MAX_LOADED_MODELS, else 3].",
)
@click.option(
    "--keep-alive",
    metavar="DURATION",
    default=None,
    help="How long an idle model stays loaded: 5m, 300 (seconds), 0 (unload after each "
    "request), -1 (never) [default: $SHOAL_KEEP_ALIVE, else 5m].",
)
@click.option(
    "--in-process",
    is_flag=True,
    help="Run the engine in the server process (no crash isolation; saves one process's memory).",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
)
def serve(
    host: str,
    port: int,
    default_model: str | None,
    deployment: Path | None,
    agents: tuple[Path, ...],
    systems: tuple[Path, ...],
    api_keys: tuple[str, ...],
    role_keys: tuple[str, ...],
    db: Path | None,
    max_queue: int,
    request_timeout: float,
    max_tokens_limit: int,
    max_memory: str | None,
    max_loaded_models: str | None,
    keep_alive: str | None,
    in_process: bool,
    log_level: str,
) -> None:
    """Serve models, agents and systems over the OpenAI API, with /health and /metrics."""
    from shoal.server import ServerSettings, check_port
    from shoal.server import serve as run_server
    from shoal.server.settings import parse_role_keys

    keys = list(api_keys)
    keys += [k.strip() for k in os.environ.get("SHOAL_API_KEYS", "").split(",") if k.strip()]
    roles = parse_role_keys(role_keys, os.environ.get("SHOAL_ROLE_KEYS", ""))
    residency = residency_settings(
        max_memory=max_memory, max_loaded_models=max_loaded_models, keep_alive=keep_alive
    )
    if default_model is None:
        default_model = DEFAULT_MODEL
        if deployment is not None:
            from shoal.spec import load_deployment

            default_model = load_deployment(deployment).default_name() or DEFAULT_MODEL
        elif systems:
            default_model = _system_default(systems[0])
    settings = ServerSettings(
        host=host,
        port=port,
        default_model=default_model,
        deployment=deployment,
        agent_specs=agents,
        systems=systems,
        api_keys=tuple(dict.fromkeys(keys)),
        role_keys=roles,
        database=db,
        max_queue=max_queue,
        request_timeout=request_timeout,
        max_tokens_limit=max_tokens_limit,
        isolate=not in_process,
        max_memory_mb=residency.max_memory_mb,
        max_loaded_models=residency.max_loaded_models,
        keep_alive_s=residency.keep_alive_s,
    )
    check_port(host, port)
    click.echo(f"shoal: serving {default_model} on http://{host}:{port}/v1", err=True)
    click.echo(f"shoal: {residency.describe()}", err=True)
    if roles:  # the roles, never the keys
        click.echo(f"shoal: roles by API key: {', '.join(sorted(set(roles.values())))}", err=True)
    run_server(settings, log_level=log_level)


def _system_default(path: Path) -> str:
    """The model a system's first agent runs on, as the server names it (``SYSTEM.ENTRY`` for
    an entry of its ``models:``): loaded at start instead of a model the system does not use."""
    from shoal.spec import load_system

    spec = load_system(path)
    first = spec.model_names()[0]
    return f"{spec.name}.{first}" if first in spec.models else first
