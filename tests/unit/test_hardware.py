"""Hardware detection: this machine, a fake /proc/cpuinfo, a fake nvidia-smi, memory estimates."""

from __future__ import annotations

import os
import platform
import textwrap
from pathlib import Path

import psutil
import pytest

import shoal.hardware as hardware
from shoal.hardware import GPU, Hardware, detect_hardware, estimate_model_memory, fits

X86_CPUINFO = """\
processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Core(TM) i7-1185G7 @ 3.00GHz
flags\t\t: fpu vme sse sse2 avx f16c fma avx2 avx512f avx512bw avx512_vnni sha_ni
bogomips\t: 5990.40

processor\t: 1
vendor_id\t: GenuineIntel
model name\t: Some Other Name
flags\t\t: fpu vme sse sse2 avx f16c fma avx2 avx512f avx512bw avx512_vnni amx_int8
"""

ARM_CPUINFO = """\
processor\t: 0
BogoMIPS\t: 48.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp asimddp i8mm
CPU implementer\t: 0x41

Hardware\t: BCM2835
"""


def fake_cpuinfo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str | None) -> list[str]:
    """Make _linux_cpu read ``text`` (or fail to read, for None) instead of /proc/cpuinfo.

    Returns the list of paths the module asks for.
    """
    fake = tmp_path / "cpuinfo"
    if text is not None:
        fake.write_text(text, encoding="utf-8")
    opened: list[str] = []

    def path(name: str) -> Path:
        opened.append(name)
        return fake

    monkeypatch.setattr(hardware, "Path", path)
    monkeypatch.setattr(hardware.platform, "processor", lambda: "fallback-cpu")
    return opened


# -- this machine -------------------------------------------------------------------------


def test_detect_hardware_on_this_machine() -> None:
    found = detect_hardware()

    assert found.logical_cores == (os.cpu_count() or 1)
    assert 1 <= found.physical_cores <= found.logical_cores
    assert found.memory_total_mb == psutil.virtual_memory().total // 2**20
    assert 0 < found.memory_available_mb <= found.memory_total_mb
    assert found.system == platform.system()
    assert found.machine == platform.machine()
    assert set(found.cpu_features) <= set(hardware._INTERESTING_FLAGS)
    order = [hardware._INTERESTING_FLAGS.index(f) for f in found.cpu_features]
    assert order == sorted(order)
    assert all(g.memory_mb > 0 and g.kind in ("cuda", "metal") for g in found.gpus)


def test_hardware_to_dict_is_plain_data() -> None:
    found = Hardware(
        logical_cores=8,
        physical_cores=4,
        memory_total_mb=16000,
        memory_available_mb=9000,
        cpu_model="Test CPU",
        cpu_features=("avx2",),
        gpus=(GPU(name="Card", memory_mb=8192, kind="cuda"),),
        system="Linux",
        machine="x86_64",
    )

    assert found.to_dict() == {
        "logical_cores": 8,
        "physical_cores": 4,
        "memory_total_mb": 16000,
        "memory_available_mb": 9000,
        "cpu_model": "Test CPU",
        "cpu_features": ("avx2",),
        "gpus": ({"name": "Card", "memory_mb": 8192, "kind": "cuda"},),
        "system": "Linux",
        "machine": "x86_64",
    }


# -- /proc/cpuinfo ------------------------------------------------------------------------


def test_linux_cpu_reads_x86_model_and_flags(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    opened = fake_cpuinfo(monkeypatch, tmp_path, X86_CPUINFO)

    model, features = hardware._linux_cpu()

    assert opened == ["/proc/cpuinfo"]
    assert model == "Intel(R) Core(TM) i7-1185G7 @ 3.00GHz"  # the first processor's name
    assert features == (
        "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "amx_int8",
    )  # fmt: skip


def test_linux_cpu_reads_arm_hardware_and_features(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake_cpuinfo(monkeypatch, tmp_path, ARM_CPUINFO)

    model, features = hardware._linux_cpu()

    assert model == "BCM2835"
    assert features == ("asimd", "i8mm")


def test_linux_cpu_without_a_model_name_falls_back(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake_cpuinfo(monkeypatch, tmp_path, "processor\t: 0\nflags\t: sse2 avx\n")

    assert hardware._linux_cpu() == ("fallback-cpu", ("avx",))


def test_linux_cpu_with_an_unreadable_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake_cpuinfo(monkeypatch, tmp_path, None)

    assert hardware._linux_cpu() == ("fallback-cpu", ())


def test_linux_cpu_with_no_interesting_flags(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake_cpuinfo(monkeypatch, tmp_path, "model name : Old CPU\nflags : fpu sse sse2 avx512\n")

    assert hardware._linux_cpu() == ("Old CPU", ())


def test_detect_hardware_uses_cpuinfo_on_linux(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake_cpuinfo(monkeypatch, tmp_path, X86_CPUINFO)
    monkeypatch.setattr(hardware.platform, "system", lambda: "Linux")

    found = detect_hardware()

    assert found.cpu_model == "Intel(R) Core(TM) i7-1185G7 @ 3.00GHz"
    assert "avx512_vnni" in found.cpu_features


def test_apple_silicon_reports_a_metal_gpu_and_skips_cpuinfo(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    opened = fake_cpuinfo(monkeypatch, tmp_path, X86_CPUINFO)
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setattr(hardware.platform, "system", lambda: "Darwin")
    monkeypatch.setattr(hardware.platform, "machine", lambda: "arm64")

    found = detect_hardware()

    assert opened == []
    assert (found.system, found.machine) == ("Darwin", "arm64")
    assert found.cpu_model == "fallback-cpu"
    assert found.cpu_features == ()
    assert found.gpus == (
        GPU(name="Apple GPU (Metal)", memory_mb=found.memory_total_mb, kind="metal"),
    )


# -- nvidia-smi ---------------------------------------------------------------------------


def fake_nvidia_smi(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, body: str) -> Path:
    """Put an executable ``nvidia-smi`` running ``body`` alone on PATH; return its args log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "args.txt"
    script = bin_dir / "nvidia-smi"
    script.write_text(
        f'#!/bin/sh\nprintf "%s\\n" "$@" > "{log}"\n' + textwrap.dedent(body), encoding="utf-8"
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    return log


def test_nvidia_gpus_from_csv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    log = fake_nvidia_smi(
        monkeypatch,
        tmp_path,
        """\
        echo "NVIDIA GeForce RTX 3090, 24576"
        echo "Tesla T4, 15360"
        echo "NVIDIA A100-SXM4-40GB, 40960"
        """,
    )

    gpus = hardware._nvidia_gpus()

    assert gpus == (
        GPU(name="NVIDIA GeForce RTX 3090", memory_mb=24576, kind="cuda"),
        GPU(name="Tesla T4", memory_mb=15360, kind="cuda"),
        GPU(name="NVIDIA A100-SXM4-40GB", memory_mb=40960, kind="cuda"),
    )
    assert log.read_text().split() == [
        "--query-gpu=name,memory.total",
        "--format=csv,noheader,nounits",
    ]


def test_nvidia_rows_without_a_memory_figure_are_skipped(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake_nvidia_smi(
        monkeypatch,
        tmp_path,
        """\
        echo "Odd Card, [N/A]"
        echo "no comma here"
        echo ", 1024"
        echo "Good Card, 8192"
        """,
    )

    assert hardware._nvidia_gpus() == (GPU(name="Good Card", memory_mb=8192, kind="cuda"),)


def test_nvidia_smi_that_fails_means_no_gpus(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake_nvidia_smi(
        monkeypatch,
        tmp_path,
        """\
        echo "NVIDIA-SMI has failed because it couldn't communicate with the driver" >&2
        echo "Ghost, 1024"
        exit 9
        """,
    )

    assert hardware._nvidia_gpus() == ()


def test_no_nvidia_smi_means_no_gpus(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))

    assert hardware._nvidia_gpus() == ()


def test_detect_hardware_reports_nvidia_gpus(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake_nvidia_smi(monkeypatch, tmp_path, 'echo "Tesla T4, 15360"\n')

    found = detect_hardware()

    assert GPU(name="Tesla T4", memory_mb=15360, kind="cuda") in found.gpus
    assert found.to_dict()["gpus"][0] == {"name": "Tesla T4", "memory_mb": 15360, "kind": "cuda"}


# -- memory estimates ---------------------------------------------------------------------


def machine(available_mb: int) -> Hardware:
    return Hardware(
        logical_cores=2,
        physical_cores=2,
        memory_total_mb=available_mb * 2,
        memory_available_mb=available_mb,
        cpu_model="Test",
        cpu_features=(),
    )


def test_estimate_for_a_small_model() -> None:
    # 100 MB of weights: 110 MB resident, plus 150 MB and 0.05 MB per context token
    assert estimate_model_memory(100 * 2**20, context_tokens=4096) == 464
    assert estimate_model_memory(100 * 2**20) == 464
    assert estimate_model_memory(0, context_tokens=0) == 150


def test_estimate_grows_with_weights_and_context() -> None:
    base = estimate_model_memory(500 * 2**20, context_tokens=2048)

    assert estimate_model_memory(1000 * 2**20, context_tokens=2048) > base
    assert estimate_model_memory(500 * 2**20, context_tokens=8192) > base


def test_a_model_that_fits() -> None:
    ok, why = fits(100 * 2**20, machine(1000))

    assert ok
    assert why == "needs ~464 MB of 1000 MB available"


def test_a_model_that_does_not_fit() -> None:
    ok, why = fits(100 * 2**20, machine(400))

    assert not ok
    assert why == "needs ~464 MB, 400 MB of memory available"


def test_fits_takes_the_context_into_account() -> None:
    size = 100 * 2**20
    roomy = machine(500)

    assert fits(size, roomy, context_tokens=4096)[0]
    assert not fits(size, roomy, context_tokens=16384)[0]


def test_exactly_enough_memory_fits() -> None:
    need = estimate_model_memory(300 * 2**20)

    assert fits(300 * 2**20, machine(need))[0]
    assert not fits(300 * 2**20, machine(need - 1))[0]
