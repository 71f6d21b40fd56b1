"""Core benchmark: cold start, decode overhead, one tool-call turn and memory, on smollm2-135m.

Run it from the repository root::

    .venv/bin/python bench/core.py              # 9 rounds (5 cold), 3–4 minutes on 2 cores
    .venv/bin/python bench/core.py --rounds 5
    .venv/bin/python bench/core.py --quick      # 2 rounds: checks the script, not the numbers

It writes ``bench/results/core.json`` (everything, including every single run) and
``bench/results/core.md`` (the tables, the machine, what each number means and the goals).

The machines are shared and noisy, so speed is reported as a ratio against a baseline measured
in the same run, baseline and subject interleaved (the order rotates every round), repeated,
as median plus min/max:

1. Cold start, each in a fresh subprocess: a bare interpreter (baseline for ``import shoal``),
   ``import shoal`` alone, ``import llama_cpp`` + ``Llama(...)`` (baseline for loading) and
   ``import shoal`` + ``resolve_model`` + ``model.load()``. Times are taken from just before
   the process is spawned (``time.monotonic()`` is system-wide on Linux, so parent and child
   share the clock) and from just before the load. The GGUF file is in the page cache (one
   untimed warm-up child first): "cold" means a new process, not a cold disk.
2. Decode throughput: Shoal's ``LlamaCppModel.request`` and ``request_stream`` against
   ``llama_cpp.Llama.create_completion(stream=True)`` on a second, separately loaded ``Llama``
   with the same file, n_ctx, n_threads and n_batch, the same rendered prompt and the same
   sampling arguments (greedy: temperature 0; the same stop strings). Before every run the KV
   cache is reset (``Llama.reset()``) on both, so every run pays the same prefill.
3. One warm tool-call turn of ``examples/support/agent.yaml`` ("Where is my order 1042?"):
   time to the validated ``ToolCallEvent`` and to the final answer, after one untimed run. The
   same-run baseline is the time llama.cpp itself spent evaluating tokens during that run
   (``llama_perf_context``), so wall / engine is what the agent loop, sampling, the grammar and
   the tool add on top of the model's own compute.
4. Memory: peak RSS (``ru_maxrss``) of the cold-load subprocesses and of this process (which
   holds two copies of the model: Shoal's and the raw baseline's), and the current RSS after
   each load.

This file is the entry point and holds parts 2 and 3, which run in this process; part 1 is in
``_cold.py``, the goals, warnings and result files in ``_report.py``, and the machine record in
``_machine.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _machine
import _report
from _cold import bench_cold
from _machine import ROOT, interleaved_rounds, progress, summary

MODEL = "smollm2-135m"
DECODE_PROMPT = (
    "Write a long, detailed story about a lighthouse keeper who finds a message in a bottle. "
    "Describe the sea, the weather and his feelings."
)
AGENT_SPEC = ROOT / "examples" / "support" / "agent.yaml"
AGENT_QUESTION = "Where is my order 1042?"
EXPECTED_CALL = ("lookup_order", {"order_id": "1042"})

# -- 2. and 3.: in this process ---------------------------------------------------------------


def _rss_mib() -> float:
    import psutil

    return float(psutil.Process().memory_info().rss / 2**20)


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _EngineClock:
    """llama.cpp's own counters for one context: time spent evaluating tokens, and how many."""

    def __init__(self, llm: Any) -> None:
        import llama_cpp

        self._llama_cpp = llama_cpp
        self._llm = llm

    def reset(self) -> None:
        self._llama_cpp.llama_perf_context_reset(self._llm._ctx.ctx)

    def read(self) -> dict[str, float]:
        data = self._llama_cpp.llama_perf_context(self._llm._ctx.ctx)
        return {
            "prompt_eval_ms": float(data.t_p_eval_ms),
            "eval_ms": float(data.t_eval_ms),
            "n_prompt_eval": int(data.n_p_eval),
            "n_eval": int(data.n_eval),
            "engine_s": (data.t_p_eval_ms + data.t_eval_ms) / 1000,
        }


def _decode_row(
    wall: float, first: float | None, last: float | None, text: str, n: int, engine: dict[str, Any]
) -> dict[str, Any]:
    decode_tps = (n - 1) / (last - first) if first is not None and last and last > first else None
    return {
        "wall_s": wall,
        "completion_tokens": n,
        "tokens_per_s": n / wall if wall > 0 else None,
        "s_per_token": wall / n if n else None,
        "decode_tokens_per_s": decode_tps,
        "time_to_first_text_s": first,
        "engine": engine,
        "non_engine_ms_per_token": (wall - engine["engine_s"]) * 1000 / n if n else None,
        "text": text,
    }


def bench_decode(
    runner: asyncio.Runner, rounds: int, max_tokens: int, memory: dict[str, Any]
) -> dict[str, Any]:
    import llama_cpp

    from shoal import ModelSettings, UserMessage, resolve_model
    from shoal.models import ModelRequestParameters, ResponseDone, TextDelta
    from shoal.settings import merge_settings

    memory["rss_before_load_mib"] = _rss_mib()
    progress(f"decode: loading {MODEL} through Shoal")
    model = resolve_model(MODEL)
    model.load()  # type: ignore[attr-defined]
    memory["rss_after_shoal_load_mib"] = _rss_mib()
    memory["peak_rss_after_shoal_load_mib"] = _peak_rss_mib()
    shoal_llm = model._llm  # type: ignore[attr-defined]
    progress("decode: loading the raw llama_cpp.Llama baseline (same file, n_ctx, n_threads)")
    raw = llama_cpp.Llama(
        model_path=str(model.model_path),  # type: ignore[attr-defined]
        n_ctx=shoal_llm.n_ctx(),
        n_threads=shoal_llm.n_threads,
        verbose=False,
    )
    memory["rss_after_raw_load_mib"] = _rss_mib()
    shape = {
        name: {
            "n_ctx": llm.n_ctx(),
            "n_threads": llm.n_threads,
            "n_threads_batch": llm.n_threads_batch,
            "n_batch": llm.n_batch,
        }
        for name, llm in (("shoal", shoal_llm), ("raw", raw))
    }

    messages = [UserMessage(content=DECODE_PROMPT)]
    params = ModelRequestParameters(settings=ModelSettings(temperature=0, max_tokens=max_tokens))
    prompt = model.render_prompt(messages, params)  # type: ignore[attr-defined]
    # the sampling Shoal ends up using (profile defaults under the request's settings), spelled
    # out for the raw call; with temperature 0 llama-cpp-python samples greedily either way
    eff = merge_settings(model.profile.default_settings, params.settings)
    raw_sampling = {
        "temperature": 0.0,
        "top_p": eff.top_p if eff.top_p is not None else 1.0,
        "top_k": eff.top_k if eff.top_k is not None else 0,
        "min_p": eff.min_p if eff.min_p is not None else 0.0,
        "repeat_penalty": eff.repeat_penalty or 1.0,
        "stop": list(dict.fromkeys((*model.profile.stop, *eff.stop))),
        "seed": eff.seed,
    }
    prompt_tokens = raw.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
    shoal_clock, raw_clock = _EngineClock(shoal_llm), _EngineClock(raw)

    def count(text: str) -> int:
        # the way Shoal counts completion tokens (usage.completion_tokens): re-tokenize the text
        return len(raw.tokenize(text.encode("utf-8"), add_bos=False, special=True)) if text else 0

    def run_raw() -> dict[str, Any]:
        raw.reset()
        raw_clock.reset()
        pieces: list[str] = []
        first = last = None
        finish = None
        started = time.perf_counter()
        for chunk in raw.create_completion(
            prompt, max_tokens=max_tokens, stream=True, **raw_sampling
        ):
            choice = chunk["choices"][0]
            if choice["text"]:
                now = time.perf_counter() - started
                first = now if first is None else first
                last = now
                pieces.append(choice["text"])
            finish = choice.get("finish_reason") or finish
        wall = time.perf_counter() - started
        text = "".join(pieces)
        row = _decode_row(wall, first, last, text, count(text), raw_clock.read())
        row["finish_reason"] = finish
        return row

    async def shoal_request() -> dict[str, Any]:
        shoal_llm.reset()
        shoal_clock.reset()
        started = time.perf_counter()
        response = await model.request(messages, params)
        wall = time.perf_counter() - started
        row = _decode_row(wall, None, None, response.raw, count(response.raw), shoal_clock.read())
        row["finish_reason"] = response.finish_reason
        row["usage_completion_tokens"] = response.usage.completion_tokens
        row["usage_prompt_tokens"] = response.usage.prompt_tokens
        return row

    async def shoal_stream() -> dict[str, Any]:
        shoal_llm.reset()
        shoal_clock.reset()
        first = last = None
        response = None
        started = time.perf_counter()
        async for event in model.request_stream(messages, params):
            if isinstance(event, TextDelta) and event.text:
                now = time.perf_counter() - started
                first = now if first is None else first
                last = now
            elif isinstance(event, ResponseDone):
                response = event.response
        wall = time.perf_counter() - started
        assert response is not None
        row = _decode_row(wall, first, last, response.raw, count(response.raw), shoal_clock.read())
        row["finish_reason"] = response.finish_reason
        row["usage_completion_tokens"] = response.usage.completion_tokens
        row["usage_prompt_tokens"] = response.usage.prompt_tokens
        return row

    variants = {
        "raw": run_raw,
        "shoal_request": lambda: runner.run(shoal_request()),
        "shoal_request_stream": lambda: runner.run(shoal_stream()),
    }
    progress("decode: one untimed warm-up run of each")
    for run in variants.values():
        run()
    runs = interleaved_rounds(variants, rounds, "decode")
    names = list(variants)
    memory["rss_after_decode_mib"] = _rss_mib()

    result: dict[str, Any] = {
        "rounds": rounds,
        "max_tokens": max_tokens,
        "prompt_tokens": len(prompt_tokens),
        "prompt_text": prompt,
        "cache": "KV cache reset (Llama.reset()) before every run on both: every run pays the "
        "same full prefill; one untimed warm-up run of each variant first",
        "raw_sampling_arguments": raw_sampling,
        "engine_shape": shape,
        "runs": runs,
    }
    mismatches: list[str] = []
    reference = runs[0]["raw"]["text"] if runs else ""
    for row in runs:
        for name in names:
            if row[name]["text"] != reference:
                mismatches.append(f"round {row['round']} {name}: text differs from raw round 1")
            if row[name]["completion_tokens"] != row["raw"]["completion_tokens"]:
                mismatches.append(
                    f"round {row['round']} {name}: {row[name]['completion_tokens']} tokens vs "
                    f"raw {row['raw']['completion_tokens']}"
                )
    result["same_output_and_token_count"] = not mismatches
    result["mismatches"] = mismatches
    for name in names:
        result[name] = {
            key: summary(row[name][key] for row in runs)
            for key in (
                "tokens_per_s",
                "s_per_token",
                "decode_tokens_per_s",
                "wall_s",
                "completion_tokens",
                "non_engine_ms_per_token",
            )
        }
        result[name]["engine_s"] = summary(row[name]["engine"]["engine_s"] for row in runs)
        result[name]["engine_n_eval"] = summary(row[name]["engine"]["n_eval"] for row in runs)
    for name in ("shoal_request", "shoal_request_stream"):
        # raw_tps / shoal_tps per round == shoal's seconds per token / raw's seconds per token,
        # so it stays right if the token counts ever differ
        result[f"overhead_ratio_{name}"] = summary(
            row[name]["s_per_token"] / row["raw"]["s_per_token"] for row in runs
        )
        result[f"extra_non_engine_ms_per_token_{name}"] = summary(
            row[name]["non_engine_ms_per_token"] - row["raw"]["non_engine_ms_per_token"]
            for row in runs
        )
        result[f"engine_time_ratio_{name}"] = summary(
            row[name]["engine"]["engine_s"] / row["raw"]["engine"]["engine_s"] for row in runs
        )
        # Shoal's wall time had llama.cpp taken exactly as long as for raw in that round:
        # (raw engine time + Shoal's non-engine time) / raw wall time
        result[f"overhead_ratio_engine_equalised_{name}"] = summary(
            (
                row["raw"]["engine"]["engine_s"]
                + row[name]["wall_s"]
                - row[name]["engine"]["engine_s"]
            )
            / row["raw"]["wall_s"]
            for row in runs
        )
    result["decode_only_ratio_shoal_request_stream"] = summary(
        row["raw"]["decode_tokens_per_s"] / row["shoal_request_stream"]["decode_tokens_per_s"]
        for row in runs
        if row["raw"]["decode_tokens_per_s"] and row["shoal_request_stream"]["decode_tokens_per_s"]
    )
    result["_model"] = model
    result["_raw"] = raw
    return result


def bench_agent(
    runner: asyncio.Runner, rounds: int, model: Any, memory: dict[str, Any]
) -> dict[str, Any]:
    from shoal import FinalEvent, ToolCallEvent
    from shoal.spec import load_agent_spec

    workdir = tempfile.mkdtemp(prefix="shoal-bench-")
    os.environ["SHOAL_SUPPORT_DB"] = str(Path(workdir) / "support.db")
    agent = load_agent_spec(AGENT_SPEC).build_agent()
    if agent.model is not model:
        raise RuntimeError("the agent does not share the benchmark's loaded model")
    clock = _EngineClock(model._llm)

    async def streamed() -> dict[str, Any]:
        clock.reset()
        call = None
        t_call = engine_call = None
        result = None
        started = time.perf_counter()
        async for event in agent.run_stream(AGENT_QUESTION):
            if isinstance(event, ToolCallEvent) and call is None:
                t_call = time.perf_counter() - started
                engine_call = clock.read()
                call = event.call
            elif isinstance(event, FinalEvent):
                result = event.result
        wall = time.perf_counter() - started
        engine = clock.read()
        assert result is not None
        expected_name, expected_args = EXPECTED_CALL
        return {
            "time_to_tool_call_s": t_call,
            "full_run_s": wall,
            "engine_to_tool_call": engine_call,
            "engine_full_run": engine,
            "wall_over_engine_to_tool_call": (
                t_call / engine_call["engine_s"] if t_call and engine_call else None
            ),
            "wall_over_engine_full_run": wall / engine["engine_s"],
            "call_name": call.name if call else None,
            "call_arguments": call.arguments if call else None,
            "call_correct": bool(
                call and call.name == expected_name and call.arguments == expected_args
            ),
            "answer": result.output,
            "stop_reason": result.stop_reason,
            "steps": result.usage.steps,
            "prompt_tokens": result.usage.prompt_tokens,
            "cached_prompt_tokens": result.usage.cached_prompt_tokens,
            "completion_tokens": result.usage.completion_tokens,
            "retries": result.retries,
            "notes": result.notes,
        }

    async def drained() -> float:
        started = time.perf_counter()
        await agent.run(AGENT_QUESTION)
        return time.perf_counter() - started

    progress("agent: one untimed warm-up run")
    warm = runner.run(streamed())
    runs: list[dict[str, Any]] = []
    for r in range(rounds):
        progress(f"agent: round {r + 1}/{rounds}: run_stream, then run")
        row = runner.run(streamed())
        row["round"] = r + 1
        row["agent_run_s"] = runner.run(drained())
        runs.append(row)
    memory["rss_after_agent_mib"] = _rss_mib()
    shutil.rmtree(workdir, ignore_errors=True)
    return {
        "rounds": rounds,
        "spec": str(AGENT_SPEC.relative_to(ROOT)),
        "question": AGENT_QUESTION,
        "expected_call": {"name": EXPECTED_CALL[0], "arguments": EXPECTED_CALL[1]},
        "warm": "One untimed run first, so every timed turn starts with the KV cache holding "
        "the previous turn's last prompt, as a user asking again would find it. A step reuses "
        "only the prefix its prompt shares with the prompt evaluated just before it, so a warm "
        "turn still re-evaluates much of its prompt (see prompt / cached tokens below)",
        "warm_up_run": warm,
        "time_to_tool_call_s": summary(r["time_to_tool_call_s"] for r in runs),
        "full_run_s": summary(r["full_run_s"] for r in runs),
        "agent_run_s": summary(r["agent_run_s"] for r in runs),
        "engine_to_tool_call_s": summary(
            r["engine_to_tool_call"]["engine_s"] if r["engine_to_tool_call"] else None for r in runs
        ),
        "engine_full_run_s": summary(r["engine_full_run"]["engine_s"] for r in runs),
        "wall_over_engine_to_tool_call": summary(r["wall_over_engine_to_tool_call"] for r in runs),
        "non_engine_to_tool_call_s": summary(
            r["time_to_tool_call_s"] - r["engine_to_tool_call"]["engine_s"]
            for r in runs
            if r["time_to_tool_call_s"] and r["engine_to_tool_call"]
        ),
        "wall_over_engine_full_run": summary(r["wall_over_engine_full_run"] for r in runs),
        "calls_correct": sum(r["call_correct"] for r in runs),
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rounds", type=int, default=None, help="decode and agent rounds (default 9; quick: 2)"
    )
    parser.add_argument(
        "--cold-rounds", type=int, default=None, help="cold-start rounds (default 5; quick: 2)"
    )
    parser.add_argument("--quick", action="store_true", help="2 rounds: a smoke run")
    parser.add_argument("--max-tokens", type=int, default=128, help="decode length (128)")
    parser.add_argument(
        "--output-dir", type=Path, default=ROOT / "bench" / "results", help="where results go"
    )
    parser.add_argument(
        "--only",
        choices=("cold", "decode", "agent"),
        action="append",
        help="run only these parts (repeatable; agent implies decode's model load)",
    )
    args = parser.parse_args()
    rounds = args.rounds or (2 if args.quick else 9)
    cold_rounds = args.cold_rounds or (2 if args.quick else 5)
    parts = set(args.only or ("cold", "decode", "agent"))
    command = "python bench/core.py " + " ".join(sys.argv[1:])

    report: dict[str, Any] = {
        "benchmark": "core",
        "model": MODEL,
        "quick": args.quick,
        "rounds": rounds,
        "cold_rounds": cold_rounds,
        "command": command.strip(),
        "machine": _machine.machine_info(),
    }
    progress(
        f"core benchmark, {rounds} rounds ({cold_rounds} cold), parts: {', '.join(sorted(parts))}"
    )
    if "cold" in parts:
        report["cold_start"] = bench_cold(cold_rounds, MODEL)
    memory: dict[str, Any] = {}
    if parts & {"decode", "agent"}:
        with asyncio.Runner() as runner:
            decode_rounds = rounds if "decode" in parts else 0
            decode = bench_decode(runner, decode_rounds, args.max_tokens, memory)
            model = decode.pop("_model")
            decode.pop("_raw")
            if "decode" in parts:
                report["decode"] = decode
            if "agent" in parts:
                report["agent_turn"] = bench_agent(runner, rounds, model, memory)
        memory["peak_rss_mib"] = _peak_rss_mib()
        report["memory"] = memory
    report["machine"]["load_average_at_end"] = _machine.load_average()
    at_end = _machine.machine_info()
    for key in ("git_commit", "git_src_dirty", "git_src_diff_sha1"):
        report["machine"][f"{key}_at_end"] = at_end[key]
    json_path, md_path = _report.finish(report, args.output_dir)
    progress(f"wrote {json_path} and {md_path}")
    for goal in report["goals"]:
        print(f"{'MET ' if goal['met'] else 'MISS'} {goal['goal']}: {goal['value']}")
    for warning in report["warnings"]:
        print(f"warning: {warning}")


if __name__ == "__main__":
    main()
