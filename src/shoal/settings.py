"""Settings shared by several layers.

:class:`ModelSettings` are per-request sampling settings. Fields left at ``None`` fall back to
the model profile's defaults (see ``shoal.models.profiles``), so a user gets the family's
recommended sampling without configuring it. :func:`merge_settings` applies that precedence.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ModelSettings", "cache_dir", "data_dir", "merge_settings"]


class ModelSettings(BaseModel):
    """Sampling and length settings for one request. ``None`` means "the profile's default"."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # strict: a YAML ``yes`` or a string "0.5" is an error, not a number
    temperature: float | None = Field(default=None, ge=0.0, le=2.0, strict=True)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0, strict=True)
    top_k: int | None = Field(default=None, ge=0, strict=True)
    min_p: float | None = Field(default=None, ge=0.0, le=1.0, strict=True)
    repeat_penalty: float | None = Field(default=None, gt=0.0, strict=True)
    max_tokens: int | None = Field(default=None, gt=0, strict=True)
    seed: int | None = Field(default=None, strict=True)
    stop: tuple[str, ...] = ()


def merge_settings(*layers: ModelSettings | None) -> ModelSettings:
    """Later layers win, field by field, where they set a value; ``stop`` lists are joined."""
    merged: dict[str, object] = {}
    stop: list[str] = []
    for layer in layers:
        if layer is None:
            continue
        for name, value in layer.model_dump(exclude={"stop"}).items():
            if value is not None:
                merged[name] = value
        stop.extend(s for s in layer.stop if s not in stop)
    return ModelSettings.model_validate({**merged, "stop": tuple(stop)})


def cache_dir() -> Path:
    """Where Shoal keeps files it makes (``$SHOAL_CACHE_DIR``, else the XDG cache dir)."""
    explicit = os.environ.get("SHOAL_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "shoal"


def data_dir() -> Path:
    """Where Shoal keeps data a user owns, such as threads (``$SHOAL_HOME``, else XDG data)."""
    explicit = os.environ.get("SHOAL_HOME")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "shoal"
