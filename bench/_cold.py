"""Cold start of the core benchmark: fresh subprocesses, timed from just before the spawn.

Part 1 of ``bench/core.py`` (which runs it; this module is not a script). Each round spawns four
children, in an order that rotates every round: a bare interpreter (baseline for
``import shoal``), ``import shoal`` alone (which also records whether it loaded any of
:data:`HEAVY_MODULES`), ``import llama_cpp`` + ``Llama(...)`` (baseline for loading) and
``import shoal`` + ``resolve_model`` + ``model.load()``. ``time.monotonic()`` is system-wide on
Linux, so the parent's reading just before the spawn and the child's readings share a clock.
One untimed warm-up child runs first, so the GGUF is in the page cache and the ``.pyc`` files are
compiled: "cold" means a new process, not a cold disk. Each child also reports its peak RSS
(``ru_maxrss``) and, for the loads, its current RSS right after loading.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

from _machine import ROOT, interleaved_rounds, progress, summary

#: modules ``import shoal`` must not load (house style: heavy dependencies load lazily)
HEAVY_MODULES = ("llama_cpp", "numpy", "fastapi", "uvicorn", "opentelemetry", "psycopg")

# Each child prints one JSON line. Clock readings are taken before anything else is imported.
_CHILD_BARE = """
import time
t0 = time.monotonic()
import json, resource
print(json.dumps({"t0": t0, "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""

_CHILD_IMPORT = """
import time
t0 = time.monotonic()
import shoal
t1 = time.monotonic()
import json, resource, sys
print(json.dumps({
    "t0": t0, "t_imported": t1,
    "heavy_loaded": [m for m in HEAVY if m in sys.modules],
    "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
}))
""".replace("HEAVY", repr(HEAVY_MODULES))

_CHILD_SHOAL_LOAD = """
import time, sys
t0 = time.monotonic()
import shoal
t1 = time.monotonic()
model = shoal.resolve_model(sys.argv[1])
t2 = time.monotonic()
model.load()
t3 = time.monotonic()
import json, resource, psutil
llm = model._llm
print(json.dumps({
    "t0": t0, "t_imported": t1, "t_resolved": t2, "t_loaded": t3,
    "load_seconds_reported": model.load_seconds,
    "n_ctx": llm.n_ctx(), "n_threads": llm.n_threads, "n_batch": llm.n_batch,
    "n_threads_batch": llm.n_threads_batch, "model_path": str(model.model_path),
    "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    "rss_after_load": psutil.Process().memory_info().rss,
}))
"""

_CHILD_RAW_LOAD = """
import time, sys
t0 = time.monotonic()
import llama_cpp
t1 = time.monotonic()
llm = llama_cpp.Llama(
    model_path=sys.argv[1], n_ctx=int(sys.argv[2]), n_threads=int(sys.argv[3]), verbose=False
)
t2 = time.monotonic()
import json, resource, psutil
print(json.dumps({
    "t0": t0, "t_imported": t1, "t_loaded": t2,
    "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    "rss_after_load": psutil.Process().memory_info().rss,
}))
"""


def _run_child(code: str, *args: str) -> dict[str, Any]:
    spawned = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"benchmark child failed ({done.returncode}):\n{done.stderr[-3000:]}")
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    data: dict[str, Any] = json.loads(lines[-1])
    data["t_spawn"] = spawned
    return data


def bench_cold(rounds: int, model: str) -> dict[str, Any]:
    """Run the cold-start rounds for ``model`` (a name for ``shoal.resolve_model``)."""
    progress("cold start: warm-up child (fills the page cache, compiles .pyc)")
    first = _run_child(_CHILD_SHOAL_LOAD, model)
    shape = (first["model_path"], str(first["n_ctx"]), str(first["n_threads"]))
    kinds = {
        "bare_python": lambda: _run_child(_CHILD_BARE),
        "import_shoal": lambda: _run_child(_CHILD_IMPORT),
        "raw_load": lambda: _run_child(_CHILD_RAW_LOAD, *shape),
        "shoal_load": lambda: _run_child(_CHILD_SHOAL_LOAD, model),
    }
    runs = interleaved_rounds(kinds, rounds, "cold start")

    def per_round(fn: Any) -> list[float]:
        return [fn(row) for row in runs]

    bare = per_round(lambda w: w["bare_python"]["t0"] - w["bare_python"]["t_spawn"])
    imp_spawn = per_round(lambda w: w["import_shoal"]["t_imported"] - w["import_shoal"]["t_spawn"])
    imp_only = per_round(lambda w: w["import_shoal"]["t_imported"] - w["import_shoal"]["t0"])
    s = "shoal_load"
    shoal_spawn = per_round(lambda w: w[s]["t_loaded"] - w[s]["t_spawn"])
    shoal_load = per_round(lambda w: w[s]["t_loaded"] - w[s]["t_resolved"])
    shoal_resolve = per_round(lambda w: w[s]["t_resolved"] - w[s]["t_imported"])
    shoal_import = per_round(lambda w: w[s]["t_imported"] - w[s]["t0"])
    # model.load_seconds: Llama(...) plus the chat template, after llama_cpp is imported
    shoal_engine = per_round(lambda w: w[s]["load_seconds_reported"])
    raw_spawn = per_round(lambda w: w["raw_load"]["t_loaded"] - w["raw_load"]["t_spawn"])
    raw_load = per_round(lambda w: w["raw_load"]["t_loaded"] - w["raw_load"]["t0"])
    raw_ctor = per_round(lambda w: w["raw_load"]["t_loaded"] - w["raw_load"]["t_imported"])
    heavy = sorted({m for w in runs for m in w["import_shoal"]["heavy_loaded"]})
    return {
        "rounds": rounds,
        "model_shape": {
            "n_ctx": first["n_ctx"],
            "n_threads": first["n_threads"],
            "n_batch": first["n_batch"],
            "n_threads_batch": first["n_threads_batch"],
        },
        "bare_python_start_s": summary(bare),
        "import_shoal_from_spawn_s": summary(imp_spawn),
        "import_shoal_in_process_s": summary(imp_only),
        "import_shoal_ratio_vs_bare_python": summary(
            a / b for a, b in zip(imp_spawn, bare, strict=True)
        ),
        "import_shoal_heavy_modules_loaded": heavy,
        "shoal_load_from_spawn_s": summary(shoal_spawn),
        "shoal_load_from_before_load_s": summary(shoal_load),
        "shoal_load_parts_s": {
            "import_shoal": summary(shoal_import),
            "resolve_model": summary(shoal_resolve),
            "model_load": summary(shoal_load),
            "model_load_seconds_reported": summary(shoal_engine),
        },
        "raw_load_from_spawn_s": summary(raw_spawn),
        "raw_load_import_plus_llama_s": summary(raw_load),
        "raw_llama_constructor_s": summary(raw_ctor),
        "load_ratio_from_spawn": summary(
            a / b for a, b in zip(shoal_spawn, raw_spawn, strict=True)
        ),
        "load_ratio_from_before_load": summary(
            a / b for a, b in zip(shoal_load, raw_load, strict=True)
        ),
        "load_ratio_llama_plus_template_vs_constructor": summary(
            a / b for a, b in zip(shoal_engine, raw_ctor, strict=True)
        ),
        "shoal_load_peak_rss_mib": summary(w[s]["maxrss_kb"] / 1024 for w in runs),
        "raw_load_peak_rss_mib": summary(w["raw_load"]["maxrss_kb"] / 1024 for w in runs),
        "peak_rss_ratio": summary(w[s]["maxrss_kb"] / w["raw_load"]["maxrss_kb"] for w in runs),
        "shoal_rss_after_load_mib": summary(w[s]["rss_after_load"] / 2**20 for w in runs),
        "raw_rss_after_load_mib": summary(w["raw_load"]["rss_after_load"] / 2**20 for w in runs),
        "import_shoal_peak_rss_mib": summary(w["import_shoal"]["maxrss_kb"] / 1024 for w in runs),
        "bare_python_peak_rss_mib": summary(w["bare_python"]["maxrss_kb"] / 1024 for w in runs),
        "runs": runs,
    }
