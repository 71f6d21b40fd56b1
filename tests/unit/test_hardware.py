"""Hardware detection: this machine, a fake /proc/cpuinfo, a fake nvidia-smi and NVML, the
engine's GPU backends, memory estimates."""

from __future__ import annotations

import os
import platform
import sys
import textwrap
import types
from pathlib import Path

import psutil
import pytest

import shoal.hardware as hardware
from shoal.hardware import (
    GPU,
    Hardware,
    detect_hardware,
    estimate_model_memory,
    fits,
    gpu_backends,
)

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
    monkeypatch.setattr(platform, "processor", lambda: "fallback-cpu")
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
    assert found.gpu_offload_supported is None
    if hasattr(os, "sched_getaffinity"):
        assert found.usable_cores == len(os.sched_getaffinity(0))


def test_detect_hardware_records_what_the_engine_can_do() -> None:
    assert detect_hardware(gpu_offload_supported=True).gpu_offload_supported is True
    assert detect_hardware(gpu_offload_supported=False).gpu_offload_supported is False


def test_hardware_to_dict_is_plain_data() -> None:
    found = Hardware(
        logical_cores=8,
        physical_cores=4,
        memory_total_mb=16000,
        memory_available_mb=9000,
        cpu_model="Test CPU",
        cpu_features=("avx2",),
        gpus=(GPU(name="Card", memory_mb=8192, kind="cuda", memory_free_mb=8000, driver="550"),),
        system="Linux",
        machine="x86_64",
        gpu_offload_supported=True,
        usable_cores=6,
    )

    assert found.to_dict() == {
        "logical_cores": 8,
        "physical_cores": 4,
        "memory_total_mb": 16000,
        "memory_available_mb": 9000,
        "cpu_model": "Test CPU",
        "cpu_features": ("avx2",),
        "gpus": (
            {
                "name": "Card",
                "memory_mb": 8192,
                "kind": "cuda",
                "memory_free_mb": 8000,
                "driver": "550",
                "unified": False,
            },
        ),
        "system": "Linux",
        "machine": "x86_64",
        "gpu_offload_supported": True,
        "usable_cores": 6,
    }


def test_gpu_usable_memory_is_free_memory_when_known() -> None:
    assert GPU("a", 8192, "cuda", memory_free_mb=5000).usable_mb == 5000
    assert GPU("a", 8192, "cuda").usable_mb == 8192


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
    monkeypatch.setattr(platform, "system", lambda: "Linux")

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
    monkeypatch.setattr(platform, "system", lambda: "Darwin")
    monkeypatch.setattr(platform, "machine", lambda: "arm64")

    found = detect_hardware()

    assert opened == []
    assert (found.system, found.machine) == ("Darwin", "arm64")
    assert found.cpu_model == "fallback-cpu"  # no sysctl on PATH
    assert found.cpu_features == ("neon", "dotprod")
    (gpu,) = found.gpus
    assert (gpu.name, gpu.kind, gpu.memory_mb, gpu.unified) == (
        "Apple GPU (Metal)",
        "metal",
        found.memory_total_mb,
        True,
    )
    assert gpu.memory_free_mb is not None
    assert 0 < gpu.memory_free_mb <= gpu.memory_mb


def test_mac_cpu_name_from_sysctl(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sysctl = bin_dir / "sysctl"
    sysctl.write_text('#!/bin/sh\necho "Apple M2 Pro"\n', encoding="utf-8")
    sysctl.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setattr(platform, "machine", lambda: "arm64")

    assert hardware._mac_cpu() == ("Apple M2 Pro", ("neon", "dotprod"))


# -- nvidia-smi and NVML -------------------------------------------------------------------


@pytest.fixture
def no_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import pynvml`` fail, whatever is installed."""
    monkeypatch.setitem(sys.modules, "pynvml", None)


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


@pytest.mark.usefixtures("no_nvml")
def test_nvidia_gpus_from_csv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    log = fake_nvidia_smi(
        monkeypatch,
        tmp_path,
        """\
        echo "NVIDIA GeForce RTX 3090, 24576, 20000, 550.54.14"
        echo "Tesla T4, 15360, 15000, 535.104.05"
        echo "NVIDIA A100-SXM4-40GB, 40960, [N/A], [N/A]"
        """,
    )

    gpus = hardware._nvidia_gpus()

    assert gpus == (
        GPU("NVIDIA GeForce RTX 3090", 24576, "cuda", memory_free_mb=20000, driver="550.54.14"),
        GPU("Tesla T4", 15360, "cuda", memory_free_mb=15000, driver="535.104.05"),
        GPU("NVIDIA A100-SXM4-40GB", 40960, "cuda"),
    )
    assert log.read_text().split() == [
        "--query-gpu=name,memory.total,memory.free,driver_version",
        "--format=csv,noheader,nounits",
    ]


@pytest.mark.usefixtures("no_nvml")
def test_nvidia_rows_without_a_memory_figure_are_skipped(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake_nvidia_smi(
        monkeypatch,
        tmp_path,
        """\
        echo "Odd Card, [N/A], [N/A], 1"
        echo "no comma here"
        echo ", 1024, 1000, 1"
        echo "Good Card, 8192, 8000, 550"
        """,
    )

    assert hardware._nvidia_gpus() == (
        GPU(name="Good Card", memory_mb=8192, kind="cuda", memory_free_mb=8000, driver="550"),
    )


@pytest.mark.usefixtures("no_nvml")
def test_nvidia_smi_that_fails_means_no_gpus(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake_nvidia_smi(
        monkeypatch,
        tmp_path,
        """\
        echo "NVIDIA-SMI has failed because it couldn't communicate with the driver" >&2
        echo "Ghost, 1024, 1024, 1"
        exit 9
        """,
    )

    assert hardware._nvidia_gpus() == ()


@pytest.mark.usefixtures("no_nvml")
def test_no_nvidia_smi_means_no_gpus(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))

    assert hardware._nvidia_gpus() == ()


@pytest.mark.usefixtures("no_nvml")
def test_detect_hardware_reports_nvidia_gpus(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake_nvidia_smi(monkeypatch, tmp_path, 'echo "Tesla T4, 15360, 14000, 535.1"\n')

    found = detect_hardware()

    assert GPU("Tesla T4", 15360, "cuda", memory_free_mb=14000, driver="535.1") in found.gpus
    assert found.to_dict()["gpus"][0]["memory_free_mb"] == 14000


def fake_pynvml(monkeypatch: pytest.MonkeyPatch, *, fail_init: bool = False) -> list[str]:
    """A stand-in ``pynvml`` with one 12 GB card; returns the calls it saw."""
    calls: list[str] = []

    class Memory:
        total = 12288 * 2**20
        free = 11000 * 2**20

    def init() -> None:
        calls.append("init")
        if fail_init:
            raise RuntimeError("NVML Shared Library Not Found")

    module = types.SimpleNamespace(
        nvmlInit=init,
        nvmlShutdown=lambda: calls.append("shutdown"),
        nvmlSystemGetDriverVersion=lambda: b"550.54.14",
        nvmlDeviceGetCount=lambda: 1,
        nvmlDeviceGetHandleByIndex=lambda index: f"handle{index}",
        nvmlDeviceGetName=lambda handle: "NVIDIA GeForce RTX 4070",
        nvmlDeviceGetMemoryInfo=lambda handle: Memory(),
    )
    monkeypatch.setitem(sys.modules, "pynvml", module)
    return calls


def test_nvml_is_preferred_to_nvidia_smi(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    log = fake_nvidia_smi(monkeypatch, tmp_path, 'echo "Wrong Card, 1024, 1000, 1"\n')
    calls = fake_pynvml(monkeypatch)

    gpus = hardware._nvidia_gpus()

    assert gpus == (
        GPU("NVIDIA GeForce RTX 4070", 12288, "cuda", memory_free_mb=11000, driver="550.54.14"),
    )
    assert calls == ["init", "shutdown"]
    assert not log.exists()  # nvidia-smi never ran


def test_nvml_that_cannot_start_falls_back_to_nvidia_smi(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake_nvidia_smi(monkeypatch, tmp_path, 'echo "Tesla T4, 15360, 15000, 535"\n')
    fake_pynvml(monkeypatch, fail_init=True)

    assert hardware._nvidia_gpus() == (GPU("Tesla T4", 15360, "cuda", 15000, "535"),)


# -- the engine's GPU backends ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("system_info", "backends"),
    [
        ("CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 |", ()),
        ("CUDA : ARCHS = 860 | USE_GRAPHS = 1 | PEER_MAX_BATCH_SIZE = 128 | CPU : AVX = 1 |",
         ("CUDA",)),
        ("Metal : EMBED_LIBRARY = 1 | CPU : NEON = 1 | ARM_FMA = 1 |", ("METAL",)),
        ("Vulkan : | CPU : AVX2 = 1", ("VULKAN",)),
        ("AVX = 1 | CUDA = 0 | METAL = 1 | VULKAN = 0 | BLAS = 1", ("METAL",)),
        ("AVX = 1 | CUDA = 1 | CUDA : ARCHS = 890", ("CUDA",)),
        ("", ()),
    ],
)  # fmt: skip
def test_gpu_backends(system_info: str, backends: tuple[str, ...]) -> None:
    assert gpu_backends(system_info) == backends


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


def test_estimate_with_the_models_kv_cache() -> None:
    # 100 MB of weights, 12 KB of KV cache per token (qwen2.5-0.5b's shape) at 4096 tokens:
    # 110 + 150 + 4096 * (12 KB + 0.02 MB)
    assert estimate_model_memory(100 * 2**20, 4096, kv_bytes_per_token=12 * 1024) == 389
    wide = estimate_model_memory(100 * 2**20, 4096, kv_bytes_per_token=192 * 1024)
    assert wide > estimate_model_memory(100 * 2**20, 4096)


def test_exactly_enough_memory_fits() -> None:
    need = estimate_model_memory(300 * 2**20)

    assert fits(300 * 2**20, machine(need))[0]
    assert not fits(300 * 2**20, machine(need - 1))[0]
