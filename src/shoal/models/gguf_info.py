"""What a GGUF file says about itself, read without loading the weights.

:func:`read_gguf_info` answers the questions ``shoal models pull`` and ``shoal models list``
ask of a file: which architecture (llama.cpp refuses one it does not know), how long a context
it was trained for, how many parameters, which quantisation, and whether it carries a chat
template. It uses ggml-org's pure-Python reader (``gguf.GGUFReader``), which memory-maps the
file: only the header pages (metadata and tensor descriptions) are read from disk, never the
tensor data. The reader does parse every metadata entry, vocabulary included, so a file with
a 50,000-token vocabulary takes a few seconds on a slow core; call it once per file, not per
request.

Before the reader sees a file, its first bytes are checked for the ``GGUF`` magic (cheap, and
the reader's own errors are obscure); things people download by mistake, an HTML error page or
a Git LFS pointer, are named as such. A truncated file (the header promises tensors beyond its
end) or one the reader cannot parse raises :class:`~shoal.exceptions.ModelLoadError`.

``gguf`` imports numpy, so it is imported inside the function: ``import shoal`` stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shoal.exceptions import ModelLoadError

if TYPE_CHECKING:
    from gguf import GGUFReader

__all__ = ["GGUFInfo", "file_type_name", "read_gguf_info"]

_MAGIC = b"GGUF"


@dataclass(frozen=True)
class GGUFInfo:
    """A GGUF file's identity, from its metadata (``None`` where the file does not say).

    ``parameters`` is ``general.parameter_count`` when the file records it, else the sum of
    its tensors' element counts (``None`` for one shard of a split model). ``file_type`` is
    llama.cpp's name for ``general.file_type`` (``"Q4_K_M"``, ``"Q8_0"``, ``"F16"``).
    ``size`` is the file's size in bytes.
    """

    architecture: str
    name: str | None
    context_length: int | None
    parameters: int | None
    file_type: str | None
    has_chat_template: bool
    size: int


def read_gguf_info(path: Path) -> GGUFInfo:
    """The metadata of the GGUF file at ``path``; :class:`ModelLoadError` if it is not one."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as file:
            head = file.read(512)
    except OSError as exc:
        raise ModelLoadError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if not head.startswith(_MAGIC):
        raise ModelLoadError(f"{path} is not a GGUF file: {_what_it_is(head)}")

    from gguf import GGUFReader

    try:
        reader = GGUFReader(path)
        end = max((t.data_offset + t.n_bytes for t in reader.tensors), default=0)
    except (ValueError, IndexError, KeyError, OverflowError) as exc:
        raise ModelLoadError(
            f"{path} is a damaged GGUF file (truncated or corrupt; {size} bytes): {exc}; "
            f"download it again"
        ) from exc
    except OSError as exc:
        raise ModelLoadError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if end > size:
        raise ModelLoadError(
            f"{path} is truncated: its tensors end at byte {end} but the file has {size} bytes; "
            f"download it again"
        )

    architecture = _string(reader, "general.architecture")
    if not architecture:
        raise ModelLoadError(f"{path} has no general.architecture; llama.cpp cannot load it")
    template = _string(reader, "tokenizer.chat_template")
    return GGUFInfo(
        architecture=architecture,
        name=_string(reader, "general.name"),
        context_length=_integer(reader, f"{architecture}.context_length"),
        parameters=_parameters(reader),
        file_type=_file_type(reader),
        has_chat_template=bool(template and template.strip()),
        size=size,
    )


def file_type_name(file_type: int) -> str:
    """llama.cpp's name for a ``general.file_type`` value: 15 -> ``"Q4_K_M"``, 1 -> ``"F16"``.

    Values the installed ``gguf`` does not know come back as ``"unknown (N)"``.
    """
    from gguf import LlamaFileType

    try:
        member = LlamaFileType(file_type)
    except ValueError:
        return f"unknown ({file_type})"
    if member is LlamaFileType.ALL_F32:
        return "F32"
    return member.name.removeprefix("MOSTLY_")


# -- reading fields -------------------------------------------------------------------------


def _value(reader: GGUFReader, key: str) -> Any:
    field = reader.get_field(key)
    if field is None:
        return None
    try:
        return field.contents()
    except (ValueError, IndexError):  # a malformed value (bad UTF-8, empty array)
        return None


def _string(reader: GGUFReader, key: str) -> str | None:
    value = _value(reader, key)
    return value if isinstance(value, str) else None


def _integer(reader: GGUFReader, key: str) -> int | None:
    value = _value(reader, key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _parameters(reader: GGUFReader) -> int | None:
    recorded = _integer(reader, "general.parameter_count")
    if recorded is not None:
        return recorded
    shards = _integer(reader, "split.count")
    if (shards is not None and shards > 1) or not reader.tensors:
        return None  # one shard of several: its tensors are not the whole model
    return sum(int(tensor.n_elements) for tensor in reader.tensors)


def _file_type(reader: GGUFReader) -> str | None:
    value = _integer(reader, "general.file_type")
    if value is None:
        return None
    return file_type_name(value)


def _what_it_is(head: bytes) -> str:
    """A guess at what was downloaded instead, from its first bytes."""
    if not head:
        return "it is empty"
    text = head.lstrip().lower()
    if text.startswith(b"version https://git-lfs"):
        return "it is a Git LFS pointer, not the file itself (download it with LFS resolved)"
    if text.startswith((b"<!doctype html", b"<html")):
        return "it is an HTML page (an error or login page?), not a model"
    if text.startswith(b"{"):
        return "it is a JSON document, not a model"
    return f"it starts with {head[:4]!r}, expected {_MAGIC!r}"
