"""What this machine offers a model: cores, memory, CPU features, accelerators.

Read from the operating system without importing any engine: ``/proc/cpuinfo`` on Linux,
``sysctl`` on macOS, ``nvidia-smi`` when present. :func:`fits` answers whether a model file of
a given size can be loaded with room to spare.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

__all__ = ["GPU", "Hardware", "detect_hardware", "estimate_model_memory", "fits"]

#: CPU features llama.cpp uses for faster matrix kernels, in the order worth reporting
_INTERESTING_FLAGS = (
    "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni",
    "amx_int8", "neon", "asimd", "sve", "dotprod", "i8mm",
)  # fmt: skip


@dataclass(frozen=True)
class GPU:
    name: str
    memory_mb: int
    kind: str  # "cuda" or "metal"


@dataclass(frozen=True)
class Hardware:
    logical_cores: int
    physical_cores: int
    memory_total_mb: int
    memory_available_mb: int
    cpu_model: str
    cpu_features: tuple[str, ...]
    gpus: tuple[GPU, ...] = field(default=())
    system: str = ""
    machine: str = ""

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


def _nvidia_gpus() -> tuple[GPU, ...]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return ()
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    gpus = []
    for line in out.strip().splitlines():
        name, _, memory = line.rpartition(",")
        if name and memory.strip().isdigit():
            gpus.append(GPU(name=name.strip(), memory_mb=int(memory.strip()), kind="cuda"))
    return tuple(gpus)


def detect_hardware() -> Hardware:
    """Probe this machine (takes a few milliseconds; ``nvidia-smi`` only if installed)."""
    memory = psutil.virtual_memory()
    system = platform.system()
    if system == "Linux":
        cpu_model, features = _linux_cpu()
    else:
        cpu_model, features = platform.processor(), ()
    gpus = _nvidia_gpus()
    if system == "Darwin" and platform.machine() == "arm64":
        gpus += (GPU(name="Apple GPU (Metal)", memory_mb=memory.total // 2**20, kind="metal"),)
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
    )


def estimate_model_memory(file_bytes: int, context_tokens: int = 4096) -> int:
    """Rough resident memory (MB) of a GGUF model: weights, KV cache and compute buffers."""
    weights = file_bytes / 2**20
    # a small model's KV cache and scratch buffers at a few thousand tokens of context
    overhead = 150 + context_tokens * 0.05
    return int(weights * 1.1 + overhead)


def fits(file_bytes: int, hardware: Hardware, *, context_tokens: int = 4096) -> tuple[bool, str]:
    """Whether a model of ``file_bytes`` can load here, and why (not)."""
    need = estimate_model_memory(file_bytes, context_tokens)
    have = hardware.memory_available_mb
    if need > have:
        return False, f"needs ~{need} MB, {have} MB of memory available"
    return True, f"needs ~{need} MB of {have} MB available"
