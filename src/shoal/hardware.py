"""What this machine offers a model: cores, memory, CPU features, accelerators.

Read from the operating system without importing any engine: ``/proc/cpuinfo`` on Linux,
``sysctl`` on macOS, NVIDIA GPUs through NVML when ``pynvml`` (the ``nvidia-ml-py``
distribution) is importable, else through ``nvidia-smi`` when it is on ``PATH``, each with total
and free memory and the driver version. Apple silicon reports its GPU as a Metal device sharing
the system's (unified) memory.

Whether the llama.cpp build can use a GPU at all is a property of the engine, not the machine:
the caller passes it in (``detect_hardware(gpu_offload_supported=...)``), typically from
:func:`gpu_backends` over ``shoal.models.engine_info()["system_info"]``; this module never
imports the engine.

:func:`estimate_model_memory` and :func:`fits` answer, roughly, whether a model file of a given
size loads with room to spare; :mod:`shoal.models.choice` builds on them to pick a variant.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import platform
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

__all__ = [
    "GPU",
    "Hardware",
    "detect_hardware",
    "estimate_model_memory",
    "fits",
    "gpu_backends",
]

#: CPU features llama.cpp uses for faster matrix kernels, in the order worth reporting
_INTERESTING_FLAGS = (
    "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni",
    "amx_int8", "neon", "asimd", "sve", "dotprod", "i8mm",
)  # fmt: skip

#: llama.cpp backends that offload layers to an accelerator, as named in its system info
_GPU_BACKENDS = ("CUDA", "METAL", "VULKAN", "HIP", "ROCM", "SYCL", "KOMPUTE", "CANN", "MUSA",
                 "OPENCL")  # fmt: skip


@dataclass(frozen=True)
class GPU:
    """One accelerator. ``memory_free_mb`` is ``None`` where it cannot be read; ``unified``
    means it shares the system's memory (Apple silicon), so ``memory_mb`` is the machine's."""

    name: str
    memory_mb: int
    kind: str  # "cuda" or "metal"
    memory_free_mb: int | None = None
    driver: str | None = None
    unified: bool = False

    @property
    def usable_mb(self) -> int:
        """Free memory when known, else total."""
        return self.memory_free_mb if self.memory_free_mb is not None else self.memory_mb


@dataclass(frozen=True)
class Hardware:
    """A snapshot of this machine. ``gpu_offload_supported`` is ``None`` when nobody asked the
    engine; ``usable_cores`` is how many cores this process may run on (CPU affinity)."""

    logical_cores: int
    physical_cores: int
    memory_total_mb: int
    memory_available_mb: int
    cpu_model: str
    cpu_features: tuple[str, ...]
    gpus: tuple[GPU, ...] = field(default=())
    system: str = ""
    machine: str = ""
    gpu_offload_supported: bool | None = None
    usable_cores: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _linux_cpu() -> tuple[str, tuple[str, ...]]:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor(), ()
    model, flags = "", set[str]()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware") and not model:
            model = value.strip()
        elif key in ("flags", "features"):
            flags.update(value.split())
    return model or platform.processor(), tuple(f for f in _INTERESTING_FLAGS if f in flags)


def _mac_cpu() -> tuple[str, tuple[str, ...]]:
    """The chip's name from ``sysctl``; Apple silicon always has NEON and dot products."""
    exe = shutil.which("sysctl")
    model = ""
    if exe is not None:
        try:
            model = subprocess.run(
                [exe, "-n", "machdep.cpu.brand_string"],
                capture_output=True,
                text=True,
                timeout=5,
                check=True,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            model = ""
    features: tuple[str, ...] = ("neon", "dotprod") if platform.machine() == "arm64" else ()
    return model or platform.processor(), features


def _nvml_gpus() -> tuple[GPU, ...] | None:
    """NVIDIA GPUs through NVML, or ``None`` when ``pynvml`` is missing or NVML fails."""
    try:
        nvml: Any = importlib.import_module("pynvml")
    except ImportError:
        return None
    try:
        nvml.nvmlInit()
    except Exception:  # NVMLError: no driver, no device
        return None
    try:
        driver = _text(nvml.nvmlSystemGetDriverVersion())
        gpus = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            gpus.append(
                GPU(
                    name=_text(nvml.nvmlDeviceGetName(handle)),
                    memory_mb=int(memory.total) // 2**20,
                    kind="cuda",
                    memory_free_mb=int(memory.free) // 2**20,
                    driver=driver or None,
                )
            )
        return tuple(gpus)
    except Exception:
        return None
    finally:
        with contextlib.suppress(Exception):
            nvml.nvmlShutdown()


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _nvidia_smi_gpus() -> tuple[GPU, ...]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return ()
    try:
        out = subprocess.run(
            [
                exe,
                "--query-gpu=name,memory.total,memory.free,driver_version",
                "--format=csv,noheader,nounits",
            ],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    gpus = []
    for line in out.strip().splitlines():
        fields = [f.strip() for f in line.rsplit(",", 3)]
        if len(fields) != 4:
            continue
        name, total, free, driver = fields
        if name and total.isdigit():
            gpus.append(
                GPU(
                    name=name,
                    memory_mb=int(total),
                    kind="cuda",
                    memory_free_mb=int(free) if free.isdigit() else None,
                    driver=driver if driver and driver != "[N/A]" else None,
                )
            )
    return tuple(gpus)


def _nvidia_gpus() -> tuple[GPU, ...]:
    """NVML first (no process to start), else ``nvidia-smi``; none if neither works."""
    found = _nvml_gpus()
    return found if found is not None else _nvidia_smi_gpus()


def gpu_backends(system_info: str) -> tuple[str, ...]:
    """The GPU backends named in llama.cpp's system info, e.g. ``("CUDA",)``; ``()`` for a
    CPU-only build.

    Newer builds list each backend as a section (``CUDA : ARCHS = 860 | ... | CPU : AVX = 1``),
    older ones as flags (``CUDA = 1 | METAL = 0``); both are understood.
    """
    found: list[str] = []
    for segment in system_info.split("|"):
        head, colon, rest = segment.partition(":")
        if colon:  # "CUDA : ARCHS = 860": a backend's section
            segment = rest
            _add(found, head, on=True)
        key, equals, value = segment.partition("=")
        if equals:  # "CUDA = 1": a flag
            _add(found, key, on=value.strip() not in ("0", ""))
    return tuple(found)


def _add(found: list[str], name: str, *, on: bool) -> None:
    name = name.strip().upper()
    if on and name in _GPU_BACKENDS and name not in found:
        found.append(name)


def _usable_cores() -> int | None:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return None


def detect_hardware(*, gpu_offload_supported: bool | None = None) -> Hardware:
    """Probe this machine (a few milliseconds; NVML or ``nvidia-smi`` only if installed).

    ``gpu_offload_supported``: whether the engine can use a GPU (see :func:`gpu_backends`);
    recorded as given.
    """
    memory = psutil.virtual_memory()
    system = platform.system()
    if system == "Linux":
        cpu_model, features = _linux_cpu()
    elif system == "Darwin":
        cpu_model, features = _mac_cpu()
    else:
        cpu_model, features = platform.processor(), ()
    gpus = _nvidia_gpus()
    if system == "Darwin" and platform.machine() == "arm64":
        gpus += (
            GPU(
                name="Apple GPU (Metal)",
                memory_mb=memory.total // 2**20,
                kind="metal",
                memory_free_mb=memory.available // 2**20,
                unified=True,
            ),
        )
    logical = os.cpu_count() or 1
    return Hardware(
        logical_cores=logical,
        physical_cores=psutil.cpu_count(logical=False) or logical,
        memory_total_mb=memory.total // 2**20,
        memory_available_mb=memory.available // 2**20,
        cpu_model=cpu_model,
        cpu_features=features,
        gpus=gpus,
        system=system,
        machine=platform.machine(),
        gpu_offload_supported=gpu_offload_supported,
        usable_cores=_usable_cores(),
    )


#: memory a loaded model needs besides its weights and KV cache: compute buffers, the logits
#: buffer, the tokenizer (MB; an estimate, on the generous side for models up to ~8B)
BASE_OVERHEAD_MB = 150


def estimate_model_memory(
    file_bytes: int, context_tokens: int = 4096, *, kv_bytes_per_token: int | None = None
) -> int:
    """Rough resident memory (MB) of a GGUF model: weights, KV cache and compute buffers.

    Without ``kv_bytes_per_token`` (the model's shape unknown) the KV cache and scratch buffers
    are guessed as 0.05 MB per token of context, about right for models under 1B; with it the
    KV cache is sized exactly (16-bit keys and values) plus 0.02 MB per token of scratch.
    """
    weights = file_bytes / 2**20
    per_token = 0.05 if kv_bytes_per_token is None else kv_bytes_per_token / 2**20 + 0.02
    return int(weights * 1.1 + BASE_OVERHEAD_MB + context_tokens * per_token)


def fits(file_bytes: int, hardware: Hardware, *, context_tokens: int = 4096) -> tuple[bool, str]:
    """Whether a model of ``file_bytes`` can load here, and why (not)."""
    need = estimate_model_memory(file_bytes, context_tokens)
    have = hardware.memory_available_mb
    if need > have:
        return False, f"needs ~{need} MB, {have} MB of memory available"
    return True, f"needs ~{need} MB of {have} MB available"
