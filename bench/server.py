"""Server benchmark: ``shoal serve`` against llama-cpp-python's own OpenAI-compatible server.

Run it from the repository root (the baseline needs the ``bench`` extra, see bench/README.md)::

    .venv/bin/python bench/server.py                          # 1, 4, 16 clients: ~12 min
    .venv/bin/python bench/server.py --levels 1 --requests-per-client 2 --output /tmp/smoke

Two HTTP servers on the same GGUF (``smollm2-135m``), on this machine, in the same run:

1. **Shoal**: ``python -m shoal.cli.main serve --model smollm2-135m --max-queue 64`` with
   ``SHOAL_HOME`` in a temporary directory, i.e. ``shoal serve`` as a user starts it: the
   engine runs in a worker process (crash isolation), one request generates at a time and up to
   64 wait (more would get 429). Ready when ``GET /health`` says ``ready``.
2. **Baseline**: ``python -m llama_cpp.server --chat_format chatml-function-calling``, started
   by ``bench/tools.py``'s :class:`~tools.BaselineServer` with the n_ctx, threads and batch size
   of Shoal's own engine for that model (read from a copy loaded here, then closed).

Both listen on free loopback ports and stay up for the whole run, but only one is ever sent
requests at a time (two cores: two engines generating at once would measure the machine). Every
request is the same body, sent to both: a system message, "What is the weather in Paris?", one
``get_weather(city)`` tool, ``tool_choice: "auto"``, ``max_tokens`` 64, temperature 0, no
streaming. "auto" because it is OpenAI's default and the only value with which the model has
to decide to call, which is what small models get wrong; it is also the only string value,
besides "none", that llama-cpp-python's ``chatml-function-calling`` handler accepts ("required"
fails an ``assert`` there: HTTP 500).

For each concurrency level (``--levels``, by default 1, 4 and 16 clients) and each of
``--rounds`` rounds (4), each server gets the load in turn, the order rotating every round
(:func:`_machine.interleaved_rounds`: S B, B S, S B, B S), so that a busy spell of the shared
machine, or a slow drift of its speed (seen here: the same load 1.5× slower a minute later, with
no other process busy), falls on both alike:
N asyncio workers on one ``httpx.AsyncClient``, each sending ``--requests-per-client`` requests
back to back. Per request: the latency (send to full reply), the HTTP status, and whether
``choices[0].message.tool_calls[0]`` is a valid call: ``get_weather`` with arguments that
decode as JSON and validate against the tool's schema (jsonschema). Meanwhile a thread samples
the RSS of the server's process tree (the server process plus all its descendants: Shoal's
engine worker is a child) every 0.2 s.

Per server and level, pooled over the rounds: requests, requests/s (successful replies ÷ the
wall time from the first request sent to the last reply), p50 and p95 latency, errors (non-2xx
other than 429, and transport errors such as timeouts), 429s, valid tool calls, peak RSS of
the tree, the tree's CPU seconds per request, and the share of the machine's CPU that everything
else took meanwhile (other processes, and time the hypervisor stole): the noise of that level.
Speed is reported as ratios Shoal ÷ baseline measured in the same run, pooled and per round
(machines here are noisy; seconds alone are not comparable).

The results go to ``<output>.json`` (settings, machine, every request) and ``<output>.md`` (the
tables), by default ``bench/results/server.{json,md}``, rewritten after every level so an
interrupted run keeps what it measured. This file runs the measurements; ``_server_report.py``
summarises and writes them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import functools
import json
import os
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import _machine
import _server_report
import psutil
from _machine import ROOT, progress
from tools import BaselineServer, ServerError, engine_shape, signals_interrupt

MODEL = "smollm2-135m"
SHOAL = "shoal"
BASELINE = "baseline"

#: the tool of the request; a call's arguments must validate against its parameters
TOOL_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string", "description": "The city's name."}},
    "required": ["city"],
    "additionalProperties": False,
}
TOOL_NAME = "get_weather"


def request_body(max_tokens: int) -> dict[str, Any]:
    """The one request both servers get, byte for byte."""
    return {
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is the weather in Paris?"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": TOOL_NAME,
                    "description": "Get the current weather in a city.",
                    "parameters": TOOL_PARAMETERS,
                },
            }
        ],
        "tool_choice": "auto",
        "max_tokens": max_tokens,
        "temperature": 0,
    }


# -- the servers --------------------------------------------------------------------------------


@contextlib.contextmanager
def environment(**values: str) -> Iterator[None]:
    """Set environment variables for the body (the servers are started inside it)."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


class ShoalServer(BaselineServer):
    """``shoal serve`` in a subprocess on 127.0.0.1 and a free port (the same start, log and
    stop as the baseline's; ready when ``/health`` says so, not merely when it answers)."""

    def __init__(self, model: str, home: Path, log_path: Path, max_queue: int) -> None:
        super().__init__(Path(model), {}, log_path)
        self.model = model
        self.home = home
        self.max_queue = max_queue

    def command(self, port: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "shoal.cli.main",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--model",
            self.model,
            "--max-queue",
            str(self.max_queue),
            "--log-level",
            "warning",
        ]

    def start(self, timeout: float = 180.0) -> float:
        started = time.perf_counter()
        with environment(SHOAL_HOME=str(self.home)):
            super().start(timeout)  # until the app answers /v1/models
        deadline = started + timeout
        while time.perf_counter() < deadline:
            if not self.alive():
                raise ServerError("shoal serve exited while loading:\n" + self.log_tail())
            health = self.health()
            if health.get("ready"):
                return time.perf_counter() - started
            if health.get("status") == "failed":
                raise ServerError(f"shoal serve could not load {self.model}: {health}")
            time.sleep(0.25)
        self.stop()
        raise ServerError(f"shoal serve was not ready in {timeout:.0f} s")

    def health(self) -> dict[str, Any]:
        """``GET /health`` (its body also comes with 503 while loading); {} if no answer."""
        try:
            with urllib.request.urlopen(self.url("/health"), timeout=5) as reply:
                data: dict[str, Any] = json.loads(reply.read())
        except urllib.error.HTTPError as exc:
            data = json.loads(exc.read() or b"{}")
        except (OSError, ValueError):
            data = {}
        return data


def server_pid(server: BaselineServer) -> int:
    process = server._process
    if process is None:
        raise ServerError("the server is not running")
    return process.pid


# -- measuring ----------------------------------------------------------------------------------


def tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


class TreeSampler:
    """The RSS of a process tree every ``interval`` seconds in a thread: its peak (summed over
    the processes alive at the same sample) and each process's own peak."""

    def __init__(self, pid: int, interval: float) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self.per_process: dict[int, dict[str, Any]] = {}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def sample(self) -> None:
        total = 0
        for process in tree(self.pid):
            try:
                rss = process.memory_info().rss
                name = _server_report.role(process.cmdline())
            except psutil.Error:  # exited between listing and reading
                continue
            total += rss
            entry = self.per_process.setdefault(process.pid, {"role": name, "peak_rss": 0})
            entry["peak_rss"] = max(entry["peak_rss"], rss)
        self.peak = max(self.peak, total)
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(psutil.Error):
                self.sample()

    def __enter__(self) -> TreeSampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        with contextlib.suppress(psutil.Error):
            self.sample()


def tree_cpu(pid: int) -> dict[str, float]:
    """User + system CPU time so far of each process of the tree (with its reaped children),
    by ``role (pid)``."""
    out: dict[str, float] = {}
    for process in tree(pid):
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            key = f"{_server_report.role(process.cmdline())} ({process.pid})"
            out[key] = times.user + times.system + times.children_user + times.children_system
    return out


def machine_busy_seconds() -> float:
    """CPU time the machine's cores were not available to an idle process so far, all cores:
    busy (Linux: guest time is already in user and nice) or stolen by the hypervisor for other
    virtual machines."""
    t = psutil.cpu_times()
    parts = ("user", "nice", "system", "irq", "softirq", "steal")
    return float(sum(getattr(t, name, 0.0) for name in parts))


def steal_seconds() -> float:
    """CPU time the hypervisor gave to other virtual machines so far (0 where not reported)."""
    return float(getattr(psutil.cpu_times(), "steal", 0.0))


def own_cpu_seconds() -> float:
    """CPU time of this process (the load generator and the RSS sampler)."""
    t = psutil.Process().cpu_times()
    return float(t.user + t.system)


def check_reply(status: int, data: Any) -> dict[str, Any]:
    """What a reply says: a valid ``get_weather`` call or why not, the finish reason, tokens."""
    from jsonschema import Draft202012Validator

    out: dict[str, Any] = {"valid_call": False}
    if not isinstance(data, dict):
        out["problem"] = "the body is not a JSON object"
        return out
    if not 200 <= status < 300:
        error = data.get("error")
        message = error.get("message") if isinstance(error, dict) else data.get("detail")
        out["problem"] = f"HTTP {status}: {str(message)[:200]}"
        return out
    choice = (data.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    out["finish_reason"] = choice.get("finish_reason")
    out["completion_tokens"] = (data.get("usage") or {}).get("completion_tokens")
    calls = message.get("tool_calls") or []
    if not calls:
        out["problem"] = "no tool call"
        out["text"] = str(message.get("content"))[:200]
        return out
    function = calls[0].get("function") or {}
    out["name"], raw = function.get("name"), function.get("arguments")
    out["arguments"] = raw if isinstance(raw, str) else json.dumps(raw)
    out["calls"] = len(calls)
    if out["name"] != TOOL_NAME:
        out["problem"] = f"called {out['name']!r}"
        return out
    try:
        arguments = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError as exc:
        out["problem"] = f"arguments are not JSON: {exc}"
        return out
    errors = sorted(Draft202012Validator(TOOL_PARAMETERS).iter_errors(arguments), key=str)
    if errors:
        out["problem"] = f"arguments do not match the schema: {errors[0].message}"
        return out
    out["valid_call"] = True
    return out


async def one_request(
    client: Any, url: str, body: dict[str, Any], client_id: int, t0: float
) -> dict[str, Any]:
    import httpx

    started = time.perf_counter()
    record: dict[str, Any] = {"client": client_id, "sent_s": round(started - t0, 4)}
    try:
        reply = await client.post(url, json=body)
        content = reply.content
    except httpx.HTTPError as exc:
        record["seconds"] = round(time.perf_counter() - started, 4)
        record["status"] = None
        record["valid_call"] = False
        record["problem"] = f"{type(exc).__name__}: {exc}"[:200]
        return record
    record["seconds"] = round(time.perf_counter() - started, 4)
    record["status"] = reply.status_code
    try:
        data = json.loads(content)
    except ValueError:
        data = None
    record.update(check_reply(reply.status_code, data))
    return record


async def load(
    url: str, body: dict[str, Any], clients: int, per_client: int, request_timeout: float
) -> tuple[list[dict[str, Any]], float]:
    """``clients`` workers, each sending ``per_client`` requests back to back; every request's
    record, and the wall time from the first send to the last reply."""
    import httpx

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    records: list[dict[str, Any]] = []
    async with httpx.AsyncClient(timeout=request_timeout, limits=limits) as client:
        t0 = time.perf_counter()

        async def worker(client_id: int) -> None:
            for _ in range(per_client):
                records.append(await one_request(client, url, body, client_id, t0))

        await asyncio.gather(*(worker(i) for i in range(clients)))
        wall = time.perf_counter() - t0
    records.sort(key=lambda r: r["sent_s"])
    return records, wall


class Bench:
    """One run: the servers, the report dictionary, filled in level by level."""

    def __init__(self, args: argparse.Namespace, runner: asyncio.Runner) -> None:
        self.args = args
        self.runner = runner
        self.body = request_body(args.max_tokens)
        self.servers: dict[str, BaselineServer] = {}
        self.report: dict[str, Any] = {
            "benchmark": "server",
            "complete": False,
            "command": ("python bench/server.py " + " ".join(sys.argv[1:])).strip(),
            "settings": {
                "model": MODEL,
                "levels": args.levels,
                "requests_per_client_per_round": args.requests_per_client,
                "rounds": args.rounds,
                "order": "per level, round by round, one server at a time, which goes first "
                "rotating every round; one untimed warm-up request per server first",
                "request_body": self.body,
                "endpoint": "/v1/chat/completions",
                "request_timeout_s": args.request_timeout,
                "rss_sample_interval_s": args.rss_interval,
                "valid_call": f"status 2xx and choices[0].message.tool_calls[0] is {TOOL_NAME} "
                "with arguments that decode as JSON and validate against the tool's parameters",
                "shoal_max_queue": args.max_queue,
            },
            "machine": _machine.machine_info(),
            "servers": {},
            "levels": [],
        }

    def write(self) -> tuple[Path, Path]:
        self.report["machine"]["load_average_at_end"] = _machine.load_average()
        self.report["written_utc"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        return _server_report.write(self.report, self.args.output)

    def start(self, logs: Path) -> None:
        from shoal.models import resolve_model
        from shoal.models.registry import ALIASES

        path = ALIASES[MODEL].locate()
        model = resolve_model(MODEL)
        model.load()  # type: ignore[attr-defined]
        engine = engine_shape(model)
        self.runner.run(model.close())
        settings = self.report["settings"]
        settings["model_path"] = str(path)
        settings["engine"] = engine
        self.servers[SHOAL] = ShoalServer(
            MODEL, logs / "shoal-home", logs / "shoal.log", self.args.max_queue
        )
        self.servers[BASELINE] = BaselineServer(path, engine, logs / "baseline.log")
        for name, server in self.servers.items():
            progress(f"starting {name}")
            seconds = server.start()
            pid = server_pid(server)
            entry: dict[str, Any] = {
                "command": " ".join(server.command(server.port)),
                "start_s": round(seconds, 3),
                "idle_rss_after_start": _server_report.tree_rss(tree(pid)),
            }
            self.report["servers"][name] = entry
            progress(
                f"{name}: ready in {seconds:.1f} s (pid {pid}, "
                f"{len(tree(pid))} processes, RSS {entry['idle_rss_after_start']['mib']} MiB)"
            )
        shoal = self.servers[SHOAL]
        assert isinstance(shoal, ShoalServer)
        self.report["servers"][SHOAL]["health_at_start"] = shoal.health()

    def warm_up(self) -> None:
        for name, server in self.servers.items():
            records, wall = self.runner.run(
                load(server.url("/v1/chat/completions"), self.body, 1, 1, self.args.request_timeout)
            )
            entry = self.report["servers"][name]
            entry["warm_up"] = records[0]
            entry["idle_rss_after_warm_up"] = _server_report.tree_rss(tree(server_pid(server)))
            record = records[0]
            progress(
                f"{name}: warm-up {wall:.2f} s, status {record['status']}, "
                + (
                    f"valid call {record.get('arguments')}"
                    if record["valid_call"]
                    else f"no valid call: {record.get('problem')}"
                )
            )

    def measure(self, name: str, clients: int) -> dict[str, Any]:
        server = self.servers[name]
        if not server.alive():
            raise ServerError(f"the {name} server died:\n{server.log_tail()}")
        pid = server_pid(server)
        url = server.url("/v1/chat/completions")
        cpu_before = tree_cpu(pid)
        load_before = _machine.load_average()
        machine_before, own_before = machine_busy_seconds(), own_cpu_seconds()
        steal_before = steal_seconds()
        with TreeSampler(pid, self.args.rss_interval) as sampler:
            records, wall = self.runner.run(
                load(
                    url,
                    self.body,
                    clients,
                    self.args.requests_per_client,
                    self.args.request_timeout,
                )
            )
        run = _server_report.summarise_run(records, wall)
        cpu_after = tree_cpu(pid)
        per_process = {k: v - cpu_before.get(k, 0.0) for k, v in cpu_after.items()}
        server_cpu = sum(per_process.values())
        machine_cpu = machine_busy_seconds() - machine_before
        own_cpu = own_cpu_seconds() - own_before
        run["cpu_seconds"] = round(server_cpu, 3)
        run["cpu_seconds_per_process"] = {k: round(v, 3) for k, v in per_process.items()}
        run["client_cpu_seconds"] = round(own_cpu, 3)
        run["steal_seconds"] = round(steal_seconds() - steal_before, 3)
        # CPU time of every other process on the machine (and stolen): the round's noise
        run["other_cpu_seconds"] = round(max(0.0, machine_cpu - server_cpu - own_cpu), 3)
        run["cores"] = psutil.cpu_count() or 1
        run["peak_rss"] = sampler.peak
        run["peak_rss_per_process"] = list(sampler.per_process.values())
        run["rss_samples"] = sampler.samples
        run["load_average_before"] = load_before
        run["records"] = records
        progress(f"{_server_report.clients(clients)}, {name}: " + _server_report.run_line(run))
        return run

    def run(self) -> None:
        for clients in self.args.levels:
            label = _server_report.clients(clients)
            variants: dict[str, Callable[[], Any]] = {
                name: functools.partial(self.measure, name, clients) for name in self.servers
            }
            rounds = _machine.interleaved_rounds(variants, self.args.rounds, label)
            level = {"clients": clients, "rounds": rounds}
            self.report["levels"].append(level)
            _server_report.derive_level(level, list(self.servers))
            progress(f"{label}: " + _server_report.level_line(level))
            self.write()
        shoal = self.servers[SHOAL]
        assert isinstance(shoal, ShoalServer)
        self.report["servers"][SHOAL]["health_at_end"] = shoal.health()
        self.report["complete"] = True

    def stop(self, keep_logs: bool = False) -> None:
        """Stop the servers (again: a no-op); after a failure, keep the end of their logs."""
        for name, server in self.servers.items():
            if keep_logs:
                self.report["servers"].setdefault(name, {})["log_tail"] = server.log_tail()
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--levels",
        default="1,4,16",
        help="concurrent clients per level, comma-separated (1,4,16)",
    )
    parser.add_argument(
        "--requests-per-client",
        type=int,
        default=4,
        help="requests each client sends back to back, per round (4)",
    )
    parser.add_argument(
        "--rounds", type=int, default=4, help="rounds per level (4; even balances the order)"
    )
    parser.add_argument("--max-tokens", type=int, default=64, help="max_tokens sent (64)")
    parser.add_argument("--max-queue", type=int, default=64, help="shoal serve --max-queue (64)")
    parser.add_argument(
        "--request-timeout", type=float, default=300.0, help="seconds per request (300)"
    )
    parser.add_argument(
        "--rss-interval", type=float, default=0.2, help="seconds between RSS samples (0.2)"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=ROOT / "bench" / "results" / "server",
        help="results path without suffix: writes OUTPUT.json and OUTPUT.md",
    )
    args = parser.parse_args()
    try:
        args.levels = [int(level) for level in args.levels.split(",") if level.strip()]
    except ValueError:
        parser.error(f"--levels: not a list of integers: {args.levels!r}")
    if not args.levels or min(args.levels) < 1 or args.requests_per_client < 1 or args.rounds < 1:
        parser.error("levels, requests per client and rounds must be positive")

    total = args.rounds * args.requests_per_client * sum(args.levels)
    progress(
        f"server benchmark: {MODEL}; levels {args.levels}; {args.requests_per_client} requests "
        f"per client per round, {args.rounds} rounds: {total} requests per server"
    )
    with (
        signals_interrupt(),
        asyncio.Runner() as runner,
        tempfile.TemporaryDirectory(prefix="shoal-bench-server-") as logs,
    ):
        bench = Bench(args, runner)
        try:
            bench.start(Path(logs))
            bench.warm_up()
            bench.run()
        except KeyboardInterrupt:
            bench.report["interrupted"] = True
            bench.stop(keep_logs=True)
            json_path, md_path = bench.write()
            progress(f"interrupted: wrote what was measured to {json_path} and {md_path}")
            raise SystemExit(130) from None
        except Exception as exc:
            bench.report["error"] = f"{type(exc).__name__}: {exc}"
            bench.stop(keep_logs=True)
            json_path, md_path = bench.write()
            progress(f"failed: wrote what was measured to {json_path} and {md_path}")
            raise
        finally:
            bench.stop()
    json_path, md_path = bench.write()
    progress(f"wrote {json_path} and {md_path}")
    for line in _server_report.summary_lines(bench.report):
        print(line)


if __name__ == "__main__":
    main()
