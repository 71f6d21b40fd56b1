"""The customer-service system: how well its router routes, and what a routed request costs.

The system is ``examples/customer_service/system.yaml`` (a router ``desk`` in front of a
customer-service agent and a technical-support router; ``qwen2.5-coder-0.5b`` answers,
``smollm2-135m`` classifies). Two parts:

1. **Routing** on ``bench/data/cs_routing.json``: 120 hand-written requests labelled
   ``customer_service`` or ``tech_support`` (40 ``dev``, looked at while the rules were tuned;
   80 ``test``, not; 15 marked ambiguous). ``Router.choose`` only (no agent runs) with the
   desk router's own rules, descriptions and default in three configurations: ``rules`` (the
   rules, else the default route), ``tiny`` (no rules: ``smollm2-135m`` picks a route under an
   enum constraint), ``both`` (rules, then the tiny classifier: the system as shipped);
   ``--qwen-classifier`` adds ``qwen`` (``qwen2.5-coder-0.5b`` as the classifier, no rules).
   Accuracy (all / dev / test / ambiguous), per-route precision and recall, the confusion
   matrix, who decided (rule, classifier, default), and the mean time of a classification.
2. **End to end**: the 20 labelled requests that name a tool run through the whole system
   (``system.run``), and, as the baseline in the same run, through a single
   ``qwen2.5-coder-0.5b`` agent holding all the tools of the system with both agents'
   instructions (no router). Per request: wall seconds, tokens, route, the tools called, whether
   the first call was the expected tool with the expected argument, and whether the answer is
   prose (not a JSON echo). Mean, median and p90 seconds, and the system's time as a ratio of
   the single agent's. The order of the configurations rotates per request.

   ``qwen2.5-coder-0.5b``'s profile shows tool results as plain information (``context``):
   shown as ``<tool_response>`` turns (``hermes``) its answer step mostly echoes a call as
   JSON. The script also runs both configurations with the other style, on a separate model
   instance, so the choice stays measured (``--no-style-variant`` skips it).

    .venv/bin/python bench/orchestration.py            # ~15 min; results/orchestration.{json,md}
    .venv/bin/python bench/orchestration.py --quick    # 10 routing + 4 end-to-end requests
    .venv/bin/python bench/orchestration.py --only routing --qwen-classifier
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import _machine
from _machine import ROOT, progress

from shoal.agent import Agent
from shoal.models import LlamaCppModel, Model, resolve_model
from shoal.orchestration import Flow, FlowResult, Router
from shoal.spec import load_system

SYSTEM = ROOT / "examples" / "customer_service" / "system.yaml"
DATA = ROOT / "bench" / "data" / "cs_routing.json"
ROUTER = "desk"
PRIMARY = "qwen2.5-coder-0.5b"
ROUTES = ("customer_service", "tech_support")
SINGLE = "single-agent"


# -- part 1: routing --------------------------------------------------------------------------


def routers(desk: Router, *, qwen: bool) -> dict[str, Router]:
    """The desk router's rules, descriptions and default in each configuration."""
    routes: Mapping[str, Flow] = desk.routes
    tiny = desk.classifier
    assert tiny is not None, "the desk router of the system has no classifier"
    made = {
        "rules": Router("rules", routes, rules=desk.rules, default=desk.default),
        "tiny": Router(
            "tiny", routes, classifier=tiny, descriptions=desk.descriptions, default=desk.default
        ),
        "both": desk,
    }
    if qwen:
        made["qwen"] = Router(
            "qwen",
            routes,
            classifier=resolve_model(PRIMARY),
            descriptions=desk.descriptions,
            default=desk.default,
        )
    return made


async def bench_routing(
    items: list[dict[str, Any]], configs: dict[str, Router]
) -> list[dict[str, Any]]:
    names = list(configs)
    rows = []
    for index, item in enumerate(items):
        row: dict[str, Any] = {"text": item["text"], "route": item["route"], "split": item["split"]}
        row["ambiguous"] = bool(item.get("ambiguous"))
        for name in names[index % len(names) :] + names[: index % len(names)]:
            started = time.perf_counter()
            choice = await configs[name].choose(item["text"])
            row[name] = {
                "target": choice.target,
                "by": choice.by,
                "reason": choice.reason,
                "seconds": time.perf_counter() - started,
            }
        rows.append(row)
        if (index + 1) % 20 == 0 or index + 1 == len(items):
            progress(f"routing {index + 1}/{len(items)}")
    return rows


def routing_summary(rows: list[dict[str, Any]], name: str, router: Router) -> dict[str, Any]:
    def accuracy(keep: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        kept = [r for r in rows if keep(r)]
        right = sum(r[name]["target"] == r["route"] for r in kept)
        return {"right": right, "n": len(kept), "accuracy": right / len(kept) if kept else None}

    confusion = {
        label: {target: sum(r["route"] == label and r[name]["target"] == target for r in rows)
                for target in ROUTES}
        for label in ROUTES
    }  # fmt: skip
    per_route = {}
    for label in ROUTES:
        chosen = sum(confusion[other][label] for other in ROUTES)
        actual = sum(confusion[label].values())
        right = confusion[label][label]
        per_route[label] = {
            "precision": right / chosen if chosen else None,
            "recall": right / actual if actual else None,
        }
    asked = router.classifier is not None
    classified = [r[name]["seconds"] for r in rows if asked and r[name]["by"] != "rule"]
    return {
        "all": accuracy(lambda r: True),
        "dev": accuracy(lambda r: r["split"] == "dev"),
        "test": accuracy(lambda r: r["split"] == "test"),
        "ambiguous": accuracy(lambda r: r["ambiguous"]),
        "clear": accuracy(lambda r: not r["ambiguous"]),
        "per_route": per_route,
        "confusion": confusion,
        "decided_by": dict(Counter(r[name]["by"] for r in rows)),
        "mean_seconds": statistics.mean(r[name]["seconds"] for r in rows),
        "mean_classifier_seconds": statistics.mean(classified) if classified else None,
    }


# -- part 2: end to end -----------------------------------------------------------------------


SINGLE_INSTRUCTIONS = (
    "You are Lumo Home's customer service and technical support. Look up the order or the "
    "account the customer names, or start a return when they ask for one. Check a device when "
    "the customer gives its serial number, otherwise search the help guides for a device "
    "problem. Reply in two or three short sentences with the facts you found."
)


def single_agent(system: Any, model: Model) -> Agent[str]:
    """One agent with every tool of the system and both kinds of instructions, no router."""
    tools = {name: t for agent in system.agents.values() for name, t in agent.tools.items()}
    return Agent(
        SINGLE,
        model,
        instructions=SINGLE_INSTRUCTIONS,
        tools=list(tools.values()),
        settings=system.agents["customer_service"].settings,
        tool_strategy="grammar",
        max_steps=2,
    )


def other_style(model: Model) -> str:
    """The tool-result style ``model``'s profile does not use."""
    return "hermes" if model.profile.tool_result_style == "context" else "context"


def style_copy(model: Model, style: str) -> Model:
    """A separate instance of an embedded model whose profile shows tool results in ``style``
    (``hermes``: ``<tool_response>`` turns; ``context``: plain information)."""
    assert isinstance(model, LlamaCppModel)
    profile = model.profile.replace(tool_result_style=style)
    fresh = LlamaCppModel(model.model_path, name=model.name, profile=profile)
    fresh.load()
    return fresh


def expected(item: Mapping[str, Any], calls: Sequence[Sequence[Any]]) -> bool:
    """The first call is one of the expected tools, with the expected value in its arguments."""
    if not calls:
        return False
    tools = item["tool"] if isinstance(item["tool"], list) else [item["tool"]]
    name, arguments = calls[0][0], calls[0][1]
    wanted = item.get("arg")
    return name in tools and (wanted is None or wanted.lower() in json.dumps(arguments).lower())


def is_prose(text: str) -> bool:
    start = text.lstrip()[:1]
    return bool(start) and start not in "{[>"


async def run_one(run: Callable[[], Any], item: Mapping[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        result = await run()
    except Exception as exc:  # a failed request is recorded, not fatal
        return {"seconds": time.perf_counter() - started, "error": repr(exc)[:300]}
    seconds = time.perf_counter() - started
    if isinstance(result, FlowResult):
        runs, usage, text = result.runs, result.usage, result.text
        route = result.route.target if result.route else None
        by = result.route.by if result.route else None
        path = result.path
    else:
        runs, usage, text, route, by, path = [result], result.usage, result.output, None, None, []
    calls = [[r.call.name, r.call.arguments, r.outcome] for run_ in runs for r in run_.tool_calls]
    return {
        "seconds": seconds,
        "route": route,
        "by": by,
        "route_right": None if route is None else route == item["route"],
        "path": path,
        "calls": calls,
        "tool_right": expected(item, calls),
        "prose": is_prose(str(text)),
        "requests": usage.requests,
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "output": str(text)[:200],
    }


async def bench_e2e(
    items: list[dict[str, Any]], configs: dict[str, Callable[[str], Any]]
) -> list[dict[str, Any]]:
    names = list(configs)
    rows = []
    for index, item in enumerate(items):
        row: dict[str, Any] = {"text": item["text"], "route": item["route"]}
        for name in names[index % len(names) :] + names[: index % len(names)]:
            row[name] = await run_one(functools.partial(configs[name], item["text"]), item)
        rows.append(row)
        marks = " ".join(
            f"{n}={row[n]['seconds']:.1f}s{'' if row[n].get('tool_right') else '✗'}" for n in names
        )
        progress(f"e2e {index + 1}/{len(items)} {marks}")
    return rows


def p90(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]


def e2e_summary(rows: list[dict[str, Any]], name: str) -> dict[str, Any]:
    runs = [r[name] for r in rows]
    ok = [run for run in runs if "error" not in run]
    seconds = [run["seconds"] for run in runs]
    routed = [run["route_right"] for run in ok if run["route_right"] is not None]
    return {
        "mean_seconds": statistics.mean(seconds),
        "median_seconds": statistics.median(seconds),
        "p90_seconds": p90(seconds),
        "mean_prompt_tokens": statistics.mean(run["prompt_tokens"] for run in ok) if ok else None,
        "mean_completion_tokens": (
            statistics.mean(run["completion_tokens"] for run in ok) if ok else None
        ),
        "mean_requests": statistics.mean(run["requests"] for run in ok) if ok else None,
        "tool_right": sum(run["tool_right"] for run in ok) / len(runs),
        "route_right": sum(routed) / len(routed) if routed else None,
        "prose_answers": sum(run["prose"] for run in ok) / len(runs),
        "errors": len(runs) - len(ok),
    }


def ratios(rows: list[dict[str, Any]], subject: str, baseline: str) -> dict[str, Any]:
    per_request = [r[subject]["seconds"] / r[baseline]["seconds"] for r in rows]
    mean_s = statistics.mean(r[subject]["seconds"] for r in rows)
    mean_b = statistics.mean(r[baseline]["seconds"] for r in rows)
    return {
        "baseline": baseline,
        "mean_ratio": mean_s / mean_b,
        "median_per_request": statistics.median(per_request),
        "min_per_request": min(per_request),
        "max_per_request": max(per_request),
    }


# -- the report -------------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value:.0%}"


def markdown(report: dict[str, Any]) -> list[str]:
    lines = ["# The customer-service system: routing and end-to-end latency", ""]
    lines += [
        f"`python bench/orchestration.py{' --quick' if report['quick'] else ''}` on "
        "`examples/customer_service/system.yaml`: a router (`desk`: rules, then "
        "`smollm2-135m`, else `customer_service`) in front of a customer-service agent and a "
        "technical-support router, every agent on `qwen2.5-coder-0.5b`, greedy decoding, "
        "embedded models. Requests: `bench/data/cs_routing.json`, written for this benchmark.",
        "",
    ]
    routing = report.get("routing")
    if routing:
        lines += [
            f"## 1. Routing accuracy ({routing['requests']} labelled requests)",
            "",
            "The rules were written before the labelled requests and tuned on the `dev` part "
            f"({routing['dev']} requests) only; `test` ({routing['test']}) is held out. "
            f"{routing['ambiguous']} requests are marked ambiguous (both routes defensible).",
            "",
            "| configuration | all | test (held out) | dev | clear | ambiguous | "
            "customer_service P / R | tech_support P / R | decided by | mean classification |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, s in routing["summary"].items():
            cs, ts = s["per_route"]["customer_service"], s["per_route"]["tech_support"]
            by = ", ".join(f"{k} {v}" for k, v in sorted(s["decided_by"].items()))
            classify = s["mean_classifier_seconds"]
            lines.append(
                f"| {name} | {_pct(s['all']['accuracy'])} | {_pct(s['test']['accuracy'])} | "
                f"{_pct(s['dev']['accuracy'])} | {_pct(s['clear']['accuracy'])} | "
                f"{_pct(s['ambiguous']['accuracy'])} | {_pct(cs['precision'])} / "
                f"{_pct(cs['recall'])} | {_pct(ts['precision'])} / {_pct(ts['recall'])} | {by} | "
                f"{'' if classify is None else f'{classify * 1000:.0f} ms'} |"
            )
        lines += ["", "Confusion (rows: label, columns: chosen route):", ""]
        lines += [
            "| configuration | label | → customer_service | → tech_support |",
            "|---|---|---|---|",
        ]
        for name, s in routing["summary"].items():
            for label in ROUTES:
                row = s["confusion"][label]
                lines.append(
                    f"| {name} | {label} | {row['customer_service']} | {row['tech_support']} |"
                )
        lines += [
            "",
            "- *rules*: the desk router's regular expressions, first match wins; no match → "
            "`customer_service` (the default).",
            "- *tiny*: no rules; `smollm2-135m` picks one route under an enum constraint, shown "
            "each route's description.",
            "- *both*: rules first, the tiny classifier for the rest (the system as shipped).",
            *(
                ["- *qwen*: `qwen2.5-coder-0.5b` as the classifier, no rules (reference)."]
                if "qwen" in routing["summary"]
                else []
            ),
            "- *mean classification*: mean time of `Router.choose` for the requests the "
            "classifier decided (a rule's decision takes microseconds).",
            "",
        ]
    e2e = report.get("e2e")
    if e2e:
        lines += [
            f"## 2. End to end ({e2e['requests']} requests, {e2e['styles']})",
            "",
            "Each request through the whole system (router, then the chosen agent's tool call "
            f"and answer) and through the baseline, `{SINGLE}`: one `{PRIMARY}` agent with all "
            "six tools and no router. Same requests, rotating order, same process.",
            "",
            "| configuration | mean | median | p90 | vs single agent (mean; median per request) "
            "| prompt / completion tokens | requests | right tool & argument | right route "
            "| prose answers |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, s in e2e["summary"].items():
            ratio = e2e["ratios"].get(name)
            vs = (
                f"{ratio['mean_ratio']:.2f}×; {ratio['median_per_request']:.2f}×"
                if ratio
                else "1.00× (baseline)"
                if name.startswith(SINGLE)
                else ""
            )
            lines.append(
                f"| {name} | {s['mean_seconds']:.2f} s | {s['median_seconds']:.2f} s | "
                f"{s['p90_seconds']:.2f} s | {vs} | {s['mean_prompt_tokens']:.0f} / "
                f"{s['mean_completion_tokens']:.0f} | {s['mean_requests']:.1f} | "
                f"{_pct(s['tool_right'])} | {_pct(s['route_right'])} | "
                f"{_pct(s['prose_answers'])} |"
            )
        lines += [
            "",
            "- *right tool & argument*: the first call was the request's expected tool, with "
            "the expected id in its arguments (recorded, not asserted).",
            "- *prose answers*: the answer does not start with `{`, `[` or `>` (a call echoed as "
            "JSON instead of an answer).",
            f"- *… ({e2e['other_style']} results)*: the same configuration with tool results "
            f"shown to `{PRIMARY}` in the style its profile does not use "
            "(`hermes`: `<tool_response>` turns; `context`: plain information); a separate "
            "model instance.",
            "",
            "| request | " + " | ".join(e2e["configs"]) + " |",
            "|---|" + "---|" * len(e2e["configs"]),
        ]
        for row in e2e["rows"]:
            cells = []
            for name in e2e["configs"]:
                run = row[name]
                if "error" in run:
                    cells.append("error")
                    continue
                first = run["calls"][0] if run["calls"] else None
                call = f"{first[0]}({json.dumps(first[1])})" if first else "no call"
                mark = "" if run["tool_right"] else " ✗"
                where = f"{run['route']} · " if run["route"] else ""
                cells.append(f"{where}{call}{mark} · {run['seconds']:.1f} s".replace("|", "\\|"))
            lines.append(f"| {row['text']} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += _machine.markdown_tail(report.get("warnings", []), report["machine"])
    return lines


# -- main -------------------------------------------------------------------------------------


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    items = json.loads(DATA.read_text())["items"]
    report: dict[str, Any] = {"quick": args.quick, "machine": _machine.machine_info()}
    system = load_system(SYSTEM).build()
    desk = system.flows[ROUTER]
    assert isinstance(desk, Router)
    if args.only in (None, "routing"):
        chosen = items[::12] if args.quick else items
        configs = routers(desk, qwen=args.qwen_classifier)
        progress("loading the classifier(s)")
        for router in configs.values():
            if router.classifier is not None:
                await router.classifier.prepare()
        rows = await bench_routing(chosen, configs)
        report["routing"] = {
            "requests": len(rows),
            "dev": sum(r["split"] == "dev" for r in rows),
            "test": sum(r["split"] == "test" for r in rows),
            "ambiguous": sum(r["ambiguous"] for r in rows),
            "summary": {name: routing_summary(rows, name, configs[name]) for name in configs},
            "rows": rows,
        }
    if args.only in (None, "e2e"):
        by_route = [[i for i in items if "tool" in i and i["route"] == r] for r in ROUTES]
        sample = [i for pair in zip(*by_route, strict=True) for i in pair]  # alternate routes
        sample = sample[: 4 if args.quick else args.sample]
        primary = resolve_model(PRIMARY)
        progress("loading the models")
        await primary.prepare()
        agent = single_agent(system, primary)
        e2e: dict[str, Callable[[str], Any]] = {
            "system": lambda text: system.run(text),
            SINGLE: lambda text: agent.run(text),
        }
        styles = f"`{PRIMARY}` tool results as `{primary.profile.tool_result_style}`"
        style = other_style(primary)
        if args.style_variant:
            other = style_copy(primary, style)
            varied = load_system(SYSTEM).build(
                resolve=lambda ref: other if ref == PRIMARY else resolve_model(ref)
            )
            varied_agent = single_agent(varied, other)
            e2e[f"system ({style} results)"] = lambda text: varied.run(text)
            e2e[f"{SINGLE} ({style} results)"] = lambda text: varied_agent.run(text)
            styles += f" and as `{style}`"
        rows = await bench_e2e(sample, e2e)
        summary = {name: e2e_summary(rows, name) for name in e2e}
        pairs = {"system": SINGLE, f"system ({style} results)": f"{SINGLE} ({style} results)"}
        report["e2e"] = {
            "requests": len(rows),
            "styles": styles,
            "other_style": style,
            "configs": list(e2e),
            "summary": summary,
            "ratios": {s: ratios(rows, s, b) for s, b in pairs.items() if s in e2e},
            "rows": rows,
        }
    report["machine"]["load_average_at_end"] = _machine.load_average()
    load = report["machine"].get("load_average_at_start")
    cores = (report["machine"].get("cores") or {}).get("logical") or 1
    report["warnings"] = (
        [f"the machine was busy (load average {load[0]} on {cores} cores at the start): read "
         "the ratios rather than the seconds"]
        if load and load[0] > 0.5 * cores
        else []
    )  # fmt: skip
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 routing + 4 e2e requests")
    parser.add_argument("--only", choices=("routing", "e2e"), help="run one part")
    parser.add_argument("--sample", type=int, default=20, help="e2e requests (at most 20)")
    parser.add_argument(
        "--qwen-classifier", action="store_true", help="also route with qwen as the classifier"
    )
    parser.add_argument(
        "--no-style-variant",
        dest="style_variant",
        action="store_false",
        help="skip the run with tool results in the style the profile does not use",
    )
    parser.add_argument("--output-dir", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    # returns are stored in a file of their own, not in the user's data directory
    with tempfile.TemporaryDirectory() as state:
        os.environ.setdefault("SHOAL_CS_STATE", str(Path(state) / "customer_service.db"))
        report = asyncio.run(main_async(args))
    stem = "orchestration-quick" if args.quick else "orchestration"
    if args.only:
        stem += f"-{args.only}"
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / f"{stem}.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    lines = markdown(report)
    (args.output_dir / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
