"""``shoal models list`` and ``shoal doctor``: what models there are and what this machine runs."""

from __future__ import annotations

import json
from typing import Any

import click

from shoal.hardware import Hardware, detect_hardware, fits
from shoal.models import ALIASES, engine_info

__all__ = ["doctor", "models"]


def _model_rows(hardware: Hardware) -> list[dict[str, Any]]:
    """One row per alias. Never assembles or loads a model: an assembled alias whose parts are
    installed but not yet joined shows where it will go and its known size (``ready`` false)."""
    rows = []
    for alias, entry in sorted(ALIASES.items()):
        status = entry.status()
        row: dict[str, Any] = {
            "alias": alias,
            "description": entry.description,
            "parameters": entry.parameters,
            "source": entry.install_command,
        }
        if not status.installed or status.path is None or status.size is None:
            row |= {"installed": False, "ready": False, "path": None, "size_mb": None,
                    "fits": None, "why": status.detail, "note": ""}  # fmt: skip
        else:
            ok, why = fits(status.size, hardware)
            row |= {"installed": True, "ready": status.ready, "path": str(status.path),
                    "size_mb": round(status.size / 2**20, 1), "fits": ok, "why": why,
                    "note": status.detail}  # fmt: skip
        rows.append(row)
    return rows


def _width(rows: list[dict[str, Any]]) -> int:
    return max([16, *(len(row["alias"]) for row in rows)])


@click.group()
def models() -> None:
    """Models Shoal knows about."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_models(as_json: bool) -> None:
    """List model aliases: installed or not, and whether each fits this machine."""
    rows = _model_rows(detect_hardware())
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    w = _width(rows)
    for row in rows:
        if row["installed"]:
            state = "installed" if row["fits"] else "installed, does NOT fit"
            click.echo(f"{row['alias']:<{w}} {row['description']}  [{state}: {row['why']}]")
            click.echo(f"{'':<{w}} {row['path']}")
            if not row["ready"]:
                click.echo(f"{'':<{w}} {row['note']}")
        else:
            click.echo(f"{row['alias']:<{w}} {row['description']}  [not installed]")
            click.echo(f"{'':<{w}} {row['source']}")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def doctor(as_json: bool) -> None:
    """Check this machine: cores, memory, CPU features, GPUs, engine, and which models fit."""
    hardware = detect_hardware()
    report: dict[str, Any] = {
        "hardware": hardware.to_dict(),
        "engine": engine_info(),
        "models": _model_rows(hardware),
    }
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    h = hardware
    click.echo(f"system     {h.system} {h.machine}")
    click.echo(f"cpu        {h.cpu_model}")
    click.echo(f"cores      {h.physical_cores} physical, {h.logical_cores} logical")
    click.echo(f"features   {' '.join(h.cpu_features) or 'none detected'}")
    click.echo(f"memory     {h.memory_available_mb} MB available of {h.memory_total_mb} MB")
    gpus = ", ".join(f"{g.name} ({g.memory_mb} MB, {g.kind})" for g in h.gpus)
    click.echo(f"gpu        {gpus or 'none'}")
    engine: dict[str, str] = report["engine"]
    if "error" in engine:
        click.echo(f"engine     NOT AVAILABLE: {engine['error']}")
    else:
        click.echo(f"engine     llama-cpp-python {engine['llama_cpp_python']}")
        click.echo(f"           {engine['system_info']}")
    click.echo("models")
    w = _width(report["models"])
    for row in report["models"]:
        if row["installed"]:
            verdict = "fits" if row["fits"] else "does NOT fit"
            click.echo(f"  {row['alias']:<{w}} {verdict}: {row['why']}")
            if not row["ready"]:
                click.echo(f"  {'':<{w}} {row['note']}")
        else:
            click.echo(f"  {row['alias']:<{w}} not installed ({row['source']})")
