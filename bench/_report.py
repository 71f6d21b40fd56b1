"""Report of the core benchmark: goals, warnings, and the JSON and Markdown result files.

Part of ``bench/core.py`` (which runs it; this module is not a script). :func:`finish` takes
the report dictionary the measurements filled in (``cold_start``, ``decode``, ``agent_turn``,
``memory``, ``machine``), judges the goals, derives the warnings, and writes ``core.json``
(everything, including every single run) and ``core.md`` (the tables, what each number means,
the goals, the warnings and the machine).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import _machine
from _cold import HEAVY_MODULES
from _machine import summary

#: the decode-overhead goal: raw tok/s / Shoal tok/s, median over the rounds
GOAL_DECODE_OVERHEAD = 1.05

_SHOAL_APIS = (("shoal_request", "request"), ("shoal_request_stream", "request_stream"))


def _fmt(stats: dict[str, Any], unit: str = "", digits: int = 3, scale: float = 1.0) -> str:
    if not stats or stats.get("median") is None:
        return "n/a"
    med, lo, hi = (stats[k] * scale for k in ("median", "min", "max"))
    return f"{med:.{digits}f}{unit} ({lo:.{digits}f}–{hi:.{digits}f})"


def _goals(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The goals, each with its value and whether it was met."""
    goals: list[dict[str, Any]] = []
    decode = report.get("decode")
    if decode:
        for name, label in (
            ("shoal_request", "LlamaCppModel.request"),
            ("shoal_request_stream", "LlamaCppModel.request_stream"),
        ):
            stats = decode[f"overhead_ratio_{name}"]
            goals.append(
                {
                    "goal": f"decode overhead of {label}: raw tok/s / Shoal tok/s "
                    f"<= {GOAL_DECODE_OVERHEAD} (median)",
                    "value": stats["median"],
                    "range": [stats["min"], stats["max"]],
                    "met": stats["median"] is not None and stats["median"] <= GOAL_DECODE_OVERHEAD,
                    # the whole min–max range on one side of the goal, or not
                    "clear": stats["median"] is not None
                    and not stats["min"] <= GOAL_DECODE_OVERHEAD < stats["max"],
                }
            )
    cold = report.get("cold_start")
    if cold:
        heavy = cold["import_shoal_heavy_modules_loaded"]
        goals.append(
            {
                "goal": "`import shoal` loads none of " + ", ".join(HEAVY_MODULES),
                "value": heavy or "none loaded",
                "met": not heavy,
            }
        )
    return goals


def _decode_noise_note(decode: dict[str, Any]) -> str | None:
    """A sentence for when the end-to-end ratios' range crosses the goal, saying what varied."""
    crossing = []
    for name, label in _SHOAL_APIS:
        stats = decode[f"overhead_ratio_{name}"]
        if stats["min"] is not None and stats["min"] <= GOAL_DECODE_OVERHEAD < stats["max"]:
            crossing.append((name, label, stats))
    if not crossing:
        return None
    parts = []
    for name, label, stats in crossing:
        equalised = decode[f"overhead_ratio_engine_equalised_{name}"]
        engine = decode[f"engine_time_ratio_{name}"]
        extra = decode[f"extra_non_engine_ms_per_token_{name}"]
        parts.append(
            f"`{label}`: end to end {stats['min']:.2f}–{stats['max']:.2f}, llama.cpp's own time "
            f"Shoal ÷ raw {engine['min']:.2f}–{engine['max']:.2f}, llama.cpp time equalised "
            f"{equalised['min']:.3f}–{equalised['max']:.3f}, "
            f"{extra['median']:.2f} ms per token outside llama.cpp over raw"
        )
    return (
        f"**Noise.** The end-to-end ratio's min–max crosses {GOAL_DECODE_OVERHEAD} ("
        + "; ".join(parts)
        + "). The spread follows llama.cpp's own evaluation time, the same work for both, "
        "which swings below 1 as well as above: that points to the machine rather than Shoal's "
        "code, and the median's verdict can flip between runs. The equalised ratio is the "
        "steadier estimate of what Shoal adds, but it leaves out any CPU that Shoal's threads "
        "take from llama.cpp's."
    )


def write_markdown(report: dict[str, Any], path: Path) -> None:
    """The Markdown result file: the tables, what each number means, the goals, the machine."""
    lines: list[str] = []
    add = lines.append
    quick = " (--quick: a smoke run, too few rounds to trust)" if report["quick"] else ""
    add(f"# Core benchmark: {report['model']}{quick}")
    add("")
    add(f"Produced by `{report['command']}` on {report['machine']['date_utc']}. ")
    add("Numbers are **median (min–max)** over the rounds; ratios are computed per round ")
    add("against a baseline measured in the same run, interleaved, then summarised.")
    add("")
    add("## Goals")
    add("")
    add("| goal | value | met |")
    add("|---|---|---|")
    for goal in report["goals"]:
        value = goal["value"]
        if isinstance(value, float):
            lo, hi = goal["range"]
            value = f"{value:.3f} ({lo:.3f}–{hi:.3f})"
        verdict = "yes" if goal["met"] else "**no**"
        if not goal.get("clear", True):
            verdict += " (the min–max range straddles the goal: within this machine's noise)"
        add(f"| {goal['goal']} | {value} | {verdict} |")
    add("")
    add("Other numbers have no target yet; they are recorded to be compared between commits ")
    add("(compare the ratios, not the seconds, when the machine or its load differs).")
    add("")

    cold = report.get("cold_start")
    if cold:
        add(f"## 1. Cold start (fresh subprocess, {cold['rounds']} rounds)")
        add("")
        add("| measure | seconds / value | meaning |")
        add("|---|---|---|")
        rows = [
            ("bare `python -c` start", _fmt(cold["bare_python_start_s"], " s"),
             "spawn to the first line of a child that imports nothing (baseline)"),
            ("`import shoal`, from spawn", _fmt(cold["import_shoal_from_spawn_s"], " s"),
             "spawn to `import shoal` done"),
            ("`import shoal` alone", _fmt(cold["import_shoal_in_process_s"], " s"),
             "the import statement itself, timed inside the child"),
            ("import ratio vs bare python", _fmt(cold["import_shoal_ratio_vs_bare_python"], "×"),
             "`import shoal` from spawn / bare start from spawn"),
            ("heavy modules after `import shoal`",
             ", ".join(cold["import_shoal_heavy_modules_loaded"]) or "none",
             "of " + ", ".join(HEAVY_MODULES)),
            ("Shoal load, from spawn", _fmt(cold["shoal_load_from_spawn_s"], " s"),
             "spawn to `model.load()` returned (import + resolve + load)"),
            ("Shoal load, from just before `load()`",
             _fmt(cold["shoal_load_from_before_load_s"], " s"),
             "`model.load()` alone (imports llama_cpp lazily, builds Llama, reads the template)"),
            ("… of which `resolve_model`", _fmt(cold["shoal_load_parts_s"]["resolve_model"], " s"),
             "finding the packaged GGUF"),
            ("… of which `Llama(...)` + template",
             _fmt(cold["shoal_load_parts_s"].get("model_load_seconds_reported"), " s"),
             "`model.load_seconds`: inside `load()`, after `llama_cpp` is imported"),
            ("raw load, from spawn", _fmt(cold["raw_load_from_spawn_s"], " s"),
             "spawn to `llama_cpp.Llama(...)` returned (baseline)"),
            ("raw `import llama_cpp` + `Llama(...)`",
             _fmt(cold["raw_load_import_plus_llama_s"], " s"),
             "baseline for Shoal's `load()` (same n_ctx and n_threads)"),
            ("raw `Llama(...)` alone", _fmt(cold["raw_llama_constructor_s"], " s"),
             "baseline for the `Llama(...)` + template line above"),
            ("**load ratio from spawn**", _fmt(cold["load_ratio_from_spawn"], "×"),
             "Shoal from spawn / raw from spawn"),
            ("**load ratio from before load**", _fmt(cold["load_ratio_from_before_load"], "×"),
             "Shoal `load()` / raw import + `Llama(...)`; below 1 when `import shoal` has "
             "already imported modules llama_cpp needs (jinja2, typing_extensions, …)"),
            ("load ratio, `Llama(...)` + template",
             _fmt(cold.get("load_ratio_llama_plus_template_vs_constructor"), "×"),
             "`model.load_seconds` / raw `Llama(...)`: the load without the imports"),
            ("peak RSS, Shoal load child", _fmt(cold["shoal_load_peak_rss_mib"], " MiB", 1),
             "`ru_maxrss` of the child after loading"),
            ("peak RSS, raw load child", _fmt(cold["raw_load_peak_rss_mib"], " MiB", 1),
             "`ru_maxrss` of the raw child (baseline)"),
            ("peak RSS ratio", _fmt(cold["peak_rss_ratio"], "×"), "Shoal child / raw child"),
            ("RSS after load, Shoal / raw",
             f"{_fmt(cold['shoal_rss_after_load_mib'], ' MiB', 1)} / "
             f"{_fmt(cold['raw_rss_after_load_mib'], ' MiB', 1)}",
             "psutil current RSS right after loading"),
            ("peak RSS, `import shoal` child", _fmt(cold["import_shoal_peak_rss_mib"], " MiB", 1),
             f"bare python: {_fmt(cold['bare_python_peak_rss_mib'], ' MiB', 1)}"),
        ]  # fmt: skip
        lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
        shape = cold["model_shape"]
        add("")
        add(
            f"Model context as Shoal loads it: n_ctx={shape['n_ctx']}, "
            f"n_threads={shape['n_threads']}, n_batch={shape['n_batch']}. The GGUF is in the "
            "page cache (an untimed warm-up child ran first): cold means a new process, not a "
            "cold disk."
        )
        add("")

    decode = report.get("decode")
    if decode:
        add(f"## 2. Decode throughput ({decode['rounds']} rounds, {decode['max_tokens']} tokens)")
        add("")
        add("| API | tok/s end to end | tok/s decode only | tokens | non-engine ms/token |")
        add("|---|---|---|---|---|")
        for name, label in (
            ("raw", "`Llama.create_completion(stream=True)` (baseline)"),
            ("shoal_request", "`LlamaCppModel.request`"),
            ("shoal_request_stream", "`LlamaCppModel.request_stream`"),
        ):
            d = decode[name]
            add(
                f"| {label} | {_fmt(d['tokens_per_s'], '', 1)} | "
                f"{_fmt(d['decode_tokens_per_s'], '', 1)} | "
                f"{_fmt(d['completion_tokens'], '', 0)} | "
                f"{_fmt(d['non_engine_ms_per_token'], '', 2)} |"
            )
        add("")
        add("| overhead (raw tok/s ÷ Shoal tok/s, per round) | ratio | goal |")
        add("|---|---|---|")
        for name, label in _SHOAL_APIS:
            stats = decode[f"overhead_ratio_{name}"]
            met = stats["median"] is not None and stats["median"] <= GOAL_DECODE_OVERHEAD
            add(
                f"| **{label}** | {_fmt(stats, '×')} | <= {GOAL_DECODE_OVERHEAD}: "
                f"{'met' if met else '**not met**'} |"
            )
        add(
            "| request_stream, decode only (first to last piece, no prefill) | "
            f"{_fmt(decode['decode_only_ratio_shoal_request_stream'], '×')} | (not the goal) |"
        )
        for name, label in _SHOAL_APIS:
            add(
                f"| {label}, llama.cpp time equalised | "
                f"{_fmt(decode[f'overhead_ratio_engine_equalised_{name}'], '×')} | "
                "(not the goal) |"
            )
        for name, label in _SHOAL_APIS:
            add(
                f"| {label}: llama.cpp eval time, Shoal ÷ raw (noise check) | "
                f"{_fmt(decode[f'engine_time_ratio_{name}'], '×')} | ≈ 1 |"
            )
            add(
                f"| {label}: extra non-engine ms per token over raw | "
                f"{_fmt(decode[f'extra_non_engine_ms_per_token_{name}'], ' ms', 2)} | |"
            )
        add("")
        note = _decode_noise_note(decode)
        if note:
            add(note)
            add("")
        same = (
            "yes"
            if decode["same_output_and_token_count"]
            else "**no**: " + "; ".join(decode["mismatches"][:5])
        )
        add(f"Same text and token count in every run (greedy): {same}. ")
        add(
            f"Prompt: {decode['prompt_tokens']} tokens, the same rendered chat prompt for both "
            "(`model.render_prompt`). "
            + decode["cache"]
            + f". Raw sampling arguments: `{json.dumps(decode['raw_sampling_arguments'])}`, "
            "the values Shoal uses for this request."
        )
        add("")
        add(
            "*tok/s end to end* = completion tokens / wall time from the call to the last piece "
            "(includes the prefill; for Shoal also prompt rendering, the worker thread and the "
            "async queue). *decode only* = (tokens − 1) / time from the first to the last text "
            "piece (streaming APIs only). *tokens* = the completion re-tokenized, as Shoal counts "
            "`usage.completion_tokens`. *non-engine ms/token* = (wall − time llama.cpp spent in "
            "`llama_decode`, from `llama_perf_context`) / tokens: the Python-side cost per token, "
            "which is less sensitive to a busy machine than tok/s. *llama.cpp time equalised* = "
            "(raw's llama.cpp time + Shoal's non-engine time) / raw's wall time, per round: the "
            "overhead ratio with the engine's share of the noise taken out; it leaves out one "
            "real cost, Shoal's event-loop thread taking CPU from llama.cpp's threads (which on "
            "2 cores shows up inside llama.cpp's time, as an eval-time ratio above 1). "
            "*Decode only* for `request_stream` leaves out the prefill, whose time varies a "
            "lot on a busy machine."
        )
        add("")

    agent = report.get("agent_turn")
    if agent:
        add(f"## 3. One warm tool-call turn ({agent['rounds']} rounds)")
        add("")
        runs = agent["runs"]
        evaluated_to_call = summary(
            r["engine_to_tool_call"]["n_prompt_eval"] for r in runs if r["engine_to_tool_call"]
        )
        evaluated_full = summary(r["engine_full_run"]["n_prompt_eval"] for r in runs)
        add(f'`{agent["spec"]}`, question "{agent["question"]}". {agent["warm"]}.')
        add("")
        add("| measure | value | meaning |")
        add("|---|---|---|")
        rows = [
            ("question → validated call", _fmt(agent["time_to_tool_call_s"], " s"),
             "`run_stream` start to the `ToolCallEvent` (arguments validated)"),
            ("question → final answer", _fmt(agent["full_run_s"], " s"),
             "`run_stream` start to the `FinalEvent`"),
            ("`agent.run()`", _fmt(agent["agent_run_s"], " s"),
             "the same run through `run()`, timed separately, interleaved"),
            ("llama.cpp eval time to the call", _fmt(agent["engine_to_tool_call_s"], " s"),
             "baseline: the model's own compute in the same run"),
            ("**wall ÷ engine, to the call**", _fmt(agent["wall_over_engine_to_tool_call"], "×"),
             "what prompt building, sampling, the grammar and the loop add"),
            ("time outside llama.cpp to the call",
             _fmt(agent["non_engine_to_tool_call_s"], " s"),
             "wall − engine: prompt rendering and counting, sampling with the grammar, the loop"),
            ("wall ÷ engine, full run", _fmt(agent["wall_over_engine_full_run"], "×"),
             "the same for the whole run (includes the tool)"),
            ("prompt tokens llama.cpp evaluated, to the call / full run",
             f"{_fmt(evaluated_to_call, '', 0)} / {_fmt(evaluated_full, '', 0)}",
             "the prompt the KV cache did not cover (see the note below the table)"),
            ("correct call", f"{agent['calls_correct']}/{agent['rounds']}",
             "`lookup_order` with `order_id` \"1042\" (recorded, not asserted)"),
        ]  # fmt: skip
        lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
        add("")
        add(
            "| round | to call (s) | full (s) | run() (s) | call | steps | prompt / cached / "
            "completion tokens | answer |"
        )
        add("|---|---|---|---|---|---|---|---|")
        for r in agent["runs"]:
            call = f"{r['call_name']}({json.dumps(r['call_arguments'])})"
            t_call = f"{r['time_to_tool_call_s']:.3f}" if r["time_to_tool_call_s"] else "no call"
            answer = str(r["answer"]).replace("|", "\\|").replace("\n", " ")[:120]
            add(
                f"| {r['round']} | {t_call} | {r['full_run_s']:.3f} | {r['agent_run_s']:.3f} | "
                f"{call}{'' if r['call_correct'] else ' ✗'} | {r['steps']} | "
                f"{r['prompt_tokens']} / {r['cached_prompt_tokens']} / {r['completion_tokens']} "
                f"| {answer} |"
            )
        add("")
        prompt = summary(r["prompt_tokens"] for r in runs)["median"]
        cached = summary(r["cached_prompt_tokens"] for r in runs)["median"]
        if prompt:
            add(
                f"A warm turn still re-evaluates most of its prompt: of the {prompt:.0f} prompt "
                f"tokens its steps send, {cached:.0f} ({cached / prompt:.0%}) came from the KV "
                "cache (median). llama-cpp-python keeps one sequence and reuses only its common "
                "prefix with the next prompt. The answer step's prompt differs from the call "
                "step's after a short shared prefix, so the answer step reuses little of the call "
                "step's evaluation, and the next question's call step finds the answer step's "
                "prompt, the wrong prefix, in the cache. Keeping several prefixes (for instance "
                "the call step's system prompt and tool descriptions) is a separate issue; these "
                "times are with one."
            )
            add("")

    memory = report.get("memory")
    if memory:
        add("## 4. Memory of this process (decode and agent phases)")
        add("")
        add("| point | RSS (MiB) |")
        add("|---|---|")
        for key, label in (
            ("rss_before_load_mib", "before loading (shoal, llama_cpp, psutil imported)"),
            ("rss_after_shoal_load_mib", "after Shoal's `model.load()`"),
            ("rss_after_raw_load_mib", "after also loading the raw baseline `Llama`"),
            ("rss_after_decode_mib", "after the decode rounds"),
            ("rss_after_agent_mib", "after the agent rounds"),
            ("peak_rss_after_shoal_load_mib", "peak (`ru_maxrss`) right after Shoal's load"),
            ("peak_rss_mib", "**peak (`ru_maxrss`) of the whole process**"),
        ):
            if key in memory:
                add(f"| {label} | {memory[key]:.1f} |")
        add("")
        add("The process holds two copies of the model (Shoal's and the raw baseline's), so its ")
        add("peak is not Shoal's footprint: the cold-load child's peak RSS in section 1 is.")
        add("")

    lines += _machine.markdown_tail(report["warnings"], report["machine"])
    path.write_text("\n".join(lines))


def _warnings(report: dict[str, Any]) -> list[str]:
    """What a reader of the numbers should know: noise, mismatches, code changes, outliers."""
    out: list[str] = []
    machine = report["machine"]
    changed = [
        key
        for key in ("git_commit", "git_src_dirty", "git_src_diff_sha1")
        if f"{key}_at_end" in machine and machine[f"{key}_at_end"] != machine.get(key)
    ]
    if changed:
        out.append(
            "the code changed while the benchmark ran (" + ", ".join(changed) + " differ "
            "between start and end): the numbers may mix two versions"
        )
    if machine.get("git_src_dirty"):
        out.append("src/ had uncommitted changes: the numbers are for the work tree, not HEAD")
    decode = report.get("decode")
    if decode:
        if not decode["same_output_and_token_count"]:
            out.append(
                "decode: Shoal and raw did not produce the same text/token count in every run; "
                "the overhead ratio is per token (s/token), which stays valid"
            )
        shapes = decode["engine_shape"]
        if shapes["shoal"] != shapes["raw"]:
            out.append(f"decode: engine settings differ: {shapes}")
        for name in ("shoal_request", "shoal_request_stream"):
            engine = decode[f"engine_time_ratio_{name}"]
            if engine["median"] and not 0.95 <= engine["median"] <= 1.05:
                out.append(
                    f"decode {name}: llama.cpp's own eval time differs from raw by "
                    f"{engine['median']:.2f}× (median): the machine was busy unevenly, or "
                    "Shoal's threads compete with llama.cpp's; compare with the "
                    "engine-equalised ratio"
                )
            ratio = decode[f"overhead_ratio_{name}"]
            if ratio["max"] and ratio["min"] and ratio["max"] / ratio["min"] > 1.3:
                out.append(
                    f"decode {name}: overhead ratio spread {ratio['min']:.2f}–{ratio['max']:.2f}: "
                    "a noisy machine; more --rounds narrow it"
                )
        decode_only = decode["decode_only_ratio_shoal_request_stream"]["median"]
        end_to_end = decode["overhead_ratio_shoal_request_stream"]["median"]
        if (
            decode_only
            and end_to_end
            and (decode_only > GOAL_DECODE_OVERHEAD) != (end_to_end > GOAL_DECODE_OVERHEAD)
        ):
            out.append(
                f"decode request_stream: the decode-only ratio ({decode_only:.3f}) and the "
                f"end-to-end ratio ({end_to_end:.3f}) fall on different sides of the goal: "
                "the verdict depends on the prefill's noise; run more rounds"
            )
    agent = report.get("agent_turn")
    if agent and agent["calls_correct"] < agent["rounds"]:
        out.append(
            f"agent: the expected call was made in {agent['calls_correct']}/{agent['rounds']} runs"
        )
    cold = report.get("cold_start")
    if cold and cold["load_ratio_from_before_load"]["median"]:
        ratio = cold["load_ratio_from_before_load"]["median"]
        rss = cold["peak_rss_ratio"]["median"]
        extra = cold["shoal_load_peak_rss_mib"]["median"] - cold["raw_load_peak_rss_mib"]["median"]
        said = (
            f"cold start: Shoal's load() takes {ratio:.2f}× the time of import llama_cpp + "
            f"Llama(...) with the same n_ctx, and its process peaks {extra:.0f} MiB "
            f"({rss:.2f}×) higher"
        )
        if rss > 1.2:
            out.append(
                said + ". The memory points to LlamaCppModel.load opening the GGUF more than "
                "once (before commit 1089fe4 it opened it at the trained context, 8192 for "
                "SmolLM2, to read the metadata, then again at n_ctx=4096)"
            )
        elif ratio > 1.2:
            spread = cold["load_ratio_from_before_load"]
            out.append(
                said + f". The memory says the GGUF is opened once; the ratio's range "
                f"({spread['min']:.2f}–{spread['max']:.2f}) and the `Llama(...)` + template "
                "line tell noise from a real cost"
            )
    load = machine.get("load_average_at_start")
    cores = (machine.get("cores") or {}).get("logical") or 1
    if load and load[0] > 0.5 * cores:
        out.append(
            f"the machine was busy when the run started (load average {load[0]} on {cores} "
            "cores): absolute seconds and tok/s are pessimistic; read the ratios"
        )
    return out


def finish(report: dict[str, Any], output_dir: Path) -> tuple[Path, Path]:
    """Add the goals and warnings to ``report`` and write ``core.json`` and ``core.md``."""
    report["goals"] = _goals(report)
    report["warnings"] = _warnings(report)
    output_dir.mkdir(parents=True, exist_ok=True)
    json_path = output_dir / "core.json"
    md_path = output_dir / "core.md"
    json_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    write_markdown(report, md_path)
    return json_path, md_path
