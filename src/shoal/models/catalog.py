"""The model catalog: every alias Shoal knows, its variants, and where each file comes from.

The data lives in ``catalog.yaml`` beside this module (package data); this module gives it a
schema (pydantic, ``extra="forbid"``) and loads it lazily, once per process, so ``import shoal``
never parses YAML. The data model:

- a :class:`CatalogEntry` per alias (``qwen2.5-0.5b``): the family (which
  :data:`~shoal.models.profiles.FAMILY_PROFILES` profile it gets), parameter count, trained
  context, license, capabilities, instruct or base, a one-line description, optionally its
  :class:`Shape` (layers and KV heads, for memory estimates) and its names in Ollama and
  Foundry Local;
- one :class:`Variant` per quantization and format (``q4_k_m``, ``q8_0``, ``onnx-cuda``): the
  file name, size in bytes and sha256 (``null`` where not verified; ``size_approx`` marks a
  size taken from a listing rather than measured), the devices it runs on, and its
  :class:`Sources`;
- sources: ``pypi`` (a distribution shipping the file, or the ordered parts of a file split over
  several distributions, joined by :mod:`shoal.models.assembled`), ``huggingface`` (repo and
  file), ``foundry`` (a Foundry Local alias, for ONNX variants only Foundry Local runs).

Only GGUF variants are *runnable* by the embedded engine (llama.cpp); ONNX variants are listed
so ``shoal models info`` can say where else the model runs.

A second catalog can be layered on top with ``SHOAL_CATALOG=/path/to/catalog.yaml``: its
aliases are added, replacing built-in ones of the same name. A bad entry raises
:class:`~shoal.exceptions.UserError` naming the file, the alias and the field.

References may name a variant: ``qwen2.5-0.5b:q8_0`` (:func:`split_reference`).
"""

from __future__ import annotations

import functools
import importlib.resources
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shoal.exceptions import UnknownModelError, UserError

__all__ = [
    "CATALOG_ENV",
    "Catalog",
    "CatalogEntry",
    "FoundrySource",
    "HuggingFaceSource",
    "PyPIPart",
    "PyPISource",
    "Shape",
    "Sources",
    "Variant",
    "catalog",
    "load_catalog",
    "split_reference",
]

#: environment variable naming an extra catalog file layered over the built-in one
CATALOG_ENV = "SHOAL_CATALOG"

Device = Literal["cpu", "cuda", "metal", "vulkan", "npu"]
Capability = Literal["chat", "tools", "code", "completion", "multilingual", "reasoning"]

_ID = r"^[a-z0-9][a-z0-9._-]*$"
_SHA256 = r"^[0-9a-f]{64}$"
_PARAMS = re.compile(r"^(\d+(?:\.\d+)?)([MB])$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PyPIPart(_Strict):
    """One piece of a file split over several distributions (a path in its RECORD)."""

    distribution: str = Field(min_length=1)
    version: str | None = None
    file: str = Field(min_length=1)


class PyPISource(_Strict):
    """A distribution that ships the file, or the ordered parts that make it up.

    ``file`` is the file's name (or path) inside ``distribution``; ``file_approx`` says the
    name was not checked against the package, so any single ``.gguf`` file in it is accepted.
    ``extra`` is Shoal's optional-dependency group that installs the parts.
    """

    distribution: str | None = None
    version: str | None = None
    file: str | None = None
    file_approx: bool = False
    parts: tuple[PyPIPart, ...] = ()
    extra: str | None = None

    @model_validator(mode="after")
    def _one_shape(self) -> PyPISource:
        if (self.distribution is None) == (not self.parts):
            raise ValueError("give either 'distribution' or 'parts', not both or neither")
        if self.parts and (self.file or self.version):
            raise ValueError("'file' and 'version' belong to each part when 'parts' is given")
        return self

    @property
    def requirements(self) -> tuple[str, ...]:
        """What ``pip install`` is given."""
        if self.parts:
            return tuple(
                f"{p.distribution}=={p.version}" if p.version else p.distribution
                for p in self.parts
            )
        assert self.distribution is not None
        return (f"{self.distribution}=={self.version}" if self.version else self.distribution,)


class HuggingFaceSource(_Strict):
    """A file in a Hugging Face model repository."""

    repo: str = Field(pattern=r"^[\w.-]+/[\w.-]+$")
    file: str = Field(min_length=1)
    revision: str = "main"

    def url(self, endpoint: str) -> str:
        return f"{endpoint.rstrip('/')}/{self.repo}/resolve/{self.revision}/{self.file}"


class FoundrySource(_Strict):
    """A Foundry Local alias; Foundry Local picks the exact build for the device itself."""

    alias: str = Field(min_length=1)


class Sources(_Strict):
    pypi: PyPISource | None = None
    huggingface: HuggingFaceSource | None = None
    foundry: FoundrySource | None = None


class Variant(_Strict):
    """One file (or Foundry build) of a model: a quantization in a format."""

    id: str = Field(pattern=_ID)
    quant: str = Field(min_length=1)
    format: Literal["gguf", "onnx"] = "gguf"
    devices: tuple[Device, ...] = ()
    file: str | None = None
    size: int | None = Field(default=None, gt=0)
    size_approx: bool = False
    sha256: str | None = Field(default=None, pattern=_SHA256)
    sources: Sources = Field(default_factory=Sources)
    note: str = ""

    @model_validator(mode="after")
    def _complete(self) -> Variant:
        if self.format == "gguf":
            if not self.file or not self.file.endswith(".gguf"):
                raise ValueError("a gguf variant needs 'file' ending in .gguf")
            if self.size is None:
                raise ValueError("a gguf variant needs 'size' (bytes; add size_approx: true)")
            if not (self.sources.pypi or self.sources.huggingface):
                raise ValueError("a gguf variant needs a 'pypi' or 'huggingface' source")
            if self.sha256 is not None and self.size_approx:
                raise ValueError("a known sha256 goes with an exact size (size_approx: false)")
            pypi = self.sources.pypi
            if pypi is not None and pypi.parts and (self.sha256 is None or self.size_approx):
                raise ValueError("a file assembled from parts needs its sha256 and exact size")
        elif not self.sources.foundry:
            raise ValueError("an onnx variant needs a 'foundry' source")
        return self

    @property
    def runnable(self) -> bool:
        """Whether the embedded engine (llama.cpp) can run it."""
        return self.format == "gguf"

    @property
    def run_devices(self) -> tuple[Device, ...]:
        if self.devices:
            return self.devices
        return ("cpu", "cuda", "metal", "vulkan") if self.runnable else ()

    @property
    def size_mb(self) -> float | None:
        return None if self.size is None else self.size / 2**20

    def size_label(self) -> str:
        if self.size is None:
            return "size unknown"
        approx = "~" if self.size_approx else ""
        if self.size >= 10**9:
            return f"{approx}{self.size / 1e9:.1f} GB"
        return f"{approx}{self.size / 1e6:.0f} MB"


class Shape(_Strict):
    """The transformer's shape, from its ``config.json``: enough to size the KV cache."""

    layers: int = Field(gt=0)
    kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)

    @property
    def kv_bytes_per_token(self) -> int:
        """Keys and values, every layer, 16-bit cache (llama.cpp's default)."""
        return 2 * self.layers * self.kv_heads * self.head_dim * 2


class CatalogEntry(_Strict):
    """One alias: what the model is, and its variants in preference-free catalog order."""

    alias: str = Field(pattern=_ID)
    name: str = Field(min_length=1)
    family: str = Field(min_length=1)
    parameters: str
    context_length: int = Field(gt=0)
    license: str = Field(min_length=1)
    kind: Literal["instruct", "base"]
    capabilities: tuple[Capability, ...]
    description: str = Field(min_length=1, max_length=90)
    shape: Shape | None = None
    ollama: str | None = None
    foundry: str | None = None
    variants: tuple[Variant, ...] = Field(min_length=1)

    @field_validator("parameters")
    @classmethod
    def _parameters(cls, value: str) -> str:
        if not _PARAMS.match(value):
            raise ValueError("write parameters like '135M' or '1.5B'")
        return value

    @field_validator("family")
    @classmethod
    def _family(cls, value: str) -> str:
        from shoal.models.profiles import FAMILY_PROFILES

        if value not in FAMILY_PROFILES:
            raise ValueError(f"unknown family {value!r}; known: {', '.join(FAMILY_PROFILES)}")
        return value

    @model_validator(mode="after")
    def _unique_variants(self) -> CatalogEntry:
        ids = [v.id for v in self.variants]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate variant ids: {', '.join(dupes)}")
        return self

    @property
    def parameter_count(self) -> int:
        match = _PARAMS.match(self.parameters)
        assert match is not None
        return int(float(match[1]) * (10**6 if match[2] == "M" else 10**9))

    @property
    def runnable_variants(self) -> tuple[Variant, ...]:
        return tuple(v for v in self.variants if v.runnable)

    @property
    def default_variant(self) -> Variant:
        """The first runnable variant in catalog order (what descriptions quote)."""
        return (self.runnable_variants or self.variants)[0]

    def variant(self, variant_id: str) -> Variant:
        """The variant called ``variant_id`` (case-insensitive), else :class:`UnknownModelError`."""
        wanted = variant_id.strip().lower()
        for v in self.variants:
            if v.id == wanted or v.quant.lower() == wanted:
                return v
        known = ", ".join(v.id for v in self.variants)
        raise UnknownModelError(
            f"model {self.alias!r} has no variant {variant_id!r}; its variants: {known}"
        )


class Catalog(Mapping[str, CatalogEntry]):
    """Aliases to entries, in file order (built-in first, then ``SHOAL_CATALOG``)."""

    def __init__(self, entries: Mapping[str, CatalogEntry], sources: tuple[str, ...]) -> None:
        self._entries = dict(entries)
        self.sources = sources

    def __getitem__(self, alias: str) -> CatalogEntry:
        return self._entries[alias]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def entry(self, alias: str) -> CatalogEntry:
        """The entry for ``alias``, else :class:`UnknownModelError` listing the known ones."""
        try:
            return self._entries[alias]
        except KeyError:
            known = ", ".join(sorted(self._entries))
            raise UnknownModelError(
                f"unknown model {alias!r}; known aliases: {known}; or give a path to a .gguf file"
            ) from None


def split_reference(reference: str) -> tuple[str, str | None]:
    """``"qwen2.5-0.5b:q8_0"`` -> ``("qwen2.5-0.5b", "q8_0")``; no suffix -> ``(ref, None)``."""
    alias, sep, variant = reference.strip().partition(":")
    if not sep:
        return alias, None
    return alias, variant or None


def _parse(text: str, origin: str) -> dict[str, CatalogEntry]:
    try:
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        raise UserError(f"model catalog {origin} is not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        raise UserError(f"model catalog {origin}: expected a mapping with a 'models:' key")
    unknown = set(data) - {"version", "models"}
    if unknown:
        raise UserError(f"model catalog {origin}: unknown top-level keys {sorted(unknown)}")
    entries: dict[str, CatalogEntry] = {}
    for alias, raw in data["models"].items():
        entries[str(alias)] = _entry(str(alias), raw, origin)
    return entries


def _entry(alias: str, raw: Any, origin: str) -> CatalogEntry:
    if not isinstance(raw, dict):
        raise UserError(f"model catalog {origin}: model {alias!r}: expected a mapping")
    variants = raw.get("variants")
    if isinstance(variants, dict):
        variants = [
            {"id": str(key), **value} if isinstance(value, dict) else value
            for key, value in variants.items()
        ]
    try:
        return CatalogEntry.model_validate({**raw, "alias": alias, "variants": variants})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        if where.startswith("variants."):
            # name the variant by its id, not its position in the list
            _, index, *rest = where.split(".")
            if index.isdigit() and isinstance(variants, list) and int(index) < len(variants):
                item = variants[int(index)]
                label = item.get("id", index) if isinstance(item, dict) else index
                where = ".".join(["variants", str(label), *rest])
        message = first["msg"].removeprefix("Value error, ")
        raise UserError(
            f"model catalog {origin}: model {alias!r}: {where or 'entry'}: {message}"
        ) from None


def load_catalog(path: Path | None = None, *, extra: Path | None = None) -> Catalog:
    """Parse and validate a catalog: ``path`` (default: the built-in one), then ``extra``."""
    if path is None:
        text = importlib.resources.files("shoal.models").joinpath("catalog.yaml").read_text()
        origin = "catalog.yaml (built in)"
    else:
        text, origin = _read(path), str(path)
    entries = _parse(text, origin)
    origins = [origin]
    if extra is not None:
        entries.update(_parse(_read(extra), str(extra)))
        origins.append(str(extra))
    return Catalog(entries, tuple(origins))


def _read(path: Path) -> str:
    try:
        return Path(path).expanduser().read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot read model catalog {path}: {exc.strerror or exc}") from None


@functools.cache
def _cached(extra: str | None) -> Catalog:
    return load_catalog(extra=Path(extra) if extra else None)


def catalog() -> Catalog:
    """The catalog in force: built in, plus ``$SHOAL_CATALOG`` if set. Parsed once."""
    return _cached(os.environ.get(CATALOG_ENV) or None)
