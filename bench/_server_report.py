"""Report of the server benchmark: summaries, ratios, ``server.json`` and ``server.md``.

Part of ``bench/server.py`` (which runs it; this module is not a script). The runner records
every request of every round (:func:`summarise_run` sums one round up); :func:`derive_level`
pools a level's rounds per server and adds the Shoal ÷ baseline ratios; :func:`write` writes
the JSON (everything, every request included) and the Markdown (the tables, what they mean,
warnings, the machine).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import _machine

SHOAL = "shoal"
BASELINE = "baseline"
LABELS = {SHOAL: "Shoal (`shoal serve`)", BASELINE: "baseline (`llama_cpp.server`)"}
MIB = 2**20


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0–100), linear between the closest ranks (numpy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def role(cmdline: Sequence[str]) -> str:
    """A short name for a process of a server's tree, from its command line."""
    line = " ".join(cmdline)
    if "spawn_main" in line:
        return "engine worker"
    if "resource_tracker" in line:
        return "multiprocessing resource tracker"
    if "-m" in cmdline[:-1]:
        return cmdline[cmdline.index("-m") + 1]
    return line[:60]


def tree_rss(processes: Iterable[Any]) -> dict[str, Any]:
    """The summed RSS of a process tree now, and each process's (psutil processes)."""
    rows = []
    for process in processes:
        try:
            rows.append(
                {
                    "pid": process.pid,
                    "role": role(process.cmdline()),
                    "rss": process.memory_info().rss,
                }
            )
        except Exception:  # exited meanwhile
            continue
    total = sum(row["rss"] for row in rows)
    return {"bytes": total, "mib": round(total / MIB, 1), "processes": rows}


def _stats(records: list[dict[str, Any]], wall: float) -> dict[str, Any]:
    ok = [r for r in records if r["status"] is not None and 200 <= r["status"] < 300]
    rejected = [r for r in records if r["status"] == 429]
    errors = len(records) - len(ok) - len(rejected)
    latencies = [r["seconds"] for r in ok]
    valid = sum(1 for r in records if r["valid_call"])
    problems = Counter(r["problem"] for r in records if r.get("problem"))
    arguments = Counter(r["arguments"] for r in records if r.get("arguments") is not None)

    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 4)

    return {
        "requests": len(records),
        "ok": len(ok),
        "errors": errors,
        "rejected_429": len(rejected),
        "valid_calls": valid,
        "valid_rate": round(valid / len(records), 4) if records else None,
        "wall_s": round(wall, 4),
        "requests_per_s": round(len(ok) / wall, 4) if wall > 0 else None,
        "p50_s": rounded(percentile(latencies, 50)),
        "p95_s": rounded(percentile(latencies, 95)),
        "max_s": rounded(max(latencies, default=None)),
        "problems": dict(problems.most_common(5)),
        "arguments": dict(arguments.most_common(5)),
    }


def summarise_run(records: list[dict[str, Any]], wall: float) -> dict[str, Any]:
    """One server's figures for one round of one level."""
    return _stats(records, wall)


def other_share(runs: Iterable[dict[str, Any]]) -> float | None:
    """The share of the machine's CPU capacity that other processes (not the server measured,
    not the load generator) used during the runs: 0 on a quiet machine."""
    runs = list(runs)
    capacity = sum(float(run["wall_s"]) * int(run["cores"]) for run in runs)
    if not capacity:
        return None
    return round(sum(float(run["other_cpu_seconds"]) for run in runs) / capacity, 4)


def _ratio(ours: float | None, theirs: float | None) -> float | None:
    if ours is None or not theirs:
        return None
    return round(ours / theirs, 4)


def derive_level(level: dict[str, Any], names: list[str]) -> None:
    """Pool a level's rounds per server (figures over all its requests, requests/s over the
    summed wall time, the highest peak RSS) and add the Shoal ÷ baseline ratios."""
    pooled: dict[str, dict[str, Any]] = {}
    for name in names:
        runs = [row[name] for row in level["rounds"]]
        records = [r for run in runs for r in run["records"]]
        stats = _stats(records, sum(run["wall_s"] for run in runs))
        stats["peak_rss"] = max(run["peak_rss"] for run in runs)
        stats["peak_rss_mib"] = round(stats["peak_rss"] / MIB, 1)
        cpu = sum(run["cpu_seconds"] for run in runs)
        stats["cpu_s_per_request"] = round(cpu / len(records), 4) if records else None
        stats["other_cpu_share"] = other_share(runs)
        pooled[name] = stats
    level["summary"] = pooled
    if SHOAL in pooled and BASELINE in pooled:
        ours, theirs = pooled[SHOAL], pooled[BASELINE]
        level["shoal_over_baseline"] = {
            "requests_per_s": _ratio(ours["requests_per_s"], theirs["requests_per_s"]),
            "requests_per_s_per_round": [
                _ratio(row[SHOAL]["requests_per_s"], row[BASELINE]["requests_per_s"])
                for row in level["rounds"]
            ],
            "p50_s": _ratio(ours["p50_s"], theirs["p50_s"]),
            "p95_s": _ratio(ours["p95_s"], theirs["p95_s"]),
            "peak_rss": _ratio(ours["peak_rss"], theirs["peak_rss"]),
            "cpu_s_per_request": _ratio(ours["cpu_s_per_request"], theirs["cpu_s_per_request"]),
        }


def clients(n: int) -> str:
    return f"{n} client" if n == 1 else f"{n} clients"


def _mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value / MIB:.0f}"


def _s(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _x(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}×"


def run_line(run: dict[str, Any]) -> str:
    """One round of one server, for progress."""
    return (
        f"{run['requests']} requests in {run['wall_s']:.1f} s: {_s(run['requests_per_s'])} req/s, "
        f"p50 {_s(run['p50_s'])} s, p95 {_s(run['p95_s'])} s, "
        f"{run['valid_calls']}/{run['requests']} valid calls, {run['errors']} errors, "
        f"{run['rejected_429']} 429s, peak RSS {run['peak_rss'] / MIB:.0f} MiB, "
        f"other processes {other_share([run]) or 0:.0%} of the CPU"
    )


def level_line(level: dict[str, Any]) -> str:
    ratios = level.get("shoal_over_baseline") or {}
    return (
        f"Shoal ÷ baseline: req/s {_x(ratios.get('requests_per_s'))}, "
        f"p50 {_x(ratios.get('p50_s'))}, p95 {_x(ratios.get('p95_s'))}, "
        f"peak RSS {_x(ratios.get('peak_rss'))}"
    )


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The results as plain lines, printed at the end of a run."""
    lines = []
    for level in report["levels"]:
        for name, stats in level["summary"].items():
            lines.append(
                f"{clients(level['clients']):>10} {name:>8}: {_s(stats['requests_per_s'])} req/s, "
                f"p50 {_s(stats['p50_s'])} s, p95 {_s(stats['p95_s'])} s, "
                f"errors {stats['errors']}, 429s {stats['rejected_429']}, "
                f"valid {stats['valid_calls']}/{stats['requests']}, "
                f"peak RSS {stats['peak_rss_mib']} MiB"
            )
        lines.append(f"{clients(level['clients']):>10}: " + level_line(level))
    lines += [f"warning: {w}" for w in report.get("warnings", [])]
    return lines


def warnings(report: dict[str, Any]) -> list[str]:
    """What a reader of the numbers should know: a busy machine, code changes, errors."""
    out: list[str] = []
    machine = report["machine"]
    # The load average is no guide here: the servers' own two engine threads keep it near 2
    # while they generate. What other processes took is measured per round instead.
    shares = [
        (level["clients"], name, stats["other_cpu_share"])
        for level in report["levels"]
        for name, stats in level["summary"].items()
        if stats["other_cpu_share"] is not None
    ]
    noisy = [f"{clients(c)}, {n}: {share:.0%}" for c, n, share in shares if share > 0.1]
    if noisy:
        out.append(
            "other processes used more than 10% of the CPU during some levels ("
            + ", ".join(noisy)
            + "): on 2 cores that slows the engine of the server measured; compare the two "
            "servers level by level, where the shares are alike"
        )
    for level in report["levels"]:
        per_round = [
            r
            for r in (level.get("shoal_over_baseline") or {}).get("requests_per_s_per_round", [])
            if r
        ]
        if len(per_round) > 1 and max(per_round) / min(per_round) > 1.25:
            out.append(
                f"{clients(level['clients'])}: the req/s ratio varied from round to round "
                f"({min(per_round):.2f}–{max(per_round):.2f}×) although other processes took "
                "little CPU: the speed of this virtual machine drifts by tens of percent from "
                "minute to minute; the pooled ratio averages over it, and a difference "
                "smaller than that spread is not a difference"
            )
    for name, entry in report["servers"].items():
        after = (entry.get("idle_rss_after_warm_up") or {}).get("bytes")
        last = last_round_rss(report, name)
        if after and last and last > 1.25 * after:
            out.append(
                f"{name}: the RSS of its process tree grew from {after / MIB:.0f} MiB after the "
                f"warm-up to {last / MIB:.0f} MiB at its peak in the last round, with the "
                "identical request repeated: it keeps memory from request to request"
            )
    if machine.get("git_src_dirty"):
        out.append("src/ had uncommitted changes: the numbers are for the work tree, not HEAD")
    for level in report["levels"]:
        for name, stats in level["summary"].items():
            if stats["errors"]:
                out.append(
                    f"{clients(level['clients'])}, {name}: {stats['errors']} error(s): "
                    + "; ".join(f"{p} ({n})" for p, n in stats["problems"].items())
                )
            if stats["rejected_429"]:
                out.append(f"{clients(level['clients'])}, {name}: {stats['rejected_429']} 429s")
    health = (report["servers"].get(SHOAL) or {}).get("health_at_end") or {}
    for ref, model in (health.get("models") or {}).items():
        if model.get("restarts"):
            out.append(f"Shoal's worker for {ref} restarted {model['restarts']} time(s)")
    return out


def last_round_rss(report: dict[str, Any], name: str) -> int | None:
    """A server's peak RSS in the last round it ran (None before any)."""
    for level in reversed(report["levels"]):
        for row in reversed(level["rounds"]):
            if isinstance(row.get(name), dict):
                return int(row[name]["peak_rss"])
    return None


def _table(report: dict[str, Any]) -> list[str]:
    header = [
        "clients",
        "server",
        "requests",
        "req/s",
        "p50 s",
        "p95 s",
        "errors",
        "429s",
        "valid tool calls",
        "peak RSS MiB",
        "CPU s / request",
        "others' CPU",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for level in report["levels"]:
        for name, stats in level["summary"].items():
            rate = stats["valid_rate"]
            lines.append(
                "| "
                + " | ".join(
                    [
                        str(level["clients"]),
                        LABELS.get(name, name),
                        str(stats["requests"]),
                        _s(stats["requests_per_s"]),
                        _s(stats["p50_s"]),
                        _s(stats["p95_s"]),
                        str(stats["errors"]),
                        str(stats["rejected_429"]),
                        f"{stats['valid_calls']}/{stats['requests']}"
                        + ("" if rate is None else f" ({rate:.0%})"),
                        f"{stats['peak_rss_mib']:.0f}",
                        _s(stats["cpu_s_per_request"]),
                        "n/a"
                        if stats["other_cpu_share"] is None
                        else f"{stats['other_cpu_share']:.0%}",
                    ]
                )
                + " |"
            )
    return lines


def _ratio_table(report: dict[str, Any]) -> list[str]:
    header = [
        "clients",
        "req/s (per round)",
        "p50 latency",
        "p95 latency",
        "peak RSS",
        "CPU s / request",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for level in report["levels"]:
        ratios = level.get("shoal_over_baseline")
        if not ratios:
            continue
        rounds = ", ".join(_x(r) for r in ratios["requests_per_s_per_round"])
        lines.append(
            f"| {level['clients']} | **{_x(ratios['requests_per_s'])}** ({rounds}) | "
            f"{_x(ratios['p50_s'])} | {_x(ratios['p95_s'])} | {_x(ratios['peak_rss'])} | "
            f"{_x(ratios['cpu_s_per_request'])} |"
        )
    return lines


def _servers(report: dict[str, Any]) -> list[str]:
    lines = [
        "| server | start → ready s | RSS after start MiB | RSS after warm-up MiB "
        "| peak RSS in the last round MiB | processes after warm-up | warm-up reply |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, entry in report["servers"].items():
        if "start_s" not in entry:
            continue
        after = entry.get("idle_rss_after_warm_up") or {}
        warm = entry.get("warm_up") or {}
        reply = (
            f"`{warm.get('name')}({warm.get('arguments')})`, "
            f"{warm.get('completion_tokens')} completion tokens"
            if warm.get("valid_call")
            else f"{warm.get('problem', 'n/a')}"
        )
        processes = ", ".join(
            f"{p['role']} {p['rss'] / MIB:.0f} MiB" for p in after.get("processes", [])
        )
        lines.append(
            f"| {LABELS.get(name, name)} | {entry['start_s']:.1f} | "
            f"{entry['idle_rss_after_start']['mib']:.0f} | {after.get('mib', 0):.0f} | "
            f"{_mib(last_round_rss(report, name))} | {processes} | {reply} |"
        )
    return lines


def write_markdown(report: dict[str, Any], path: Path) -> None:
    settings = report["settings"]
    body = settings["request_body"]
    engine = settings.get("engine") or {}
    lines = ["# Server: `shoal serve` against llama-cpp-python's own server", ""]
    if not report["complete"]:
        why = "interrupted" if report.get("interrupted") else report.get("error", "stopped")
        lines += [f"**Partial results** ({why}): only what was measured before it stopped.", ""]
    started = report["machine"].get("date_utc")
    lines += [
        f"`{report['command']}`, run from {started} to {report.get('written_utc')} (UTC).",
        "",
        f"Model `{settings['model']}` (`{Path(settings.get('model_path', '?')).name}`), the same "
        f"file for both; engine for both: n_ctx {engine.get('n_ctx')}, "
        f"{engine.get('n_threads')} threads ({engine.get('n_threads_batch')} for batches), "
        f"n_batch {engine.get('n_batch')}. Per level, {settings['rounds']} rounds; in each, every "
        f"client sends {settings['requests_per_client_per_round']} requests back to back, and "
        "the two servers take turns (never both loaded at once), the order rotating every round. "
        "Both servers are up for the whole run, and each gets one untimed warm-up request. "
        'One request, identical for both: "What is the weather in Paris?" with one '
        f"`{body['tools'][0]['function']['name']}(city: string)` tool, "
        f'`tool_choice: "{body["tool_choice"]}"`, max_tokens {body["max_tokens"]}, temperature '
        f"{body['temperature']}, not streamed.",
        "",
        "## Results",
        "",
        *_table(report),
        "",
        "## Shoal ÷ baseline (same run)",
        "",
        "Above 1 means Shoal has more of it: for req/s that is better, for latency, RSS and CPU "
        "worse. The req/s ratio is over the pooled rounds, then per round in brackets.",
        "",
        *_ratio_table(report),
        "",
        "## The servers",
        "",
        *_servers(report),
        "",
        "## What the columns mean",
        "",
        "- **Shoal**: `" + report["servers"].get(SHOAL, {}).get("command", "shoal serve") + "` "
        "with `SHOAL_HOME` in a temporary directory: the engine runs in a worker process "
        f"(crash isolation), one request generates at a time, up to {settings['shoal_max_queue']} "
        "wait (then 429). Its tool calls are constrained by the tool's schema and validated.",
        "- **baseline**: `"
        + report["servers"].get(BASELINE, {}).get("command", "python -m llama_cpp.server")
        + "`: llama-cpp-python's server with its OpenAI-style function-calling chat format, "
        "same GGUF and engine settings; it serialises requests behind a lock, with no queue "
        'limit. With `tool_choice: "auto"` that chat format first lets the model choose, under '
        "a grammar, between a call and a message, then writes the arguments under a grammar made "
        "from the tool's schema, then asks the model, under a third grammar, whether another "
        "call follows: three completions per reply; it ignores `max_tokens` there. `auto` "
        "because it is OpenAI's default "
        "and the only choice with which the model decides whether to call; it is also the only "
        'string value besides "none" that this chat format accepts ("required" fails an '
        "assert in it: HTTP 500).",
        "- **req/s**: successful replies ÷ wall time from the first request sent to the last "
        "reply, over all rounds. **p50/p95 s**: latency of the successful requests, send to "
        "complete reply, queueing in the server included (both servers run one generation at a "
        "time, so with N clients a request waits for about N−1 others).",
        "- **errors**: replies other than 2xx and 429, and transport errors (timeouts, refused "
        "connections); **429s** are counted apart (Shoal's queue limit; none is expected with "
        "16 clients and a queue of 64).",
        "- **valid tool calls**: " + settings["valid_call"] + ".",
        "- **warm-up reply**: the call and `usage.completion_tokens` of the untimed first "
        "request (every timed reply is in the JSON). The baseline's usage counts only the "
        "arguments' completion, not the two others.",
        "- **peak RSS**: the highest sum of RSS over the server's process tree (the server and "
        f"all its descendants), sampled every {settings['rss_sample_interval_s']} s during the "
        "level. Summed RSS counts pages shared between processes (the Python runtime, the "
        "llama.cpp library) once per process, so Shoal's two-process tree is overstated "
        "somewhat; the per-process figures are in the JSON. **CPU s / request**: user + system "
        "CPU time of the tree during the level ÷ requests. **others' CPU**: the share of the "
        "machine's CPU capacity used meanwhile by every other process (not the server "
        "measured, not the load generator; the idle other server included), plus the CPU time "
        "the hypervisor stole for other virtual machines: the noise that level ran in, 0% on a "
        "quiet machine.",
        "",
    ]
    lines += _machine.markdown_tail(report.get("warnings") or (), report["machine"])
    path.write_text("\n".join(lines))


def write(report: dict[str, Any], output: Path) -> tuple[Path, Path]:
    """Write ``<output>.json`` and ``<output>.md`` (again after every level)."""
    report["warnings"] = warnings(report)
    output.parent.mkdir(parents=True, exist_ok=True)
    json_path = output.with_name(output.name + ".json")
    md_path = output.with_name(output.name + ".md")
    partial = output.with_name(output.name + ".json.tmp")
    partial.write_text(json.dumps(report, indent=2, default=str) + "\n")
    partial.replace(json_path)
    write_markdown(report, md_path)
    return json_path, md_path
