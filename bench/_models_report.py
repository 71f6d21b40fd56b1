"""Report of the models benchmark (``bench/models.py``, which runs it): ``models.md``.

Every number comes from the results dictionary the runner fills; nothing here measures.
"""

from __future__ import annotations

from typing import Any

import _machine

MIB = 2**20
WORKLOAD_GOAL = 5.0
DECODE_GOAL = 1.05
VARIANT_LABELS = {
    "none": "no reuse",
    "last": "last sequence only",
    "shoal": "Shoal prefix cache",
}


def _s(summary: dict[str, Any] | None, unit: str = " s", digits: int = 2) -> str:
    if not summary or summary.get("median") is None:
        return "n/a"
    m, lo, hi = summary["median"], summary["min"], summary["max"]
    if summary.get("n", 0) <= 1 or lo == hi:
        return f"{m:.{digits}f}{unit}"
    return f"{m:.{digits}f}{unit} ({lo:.{digits}f}–{hi:.{digits}f})"


def _x(summary: dict[str, Any] | None) -> str:
    return _s(summary, "×", 2)


def _goals(results: dict[str, Any]) -> list[str]:
    lines = ["## Goals", "", "| goal | model | measured | met |", "|---|---|---|---|"]
    for model, data in results["workload"].items():
        speedup = data["summary"]["speedup_warm"]
        per_round = ", ".join(f"{r:.2f}×" for r in data["summary"]["speedup_warm_per_round"])
        lines.append(
            f"| interleaved two-agent workload: Shoal ≥ {WORKLOAD_GOAL:.0f}× faster per warm "
            f"turn than llama-cpp-python's server | {model} | {speedup:.2f}× (rounds: "
            f"{per_round}) | {'yes' if speedup >= WORKLOAD_GOAL else 'no'} |"
        )
    for model, data in results["decode"].items():
        ratio = data["raw_over_shoal_decode"]
        met = ratio["median"] is not None and ratio["median"] <= DECODE_GOAL
        lines.append(
            f"| decode speed within 5% of raw `llama_cpp.Llama` (raw tok/s ÷ Shoal tok/s ≤ "
            f"{DECODE_GOAL}) | {model} | {_x(ratio)} | {'yes' if met else 'no'} |"
        )
    for model, data in results["memory"].items():
        lines.append(
            f"| peak memory per loaded model reported | {model} | "
            f"{data['peak_rss'] / MIB:.0f} MiB peak | yes |"
        )
    return [*lines, ""]


def _support(results: dict[str, Any]) -> list[str]:
    if not results["support"]:
        return []
    lines = [
        "## 1. Support agent turns, in process",
        "",
        "The support example agent (`examples/support/agent.yaml`: instructions, three tools, "
        "a tool call then an answer per turn). Two users take turns `A1 B1 A2 B2`. "
        "*First token* is the time to the first answer text (after the tool call and its result "
        "are evaluated); *total* is the whole turn. *Evaluated* is the prompt tokens the engine "
        "computed over the turn's model requests (the rest were reused). Median (min–max) over "
        "the rounds; speed-ups are per round against the variant in the same round.",
        "",
    ]
    for model, data in results["support"].items():
        lines += [
            f"### {model}",
            "",
            "| turn | variant | first token | total | evaluated / prompt tokens |",
            "|---|---|---|---|---|",
        ]
        for kind, row in data["summary"].items():
            for variant, label in VARIANT_LABELS.items():
                v = row[variant]
                lines.append(
                    f"| {kind} | {label} | {_s(v['ttft_s'])} | {_s(v['total_s'])} | "
                    f"{_s(v['evaluated_prompt_tokens'], '', 0)} / "
                    f"{_s(v['prompt_tokens'], '', 0)} |"
                )
        lines += [
            "",
            "| turn | total: no reuse ÷ Shoal | total: last-sequence ÷ Shoal | "
            "first token: no reuse ÷ Shoal | first token: last-sequence ÷ Shoal | "
            "same answers |",
            "|---|---|---|---|---|---|",
        ]
        for kind, row in data["summary"].items():
            lines.append(
                f"| {kind} | {_x(row['speedup_total_vs_none'])} | "
                f"{_x(row['speedup_total_vs_last'])} | {_x(row['speedup_ttft_vs_none'])} | "
                f"{_x(row['speedup_ttft_vs_last'])} | {'yes' if row['same_answers'] else 'NO'} |"
            )
        lines.append("")
    return lines


def _workload(results: dict[str, Any]) -> list[str]:
    if not results["workload"]:
        return []
    lines = [
        "## 2. Two agents taking turns, through HTTP",
        "",
        "Two agents (travel desk, IT helpdesk), each with a ~300-token system prompt and three "
        "tools, alternate; every request names the tool to call and asks a new question. "
        "`shoal serve` vs `python -m llama_cpp.server --chat_format chatml-function-calling` "
        "(same GGUF, n_ctx, threads, batch). One request at a time. The first request of each "
        "agent on each server is *cold*; the rest are *warm turns*.",
        "",
        "| model | server | cold mean | warm mean | warm median | valid calls | "
        "prompt tokens cached (Shoal) |",
        "|---|---|---|---|---|---|---|",
    ]
    for model, data in results["workload"].items():
        summary = data["summary"]
        turns = [t for run in data["rounds"] for t in run["shoal"]]
        cached = [
            t["cached_tokens"] / t["prompt_tokens"]
            for t in turns
            if t.get("cached_tokens") is not None and t.get("prompt_tokens")
        ]
        share = f"{100 * sum(cached) / len(cached):.0f}% mean" if cached else "n/a"
        for name, label in (("shoal", "Shoal"), ("baseline", "llama_cpp.server")):
            s = summary[name]
            lines.append(
                f"| {model} | {label} | {s['cold_mean_s']:.2f} s | {s['warm_mean_s']:.2f} s | "
                f"{s['warm_median_s']:.2f} s | {s['valid_calls']}/{s['requests']} | "
                f"{share if name == 'shoal' else ''} |"
            )
        lines.append(
            f"| {model} | **speed-up per warm turn** | | **{summary['speedup_warm']:.2f}×** | | | |"
        )
        invalid = summary["baseline"]["invalid"] + summary["shoal"]["invalid"]
        if invalid:
            lines.append(f"| {model} | invalid calls | | {'; '.join(invalid[:6])} | | | |")
    return [*lines, ""]


def _decode(results: dict[str, Any]) -> list[str]:
    if not results["decode"]:
        return []
    lines = [
        "## 3. Decode speed: Shoal vs raw `llama_cpp.Llama`",
        "",
        "The same prompt, greedy, no tools, the same number of tokens; engine state cleared "
        "before each request. Decode tok/s is measured between the first and the last piece.",
        "",
        "| model | Shoal decode tok/s | raw decode tok/s | raw ÷ Shoal (decode) | "
        "Shoal ÷ raw (wall time) |",
        "|---|---|---|---|---|",
    ]
    for model, data in results["decode"].items():
        shoal = _machine.summary(r["shoal"]["decode_tokens_per_s"] for r in data["rounds"])
        raw = _machine.summary(r["raw"]["decode_tokens_per_s"] for r in data["rounds"])
        lines.append(
            f"| {model} | {_s(shoal, '', 1)} | {_s(raw, '', 1)} | "
            f"{_x(data['raw_over_shoal_decode'])} | {_x(data['raw_over_shoal_wall'])} |"
        )
    return [*lines, ""]


def _memory(results: dict[str, Any]) -> list[str]:
    if not results["memory"]:
        return []
    lines = [
        "## 4. Memory per loaded model",
        "",
        "A fresh process loads the model through Shoal and serves four requests with different "
        "system prompts; RSS before and after loading, after the requests, and the peak.",
        "",
        "| model | file | n_ctx | RSS before load | after load | after 4 requests | peak | "
        "prefix cache |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model, m in results["memory"].items():
        lines.append(
            f"| {model} | {m['file_bytes'] / MIB:.0f} MiB | {m['n_ctx']} | "
            f"{m['rss_before_load'] / MIB:.0f} MiB | {m['rss_after_load'] / MIB:.0f} MiB | "
            f"{m['rss_after_requests'] / MIB:.0f} MiB | {m['peak_rss'] / MIB:.0f} MiB | "
            f"{m['prefix_cache_bytes'] / MIB:.1f} MiB in {m['prefix_cache_entries']} entries |"
        )
    return [*lines, ""]


def markdown(results: dict[str, Any]) -> str:
    warnings = []
    for model, data in results["support"].items():
        for kind, row in data["summary"].items():
            if not row["same_answers"]:
                warnings.append(
                    f"{model}, {kind}: the variants' answers differ in some round. Not a wrong "
                    "restore: llama.cpp computes a token's state slightly differently when it "
                    "is decoded one at a time than in a prompt batch, so reusing an earlier "
                    "reply's state (the `last` variant does too) can flip a greedy near-tie "
                    "(docs/speed.md)"
                )
    lines = [
        "# Models benchmark: a turn pays only for what is new",
        "",
        f"Produced by `python bench/models.py` (started {results['started']}, finished "
        f"{results.get('finished')}); settings: `{results['settings']}`.",
        "",
        *(
            [
                f"Sections {results['updated_sections']['sections']} were run again at "
                f"{results['updated_sections']['at']} with settings "
                f"`{results['updated_sections']['settings']}` (`--update`).",
                "",
            ]
            if results.get("updated_sections")
            else []
        ),
        *_goals(results),
        *_support(results),
        *_workload(results),
        *_decode(results),
        *_memory(results),
        *_machine.markdown_tail(warnings, results["machine"]),
    ]
    return "\n".join(lines)
