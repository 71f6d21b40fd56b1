"""``shoal models probe REF``: what a remote endpoint honours (grammar, JSON schema, tools)."""

from __future__ import annotations

import asyncio
import json

import click

from shoal.exceptions import UserError
from shoal.models import Capabilities, OpenAICompatModel, resolve_model


@click.command("probe")
@click.argument("reference")
@click.option("--refresh", is_flag=True, help="Probe again even if a fresh result is cached.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def probe(reference: str, refresh: bool, as_json: bool) -> None:
    """Probe a remote model (ollama:MODEL, vllm:URL#MODEL, ...): which server it is and which
    mechanisms it honours; the result is cached for a day and used by every request."""
    model = resolve_model(reference)
    if not isinstance(model, OpenAICompatModel):
        raise UserError(
            f"{reference!r} is not a remote model; probing is for PROVIDER:MODEL references "
            "(embedded models honour everything: shoal models info shows them)"
        )
    caps = asyncio.run(_probe(model, refresh))
    if as_json:
        click.echo(json.dumps({"model": model.name, "url": model.base_url, **caps.to_dict()}))
        return
    click.echo(f"{model.name} at {model.base_url}")
    for line in _summary(caps):
        click.echo(f"  {line}")
    for note in (*caps.notes, *model.notes):
        click.echo(f"  - {note}")


async def _probe(model: OpenAICompatModel, refresh: bool) -> Capabilities:
    try:
        return await model.probe_endpoint(refresh=refresh)
    finally:
        await model.close()


def _summary(caps: Capabilities) -> list[str]:
    def yes(flag: bool) -> str:
        return "yes" if flag else "no"

    how = "probed" if caps.probed else "assumed from the provider (not measured)"
    return [
        f"server:        {caps.server} ({how})",
        f"grammar:       {yes(caps.grammar)}",
        f"JSON schema:   {caps.json_schema or 'no'}",
        f"native tools:  {yes(caps.native_tools)}",
        f"tool_choice:   {yes(caps.tool_choice)}",
    ]
