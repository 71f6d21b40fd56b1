"""Report of the tool-calling benchmark: targets, derived figures, ``tools.json`` and ``tools.md``.

Part of ``bench/tools.py`` (which runs it; this module is not a script). The runner fills in
``report["models"][name]["systems"][system]`` (:meth:`shoal.evals.EvalReport.to_json`: the
overall and per-category summaries and every outcome); :func:`derive` adds the speed ratios,
the 95% intervals and the targets, and :func:`write` writes both files.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import _machine

ISSUE = "Tool calling that small models get right"

#: the issue's accuracy targets for Shoal: model -> category -> minimum accuracy
TARGETS: dict[str, dict[str, float]] = {
    "qwen2.5-coder-0.5b": {"simple_python": 0.92, "multiple": 0.90, "irrelevance_dev": 0.80},
    "smollm2-135m": {"simple_python": 0.75, "multiple": 0.65, "irrelevance_dev": 0.70},
}

BASELINE = "baseline"
REQUEST_FAILED = "request failed"


def targets_json() -> dict[str, Any]:
    return {"issue": ISSUE, "minimum_accuracy": TARGETS, "judged_on": "Shoal"}


def outcome_json(outcome: Any) -> dict[str, Any]:
    data: dict[str, Any] = asdict(outcome)
    return data


def wilson(correct: int, total: int, z: float = 1.96) -> list[float] | None:
    """The Wilson score interval (95%) of an accuracy measured on ``total`` questions."""
    if total == 0:
        return None
    p = correct / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]


def _label(system: str) -> str:
    if system == BASELINE:
        return "baseline"
    return f"Shoal ({system.split(':', 1)[1]})"


def _categories(entry: dict[str, Any]) -> list[str]:
    """The model's categories in suite order (those measured so far included)."""
    names = list(entry.get("n_per_category", {}))
    for data in entry["systems"].values():
        names += [c["category"] for c in data["categories"]]
    return list(dict.fromkeys(names))


def _summary(entry: dict[str, Any], system: str, category: str) -> dict[str, Any] | None:
    data = entry["systems"].get(system)
    if data is None:
        return None
    if category == "all":
        found: dict[str, Any] = data["overall"]
        return found if found["total"] else None
    return next((c for c in data["categories"] if c["category"] == category), None)


def derive(report: dict[str, Any], name: str) -> None:
    """Add intervals, speed ratios and targets to one model's entry, and the goals overall."""
    entry = report["models"][name]
    systems = list(entry["systems"])
    for data in entry["systems"].values():
        for summary in [*data["categories"], data["overall"]]:
            summary["accuracy_95ci"] = wilson(summary["correct"], summary["total"])
    ratios: dict[str, dict[str, float | None]] = {}
    if BASELINE in systems:
        for system in systems:
            if system == BASELINE:
                continue
            ratios[system] = {}
            for category in [*_categories(entry), "all"]:
                ours = _summary(entry, system, category)
                theirs = _summary(entry, BASELINE, category)
                ratio = None
                if ours and theirs and theirs["median_seconds"]:
                    ratio = round(ours["median_seconds"] / theirs["median_seconds"], 4)
                ratios[system][category] = ratio
    entry["speed_ratio_shoal_over_baseline"] = ratios
    entry["targets"] = []
    for category, target in TARGETS.get(name, {}).items():
        baseline = _summary(entry, BASELINE, category)
        for system in systems:
            if system == BASELINE:
                continue
            summary = _summary(entry, system, category)
            entry["targets"].append(
                {
                    "model": name,
                    "system": system,
                    "category": category,
                    "target": target,
                    "accuracy": summary["accuracy"] if summary else None,
                    "n": summary["total"] if summary else 0,
                    "accuracy_95ci": summary["accuracy_95ci"] if summary else None,
                    "met": summary is not None and summary["accuracy"] >= target,
                    "baseline_accuracy": baseline["accuracy"] if baseline else None,
                }
            )
    report["goals"] = [goal for e in report["models"].values() for goal in e.get("targets", [])]
    report["warnings"] = warnings(report)


def warnings(report: dict[str, Any]) -> list[str]:
    """What a reader of the numbers should know: a busy machine, code changes, restarts."""
    out: list[str] = []
    machine = report["machine"]
    cores = (machine.get("cores") or {}).get("logical") or 1
    loads = [machine.get("load_average_at_start"), machine.get("load_average_at_end")]
    for entry in report["models"].values():
        loads += entry.get("load_average_after_category", {}).values()
    busiest = max((load[0] for load in loads if load), default=0.0)
    if busiest > 0.5 * cores:
        out.append(
            f"the machine was busy during the run (1-minute load average up to {busiest} on "
            f"{cores} cores): the seconds are pessimistic and noisy; read the speed ratios, "
            "and rerun on a quiet machine before quoting latencies"
        )
    if machine.get("git_src_dirty"):
        out.append("src/ had uncommitted changes: the numbers are for the work tree, not HEAD")
    for name, entry in report["models"].items():
        baseline = entry["systems"].get(BASELINE)
        failed = [
            item["id"]
            for item in (baseline["items"] if baseline else [])
            if any(note.startswith(REQUEST_FAILED) for note in item["notes"])
        ]
        if failed:
            out.append(
                f"{name}: {len(failed)} baseline request(s) failed or timed out and count as "
                f"invalid_output ({', '.join(failed[:10])}); the server was restarted after "
                "each timeout. On a busy machine this is the machine, not the model: another "
                "llama.cpp process on the same cores can slow both systems a hundredfold"
            )
    return out


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def goal_line(goal: dict[str, Any]) -> str:
    """One target as a line: MET/MISS, what, the value with its n and interval."""
    status = "n/a " if not goal["n"] else ("MET " if goal["met"] else "MISS")
    interval = goal["accuracy_95ci"]
    ci = f", 95% CI {interval[0]:.0%}–{interval[1]:.0%}" if interval else ""
    base = goal["baseline_accuracy"]
    return (
        f"{status} {goal['model']} {_label(goal['system'])} {goal['category']} "
        f">= {goal['target']:.0%}: {_pct(goal['accuracy'])} (n={goal['n']}{ci})"
        + (f"; baseline {_pct(base)}" if base is not None else "")
    )


def running_line(outcomes: dict[str, list[Any]], category: str) -> str:
    """Running accuracy and median latency of each system in one category, for progress."""
    parts = []
    for system, done in outcomes.items():
        seen = [o for o in done if o.category == category]
        correct = sum(1 for o in seen if o.correct)
        times = sorted(o.seconds for o in seen)
        median = times[len(times) // 2] if times else 0.0
        parts.append(f"{_label(system)} {correct}/{len(seen)} ({median:.1f} s)")
    return " | ".join(parts)


def _buckets(summary: dict[str, Any] | None) -> str:
    if not summary:
        return ""
    found = [f"{name} {count}" for name, count in summary["buckets"].items() if count]
    return ", ".join(found) or "none"


def _cell(summary: dict[str, Any] | None) -> str:
    if not summary:
        return "n/a"
    return (
        f"{summary['correct']}/{summary['total']} = **{summary['accuracy']:.0%}** "
        f"({summary['median_seconds']:.2f} s)"
    )


def _model_section(name: str, entry: dict[str, Any], lines: list[str]) -> None:
    add = lines.append
    systems = list(entry["systems"])
    shoal = [s for s in systems if s != BASELINE]
    engine = entry["engine"]
    add(f"## {name}")
    add("")
    add(
        f"`{Path(entry['model_path']).name}`; engine for both: n_ctx {engine['n_ctx']}, "
        f"{engine['n_threads']} threads ({engine['n_threads_batch']} for batches), "
        f"n_batch {engine['n_batch']}. Questions per category: "
        + ", ".join(f"{c} {n}" for c, n in entry["n_per_category"].items())
        + "."
    )
    add("")
    header = ["category"]
    for system in systems:
        header += [f"{_label(system)}: correct (median s)", f"{_label(system)}: errors"]
    header += [f"speed {_label(s)} ÷ baseline" for s in shoal if BASELINE in systems]
    add("| " + " | ".join(header) + " |")
    add("|" + "---|" * len(header))
    ratios = entry.get("speed_ratio_shoal_over_baseline", {})
    for category in [*_categories(entry), "all"]:
        row = [f"**{category}**" if category == "all" else category]
        for system in systems:
            summary = _summary(entry, system, category)
            row += [_cell(summary), _buckets(summary)]
        for system in shoal:
            if BASELINE in systems:
                ratio = ratios.get(system, {}).get(category)
                row.append("n/a" if ratio is None else f"{ratio:.2f}×")
        add("| " + " | ".join(row) + " |")
    add("")
    targets = entry.get("targets", [])
    if targets:
        add(f'Targets of the issue "{ISSUE}" (judged on Shoal):')
        add("")
        for goal in targets:
            if not goal["n"]:
                add(f"- {goal['category']} >= {goal['target']:.0%}: not measured in this run")
                continue
            status = "met" if goal["met"] else "**not met**"
            interval = goal["accuracy_95ci"]
            ci = f", 95% CI {interval[0]:.0%}–{interval[1]:.0%}" if interval else ""
            base = goal["baseline_accuracy"]
            add(
                f"- {goal['category']} >= {goal['target']:.0%}: {_label(goal['system'])} "
                f"{_pct(goal['accuracy'])} (n={goal['n']}{ci}): {status}"
                + (f"; baseline {_pct(base)}" if base is not None else "")
            )
        add("")
    else:
        add("The issue sets no target for this model.")
        add("")


def write_markdown(report: dict[str, Any], path: Path) -> None:
    lines: list[str] = []
    add = lines.append
    settings = report["settings"]
    add("# Tool calling: Shoal against llama-cpp-python's own function calling")
    add("")
    if report["quick"]:
        add("**Quick run** (`--quick`): checks the script, not the numbers.")
        add("")
    if not report["complete"]:
        why = "interrupted" if report.get("interrupted") else "still running or stopped"
        add(f"**Partial results** ({why}): only what was measured before it stopped.")
        add("")
    add(f"`{report['command']}`")
    add("")
    add(
        f"Suite: `{settings['suite']}` (BFCL V4 development split), up to "
        f"{settings['limit_per_category']} questions per category spread evenly over the file, "
        "plus `irrelevance_dev`: questions given only tools that do not fit, where the right "
        "answer is no call (generated from the loaded questions, seed "
        f"{settings['irrelevance_seed']}, the same number). Accuracy is measured on small "
        "samples: read the 95% intervals (Wilson) in the targets and in `tools.json` before "
        "comparing two figures."
    )
    add("")
    for name, entry in report["models"].items():
        _model_section(name, entry, lines)
    add("## What the columns mean")
    add("")
    add(
        "- **Shoal (strategy)**: `shoal.evals.evaluate` on each question, the ordinary agent path "
        "(the question's functions as external tools, greedy decoding, the model profile's tool "
        "handling); *median s* is the wall time of the agent run."
    )
    baseline = settings.get("baseline")
    if baseline:
        request = baseline["request"]
        add(
            f"- **baseline**: {baseline['server']}, one `POST {baseline['endpoint']}` per "
            f"question with the question's messages, its functions as OpenAI `tools`, "
            f'`tool_choice: "{request["tool_choice"]}"`, temperature {request["temperature"]}, '
            f"max_tokens {request['max_tokens']}, repeat_penalty {request['repeat_penalty']}; "
            f"the calls are `{baseline['calls_read_from']}`, with no parsing or repair by "
            "Shoal. That chat format lists the tools only inside a system message, so questions "
            "without one get the system message of llama-cpp-python's README example for it: "
            f'"{baseline["system_prompt_added_when_missing"]}". As shipped, that chat format '
            "shows the model each tool's name and parameter schema but not the tool's own "
            "description, HTML-escapes the message text (an apostrophe reaches the model as "
            "`&#39;`), chooses between a call and a message under a grammar, and ignores "
            '`max_tokens` with `tool_choice: "auto"`. *median s* is the wall time of the HTTP '
            "request (127.0.0.1)."
        )
        add(
            "- **speed ÷ baseline**: Shoal's median latency over the baseline's, per category. "
            "Both answer the same question one after the other (the order rotates), on the "
            "same engine settings, so a busy spell of the shared machine hits both; the ratio "
            "is steadier than either number of seconds."
        )
    add(
        "- **errors**: the scorer's buckets: `no_call` (answered in text), `wrong_function`, "
        "`wrong_arguments`, `wrong_count` (not exactly one call), `invalid_output` (output that "
        "could not be read as calls, or needed a re-ask), `called_when_should_not` (a call on an "
        "`irrelevance_dev` question)."
    )
    add("")
    lines += _machine.markdown_tail(report.get("warnings") or (), report["machine"])
    path.write_text("\n".join(lines))


def write(report: dict[str, Any], output_dir: Path) -> tuple[Path, Path]:
    """Write ``tools.json`` and ``tools.md`` (again: called after every block of questions)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    json_path = output_dir / "tools.json"
    md_path = output_dir / "tools.md"
    partial = json_path.with_suffix(".json.tmp")
    partial.write_text(json.dumps(report, indent=2, default=str) + "\n")
    partial.replace(json_path)
    write_markdown(report, md_path)
    return json_path, md_path
