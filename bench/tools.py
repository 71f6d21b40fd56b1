"""Tool-calling benchmark: Shoal against llama-cpp-python's own function calling, same GGUF.

Run it from the repository root::

    .venv/bin/python bench/tools.py                      # both models, 100 per category: 1–2 h
    .venv/bin/python bench/tools.py --model smollm2-135m --limit 30
    .venv/bin/python bench/tools.py --quick              # 3 per category: checks the script

For each model and each category of the BFCL development suite (``--suite``, by default
``/work/shared/datasets/bfcl-dev``), plus generated questions that no offered tool fits
(``irrelevance_dev``), every question goes to two systems in the same run:

1. **Shoal**: :func:`shoal.evals.evaluate` on that one question, i.e. Shoal's ordinary agent
   path with the question's functions as external tools, greedy decoding, the given
   ``--strategy`` (``auto`` by default: the model profile's own choice).
2. **Baseline**: llama-cpp-python's OpenAI-compatible server (``python -m llama_cpp.server``)
   on the same GGUF file with ``--chat_format chatml-function-calling`` and the same n_ctx,
   threads and batch size as Shoal's engine, started as a subprocess on 127.0.0.1 and sent the
   question through ``/v1/chat/completions`` with ``tools`` and ``tool_choice: "auto"`` at
   temperature 0. Its ``message.tool_calls`` are taken as they are (arguments JSON-decoded;
   an undecodable one makes the answer invalid output): no Shoal parsing or repair.

Both are scored by the same scorer (:func:`shoal.evals.score_calls`), and the latency of a
question is the wall time of the agent run (Shoal) or of the HTTP request (baseline). The two
systems alternate question by question, the order rotating, so a busy minute on the shared
machine hits both; the speed figure is the ratio of their median latencies per category.

The results go to ``tools.json`` (the machine, the settings, per model/system/category
summaries and every single outcome) and ``tools.md`` (a table per model and the issue's
targets), rewritten after every category so an interrupted run keeps what it measured. This
file is the entry point and runs the measurements; ``_tools_report.py`` holds the targets,
the summaries and the Markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import _machine
import _tools_report
from _machine import ROOT, progress

if TYPE_CHECKING:
    from shoal.evals import BfclItem, ItemOutcome
    from shoal.models import Model

DEFAULT_MODELS = ("smollm2-135m", "qwen2.5-coder-0.5b")
DEFAULT_SUITE = ROOT.parent / "shared" / "datasets" / "bfcl-dev"
IRRELEVANCE = "irrelevance_dev"
BASELINE = "baseline"
#: how a baseline outcome's notes start when the request itself failed (timeout, HTTP error)
REQUEST_FAILED = _tools_report.REQUEST_FAILED

#: the stock server's function-calling chat format (the one documented for OpenAI-style tools)
CHAT_FORMAT = "chatml-function-calling"
#: llama-cpp-python's chatml-function-calling template lists the tools only inside a system
#: message; a question without one would reach the model with no tool list at all. This is the
#: system message of llama-cpp-python's own README example for that chat format, added (only)
#: to questions that have none.
BASELINE_SYSTEM_PROMPT = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant "
    "gives helpful, detailed, and polite answers to the user's questions. The assistant calls "
    "functions with appropriate input when necessary"
)


def shoal_system(strategy: str) -> str:
    return f"shoal:{strategy}"


# -- the baseline server ------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerError(RuntimeError):
    """The baseline server did not start, or died."""


class BaselineServer:
    """``python -m llama_cpp.server`` in a subprocess on 127.0.0.1, on a free port."""

    def __init__(self, model_path: Path, engine: dict[str, int], log_path: Path) -> None:
        self.model_path = model_path
        self.engine = engine
        self.log_path = log_path
        self.port = 0
        self.starts = 0
        self._process: subprocess.Popen[bytes] | None = None

    def command(self, port: int) -> list[str]:
        e = self.engine
        return [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(self.model_path),
            "--chat_format",
            CHAT_FORMAT,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            str(e["n_ctx"]),
            "--n_threads",
            str(e["n_threads"]),
            "--n_threads_batch",
            str(e["n_threads_batch"]),
            "--n_batch",
            str(e["n_batch"]),
            "--verbose",
            "False",
        ]

    def start(self, timeout: float = 180.0) -> float:
        """Start the server and wait until ``/v1/models`` answers; the seconds that took."""
        self.stop()
        self.port = _free_port()
        self.starts += 1
        started = time.perf_counter()
        with self.log_path.open("ab") as log:
            log.write(f"\n--- start {self.starts}: port {self.port}\n".encode())
            log.flush()
            self._process = subprocess.Popen(
                self.command(self.port),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        deadline = started + timeout
        while time.perf_counter() < deadline:
            if self._process.poll() is not None:
                raise ServerError(
                    f"the baseline server exited with code {self._process.returncode}:\n"
                    + self.log_tail()
                )
            try:
                with urllib.request.urlopen(self.url("/v1/models"), timeout=5) as reply:
                    if reply.status == 200:
                        return time.perf_counter() - started
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.25)
        self.stop()
        raise ServerError(f"the baseline server did not answer in {timeout:.0f} s")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self) -> None:
        """Terminate the server; kill it if it is still there after 5 s (uvicorn waits for a
        request in progress) or if a second Ctrl-C comes meanwhile."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        try:
            process.terminate()
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def chat(self, body: dict[str, Any], timeout: float) -> dict[str, Any]:
        """POST ``/v1/chat/completions``; the decoded reply (raises on HTTP errors)."""
        request = urllib.request.Request(
            self.url("/v1/chat/completions"),
            data=json.dumps(body).encode("utf-8"),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            data: dict[str, Any] = json.loads(reply.read().decode("utf-8"))
            return data


def openai_tools(item: BfclItem) -> list[dict[str, Any]]:
    """The question's functions (already converted to JSON Schema) in OpenAI's tools format."""
    return [
        {
            "type": "function",
            "function": {
                "name": tool.name,
                "description": tool.description,
                "parameters": tool.parameters,
            },
        }
        for tool in item.tools
    ]


def baseline_messages(item: BfclItem) -> list[dict[str, Any]]:
    messages = [dict(message) for message in item.messages]
    if not any(message.get("role") == "system" for message in messages):
        messages.insert(0, {"role": "system", "content": BASELINE_SYSTEM_PROMPT})
    return messages


def baseline_body(item: BfclItem, max_tokens: int, repeat_penalty: float | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "messages": baseline_messages(item),
        "tools": openai_tools(item),
        "tool_choice": "auto",
        "temperature": 0,
        "max_tokens": max_tokens,
    }
    if repeat_penalty is not None:
        body["repeat_penalty"] = repeat_penalty
    return body


def read_tool_calls(reply: dict[str, Any]) -> tuple[list[dict[str, Any]], str, list[str]]:
    """The calls in ``choices[0].message.tool_calls`` as they are, the text, and what was wrong
    (an undecodable call is left out and noted: the answer then counts as invalid output)."""
    choice = (reply.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    text = message.get("content") or ""
    calls: list[dict[str, Any]] = []
    problems: list[str] = []
    for raw in message.get("tool_calls") or []:
        function = raw.get("function") or {}
        name = function.get("name")
        arguments = function.get("arguments")
        try:
            decoded = json.loads(arguments) if isinstance(arguments, str) else arguments
        except json.JSONDecodeError as exc:
            problems.append(f"undecodable arguments for {name!r}: {exc}: {arguments!r:.200}")
            continue
        if not isinstance(name, str) or not isinstance(decoded, dict):
            problems.append(f"malformed tool call: {json.dumps(raw)[:200]}")
            continue
        calls.append({"name": name, "arguments": decoded})
    return calls, text, problems


def ask_baseline(
    server: BaselineServer, item: BfclItem, args: argparse.Namespace
) -> dict[str, Any]:
    """One question to the server: calls, text, seconds, problems and the reply's metadata.
    A timed-out or failed request restarts the server (it would keep generating otherwise)."""
    body = baseline_body(item, args.baseline_max_tokens, args.baseline_repeat_penalty)
    problems: list[str] = []  # the first, if any, is REQUEST_FAILED: ...
    reply: dict[str, Any] = {}
    started = time.perf_counter()
    try:
        reply = server.chat(body, timeout=args.request_timeout)
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")[:300]
        problems.append(f"{REQUEST_FAILED}: HTTP {exc.code} from the server: {detail}")
    except TimeoutError:
        problems.append(f"{REQUEST_FAILED}: no reply within {args.request_timeout:.0f} s")
    except (OSError, urllib.error.URLError) as exc:
        problems.append(f"{REQUEST_FAILED}: {exc}")
    seconds = time.perf_counter() - started
    if problems and "HTTP" not in problems[0]:
        problems.append("the server was restarted")
        progress(f"baseline: {item.id}: {problems[0]}; restarting the server")
        server.start()
    calls, text, bad_calls = read_tool_calls(reply) if reply else ([], "", [])
    choice = (reply.get("choices") or [{}])[0] if reply else {}
    return {
        "calls": calls,
        "text": text,
        "seconds": seconds,
        "problems": problems + bad_calls,
        "finish_reason": choice.get("finish_reason"),
        "usage": reply.get("usage"),
    }


def baseline_outcome(item: BfclItem, answer: dict[str, Any]) -> ItemOutcome:
    from shoal.evals import ItemOutcome, score_calls
    from shoal.messages import ToolCall

    calls = [ToolCall(name=c["name"], arguments=c["arguments"]) for c in answer["calls"]]
    score = score_calls(item, calls, invalid_output=bool(answer["problems"]))
    correct, bucket, detail = score.correct, score.bucket, score.detail
    if correct and answer["problems"]:
        # no call is right on an irrelevance question, but not a failed request or a call
        # that could not be decoded: those are invalid output whatever the question
        correct, bucket, detail = False, "invalid_output", answer["problems"][0][:240]
    notes = list(answer["problems"])
    if answer["finish_reason"]:
        notes.append(f"finish_reason: {answer['finish_reason']}")
    if answer["usage"]:
        usage = answer["usage"]
        notes.append(
            f"tokens: prompt {usage.get('prompt_tokens')}, "
            f"completion {usage.get('completion_tokens')}"
        )
    return ItemOutcome(
        id=item.id,
        category=item.category,
        correct=correct,
        bucket=bucket,
        detail=detail,
        calls=answer["calls"],
        text=answer["text"][:500],
        seconds=round(answer["seconds"], 4),
        retries=0,
        notes=notes,
    )


# -- the questions ------------------------------------------------------------------------------


def spread(items: Sequence[Any], limit: int | None) -> list[Any]:
    """``limit`` items spread evenly over ``items`` (all of them when there are fewer)."""
    if limit is None or len(items) <= limit:
        return list(items)
    return [items[i * len(items) // limit] for i in range(limit)]


def load_items(
    suite: Path, limit: int | None, categories: Sequence[str] | None, seed: int
) -> list[BfclItem]:
    """The suite's questions (``limit`` per category) and the no-tool-fits questions made from
    all of them (``limit`` too), keeping only ``categories`` when given."""
    from shoal.evals import irrelevance_items, load_suite

    base = load_suite(suite, limit=limit)
    irrelevant = spread(irrelevance_items(base, seed=seed), limit)
    items = [*base, *irrelevant]
    known = list(dict.fromkeys(item.category for item in items))
    if categories:
        unknown = sorted(set(categories) - set(known))
        if unknown:
            raise SystemExit(f"unknown categories {unknown}; the suite has: {', '.join(known)}")
        items = [item for item in items if item.category in categories]
    return items


def by_category(items: Sequence[BfclItem]) -> dict[str, list[BfclItem]]:
    groups: dict[str, list[BfclItem]] = {}
    for item in items:
        groups.setdefault(item.category, []).append(item)
    return groups


# -- running ------------------------------------------------------------------------------------


def engine_shape(model: Model) -> dict[str, int]:
    """The loaded engine's context, threads and batch size, for the baseline server to match."""
    llm = model._llm  # type: ignore[attr-defined]
    return {
        "n_ctx": int(llm.n_ctx()),
        "n_threads": int(llm.n_threads),
        "n_threads_batch": int(llm.n_threads_batch),
        "n_batch": int(llm.n_batch),
    }


class Bench:
    """One run: the report dictionary, filled in model by model and written as it grows."""

    def __init__(self, args: argparse.Namespace, runner: asyncio.Runner) -> None:
        self.args = args
        self.runner = runner
        self.systems = [shoal_system(s) for s in args.strategy]
        if not args.skip_baseline:
            self.systems.append(BASELINE)
        self.report: dict[str, Any] = {
            "benchmark": "tools",
            "quick": args.quick,
            "complete": False,
            "command": ("python bench/tools.py " + " ".join(sys.argv[1:])).strip(),
            "settings": {
                "suite": str(args.suite),
                "limit_per_category": args.limit,
                "categories": args.category or "all",
                "irrelevance_seed": args.seed,
                "models": args.model,
                "strategies": args.strategy,
                "systems": self.systems,
                "order": "question by question, the systems' order rotating every question; "
                "one untimed warm-up question per system and model first",
                "shoal": "shoal.evals.evaluate on each question: the agent path, external tools, "
                "greedy decoding (temperature 0)",
                "baseline": None
                if args.skip_baseline
                else {
                    "server": f"python -m llama_cpp.server --chat_format {CHAT_FORMAT} "
                    "(same GGUF, n_ctx, threads, batch as Shoal's engine)",
                    "endpoint": "/v1/chat/completions",
                    "request": {
                        "tool_choice": "auto",
                        "temperature": 0,
                        "max_tokens": args.baseline_max_tokens,
                        "repeat_penalty": args.baseline_repeat_penalty
                        if args.baseline_repeat_penalty is not None
                        else "server default (1.1)",
                    },
                    "system_prompt_added_when_missing": BASELINE_SYSTEM_PROMPT,
                    "request_timeout_s": args.request_timeout,
                    "calls_read_from": "choices[0].message.tool_calls, arguments JSON-decoded",
                },
            },
            "targets": _tools_report.targets_json(),
            "machine": _machine.machine_info(),
            "models": {},
        }

    def write(self) -> tuple[Path, Path]:
        self.report["machine"]["load_average_at_end"] = _machine.load_average()
        return _tools_report.write(self.report, self.args.output_dir)

    def run(self) -> None:
        for name in self.args.model:
            self.run_model(name)
        self.report["complete"] = True

    def run_model(self, name: str) -> None:
        from shoal.evals import EvalReport, evaluate
        from shoal.models import resolve_model

        args = self.args
        items = load_items(args.suite, args.limit, args.category, args.seed)
        groups = by_category(items)
        progress(
            f"{name}: {len(items)} questions ("
            + ", ".join(f"{c} {len(g)}" for c, g in groups.items())
            + f"), systems: {', '.join(self.systems)}"
        )
        model = resolve_model(name)
        started = time.perf_counter()
        self.runner.run(model.prepare())
        load_s = time.perf_counter() - started
        engine = engine_shape(model)
        entry: dict[str, Any] = {
            "model_path": str(model.model_path),  # type: ignore[attr-defined]
            "engine": engine,
            "shoal_load_s": round(load_s, 3),
            "n_per_category": {c: len(g) for c, g in groups.items()},
            "systems": {},
        }
        self.report["models"][name] = entry
        outcomes: dict[str, list[ItemOutcome]] = {system: [] for system in self.systems}

        def summarise() -> None:
            for system, done in outcomes.items():
                strategy = system.split(":", 1)[1] if system != BASELINE else BASELINE
                data = EvalReport(model=name, strategy=strategy, outcomes=done).to_json()
                data["system"] = system
                entry["systems"][system] = data
            _tools_report.derive(self.report, name)

        server: BaselineServer | None = None
        log_dir = tempfile.TemporaryDirectory(prefix="shoal-bench-tools-")
        try:
            if BASELINE in self.systems:
                server = BaselineServer(
                    Path(model.model_path),  # type: ignore[attr-defined]
                    engine,
                    Path(log_dir.name) / "server.log",
                )
                progress(f"{name}: starting the baseline server")
                entry["baseline_server_start_s"] = round(server.start(), 3)
                entry["baseline_server_command"] = " ".join(server.command(server.port))

            def ask(system: str, item: BfclItem) -> ItemOutcome:
                if system == BASELINE:
                    assert server is not None
                    return baseline_outcome(item, ask_baseline(server, item, args))
                strategy = system.split(":", 1)[1]
                report = self.runner.run(evaluate([item], model, strategy=strategy))
                return report.outcomes[0]

            progress(f"{name}: one untimed warm-up question per system")
            warm_up = items[0]
            entry["warm_up"] = {
                system: _tools_report.outcome_json(ask(system, warm_up)) for system in self.systems
            }
            count = 0
            every = 1 if len(items) <= 30 else 10
            for category, group in groups.items():
                for index, item in enumerate(group, 1):
                    shift = count % len(self.systems)
                    order = self.systems[shift:] + self.systems[:shift]
                    for system in order:
                        outcomes[system].append(ask(system, item))
                    count += 1
                    if index % every == 0 or index == len(group):
                        progress(
                            f"{name} {category} {index}/{len(group)}: "
                            + _tools_report.running_line(outcomes, category)
                        )
                entry.setdefault("load_average_after_category", {})[category] = (
                    _machine.load_average()
                )
                summarise()
                self.write()
            if server is not None:
                entry["baseline_server_starts"] = server.starts
        except BaseException:
            summarise()
            if server is not None:
                entry["baseline_server_starts"] = server.starts
                entry["baseline_server_log_tail"] = server.log_tail()
            raise
        finally:
            if server is not None:
                server.stop()
            log_dir.cleanup()


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
    """Ctrl-C and SIGTERM raise KeyboardInterrupt at once, wherever the main thread is, so the
    server is stopped and the results written. (Left to itself, ``asyncio.Runner`` turns Ctrl-C
    into a cancellation of the running question, which code under test may absorb.)"""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        action="append",
        help=f"a model alias or GGUF path (repeatable; default: {', '.join(DEFAULT_MODELS)})",
    )
    parser.add_argument(
        "--strategy",
        action="append",
        help="Shoal's tool strategy, as shoal.evals.STRATEGIES (repeatable; default: auto)",
    )
    parser.add_argument(
        "--category",
        action="append",
        help=f"only this category, e.g. simple_python, multiple, {IRRELEVANCE} (repeatable)",
    )
    parser.add_argument("--suite", type=Path, default=DEFAULT_SUITE, help="the BFCL directory")
    parser.add_argument(
        "--limit", type=int, default=None, help="questions per category (default 100; quick: 3)"
    )
    parser.add_argument("--quick", action="store_true", help="3 per category: a smoke run")
    parser.add_argument("--seed", type=int, default=0, help="seed of the irrelevance questions")
    parser.add_argument("--skip-baseline", action="store_true", help="measure Shoal only")
    parser.add_argument(
        "--request-timeout",
        type=float,
        default=300.0,
        help="seconds per baseline request (300); the server is restarted after a timeout",
    )
    parser.add_argument(
        "--baseline-max-tokens",
        type=int,
        default=256,
        help="max_tokens sent to the server (256)",
    )
    parser.add_argument(
        "--baseline-repeat-penalty",
        type=float,
        default=None,
        help="repeat_penalty sent to the server (default: not sent, the server's 1.1)",
    )
    parser.add_argument(
        "--output-dir", type=Path, default=ROOT / "bench" / "results", help="where results go"
    )
    args = parser.parse_args()
    args.model = args.model or list(DEFAULT_MODELS)
    args.strategy = list(dict.fromkeys(args.strategy or ["auto"]))
    args.limit = args.limit or (3 if args.quick else 100)

    from shoal.evals import STRATEGIES

    unknown = [s for s in args.strategy if s not in STRATEGIES]
    if unknown:
        parser.error(f"unknown strategy {unknown}; choose from {', '.join(STRATEGIES)}")

    progress(
        f"tools benchmark: {', '.join(args.model)}; {args.limit} per category; "
        f"strategies {', '.join(args.strategy)}"
        + ("; no baseline" if args.skip_baseline else "; baseline: llama_cpp.server")
    )
    with signals_interrupt(), asyncio.Runner() as runner:
        bench = Bench(args, runner)
        try:
            bench.run()
        except KeyboardInterrupt:
            bench.report["interrupted"] = True
            json_path, md_path = bench.write()
            progress(f"interrupted: wrote what was measured to {json_path} and {md_path}")
            raise SystemExit(130) from None
        except Exception as exc:
            bench.report["error"] = f"{type(exc).__name__}: {exc}"
            json_path, md_path = bench.write()
            progress(f"failed: wrote what was measured to {json_path} and {md_path}")
            raise
    json_path, md_path = bench.write()
    progress(f"wrote {json_path} and {md_path}")
    for goal in (g for g in bench.report.get("goals", []) if g["n"]):
        print(_tools_report.goal_line(goal))
    for warning in bench.report.get("warnings", []):
        print(f"warning: {warning}")


if __name__ == "__main__":
    main()
