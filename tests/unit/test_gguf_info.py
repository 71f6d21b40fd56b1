"""read_gguf_info on small real GGUF files written with gguf.GGUFWriter, and on things that are
not GGUF files (text, an HTML page, an LFS pointer, an empty file, a truncated file)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.exceptions import ModelLoadError
from shoal.models.gguf_info import GGUFInfo, file_type_name, read_gguf_info
from tests.unit.download_helpers import write_gguf


@pytest.fixture(scope="module")
def gguf_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf")


def test_reads_the_metadata_of_a_real_file(gguf_file: Path) -> None:
    info = read_gguf_info(gguf_file)

    assert info == GGUFInfo(
        architecture="llama",
        name="Tiny Test Model",
        context_length=4096,
        parameters=256 * 64 + 64,  # summed from the tensor shapes
        file_type="Q8_0",
        has_chat_template=True,
        size=gguf_file.stat().st_size,
    )


def test_a_recorded_parameter_count_wins_and_missing_keys_are_none(tmp_path: Path) -> None:
    path = write_gguf(
        tmp_path / "other.gguf", file_type=15, chat_template=None, parameter_count=135_000_000
    )

    info = read_gguf_info(path)

    assert info.parameters == 135_000_000
    assert info.file_type == "Q4_K_M"
    assert info.has_chat_template is False


@pytest.mark.parametrize(
    ("value", "name"),
    [(0, "F32"), (1, "F16"), (3, "Q4_1"), (7, "Q8_0"), (15, "Q4_K_M"), (32, "BF16")],
)
def test_file_type_names_are_llama_cpp_s(value: int, name: str) -> None:
    assert file_type_name(value) == name


def test_an_unknown_file_type_is_named_as_such() -> None:
    assert file_type_name(9999) == "unknown (9999)"


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (b"hello, world\n", "not a GGUF file"),
        (b"<!DOCTYPE html><html><body>Sign in</body></html>", "HTML page"),
        (b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 9\n", "Git LFS pointer"),
        (b"", "empty"),
    ],
)
def test_a_file_that_is_not_gguf_is_named(tmp_path: Path, content: bytes, said: str) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(content)

    with pytest.raises(ModelLoadError, match="not a GGUF file") as caught:
        read_gguf_info(path)

    assert said in str(caught.value)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("keep", [6, 40, 300, 600, -100, -1])
def test_a_truncated_file_is_a_load_error(gguf_file: Path, tmp_path: Path, keep: int) -> None:
    data = gguf_file.read_bytes()
    path = tmp_path / "cut.gguf"
    path.write_bytes(data[:keep])

    with pytest.raises(ModelLoadError, match=r"truncated|damaged") as caught:
        read_gguf_info(path)

    assert "download it again" in str(caught.value)


def test_a_missing_file_is_a_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="cannot read"):
        read_gguf_info(tmp_path / "absent.gguf")


def test_importing_the_module_does_not_import_numpy() -> None:
    import subprocess
    import sys

    code = "import sys, shoal.models.gguf_info; print('numpy' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )

    assert result.stdout.strip() == "False"
