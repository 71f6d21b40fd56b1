"""Small model, large model, or Shoal's router: accuracy and mean latency on a mixed workload.

The workload (``bench/data/routing_workload.json``) mixes simple lookups that a tool answers
(weather in a city, an order's status: scored by the call made, tool and argument) with short
questions a 135M model tends to get wrong (arithmetic, Python, facts: scored by the expected word
or number in the answer). One agent definition (two tools, a one-line instruction, greedy
decoding) runs on each configuration:

- ``small``: ``smollm2-135m`` only;
- ``large``: ``qwen2.5-coder-0.5b`` only (standing in for the large tier);
- ``rules``: :class:`~shoal.models.RouterModel` with one rule (lookup words -> small), everything
  else to large;
- ``classifier``: the router with no rule, ``smollm2-135m`` classifying under an enum
  constraint (lookup / question);
- ``rules+escalation``: the rule, and the lookup route is an
  :class:`~shoal.models.EscalatingModel` (small, then large) with a validator that rejects a
  lookup answered without a tool;
- ``rules+classifier+escalation``: the same with the classifier deciding what the rule does not.

Every request runs on every configuration in turn (the order rotates per request), so a slow
spell of the shared machine falls on each alike; latency is the wall time of ``agent.run``.
Both models stay loaded in this process.

    .venv/bin/python bench/routing.py            # ~10 min; writes results/routing.{json,md}
    .venv/bin/python bench/routing.py --quick    # 4 requests of each kind: checks the script
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import _machine
from _machine import ROOT, progress

from shoal.agent import Agent
from shoal.messages import Message
from shoal.models import (
    EscalatingModel,
    Model,
    ModelResponse,
    RouterModel,
    RouteRule,
    resolve_model,
)
from shoal.settings import ModelSettings
from shoal.tools import tool

SMALL = "smollm2-135m"
LARGE = "qwen2.5-coder-0.5b"
WORKLOAD = ROOT / "bench" / "data" / "routing_workload.json"
LOOKUP_WORDS = r"\b(weather|rain(ing)?|sunny|warm|cold|temperature|forecast|order|track)\b"
LABELS = {
    "lookup": "asks for the weather in a city or the status of an order",
    "question": "a math, programming or general knowledge question",
}
INSTRUCTIONS = "You are a helpful assistant. Answer in one short sentence."
SETTINGS = ModelSettings(temperature=0, max_tokens=96)
#: the name of the lookup route's escalation tiers (small, then large)
TIERS = "lookup-tiers"


@tool
def get_weather(city: str) -> dict[str, Any]:
    """Current weather for a city."""
    return {"city": city, "temperature_c": 18, "conditions": "cloudy"}


@tool
def order_status(order_id: str) -> dict[str, Any]:
    """Status of a customer order by its order number."""
    return {"order_id": order_id, "status": "shipped", "eta": "Tuesday"}


def answered_from_a_tool(response: ModelResponse, messages: Sequence[Message]) -> str | None:
    """The lookup route's validator: a lookup is answered from a tool's result, not from
    the model's memory."""
    if response.tool_calls or any(m.role == "tool" for m in messages):
        return None
    return "a lookup must be answered by calling a tool"


def configurations(small: Model, large: Model) -> dict[str, Model]:
    lookup_rule = RouteRule(route="lookup", pattern=LOOKUP_WORDS, reason="lookup words")
    tiers = EscalatingModel([small, large], validator=answered_from_a_tool, name=TIERS)
    return {
        "small": small,
        "large": large,
        "rules": RouterModel(
            {"lookup": small, "question": large},
            rules=[lookup_rule],
            default="question",
            name="rules",
        ),
        "classifier": RouterModel(
            {"lookup": small, "question": large},
            classifier=small,
            labels=LABELS,
            default="question",
            name="classifier",
        ),
        "rules+escalation": RouterModel(
            {"lookup": tiers, "question": large},
            rules=[lookup_rule],
            default="question",
            name="rules+escalation",
        ),
        "rules+classifier+escalation": RouterModel(
            {"lookup": tiers, "question": large},
            rules=[lookup_rule],
            classifier=small,
            labels=LABELS,
            default="question",
            name="rules+classifier+escalation",
        ),
    }


def score(item: dict[str, Any], result: Any) -> bool:
    if "tool" in item:
        return any(
            r.call.name == item["tool"]
            and item["arg"].lower() in json.dumps(r.call.arguments).lower()
            for r in result.tool_calls
        )
    text = str(result.output).lower()
    return not result.tool_calls and any(a.lower() in text for a in item["answer"])


def served_by(result: Any) -> str:
    """Which model answered: the last model a decision moved to (the escalation tiers' first
    model when they did not escalate), else the run's model."""
    last = result.decisions[-1].model if result.decisions else result.model_name
    return SMALL if last == TIERS else last


async def run_item(agent: Agent[Any], item: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        result = await agent.run(item["q"])
    except Exception as exc:  # a failed request is a wrong answer, and is reported
        return {"ok": False, "seconds": time.perf_counter() - started, "error": repr(exc)}
    return {
        "ok": score(item, result),
        "seconds": time.perf_counter() - started,
        "served_by": served_by(result),
        "decisions": [f"{d.router}:{d.kind}->{d.model}" for d in result.decisions],
        "calls": [[r.call.name, r.call.arguments] for r in result.tool_calls],
        "output": str(result.output)[:160],
    }


async def bench(items: list[dict[str, Any]]) -> dict[str, Any]:
    small, large = resolve_model(SMALL), resolve_model(LARGE)
    progress("loading both models")
    await small.prepare()
    await large.prepare()
    configs = configurations(small, large)
    agents = {
        name: Agent(
            "desk",
            model,
            instructions=INSTRUCTIONS,
            tools=[get_weather, order_status],
            settings=SETTINGS,
        )
        for name, model in configs.items()
    }
    names = list(agents)
    rows: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        order = names[index % len(names) :] + names[: index % len(names)]
        row: dict[str, Any] = {"q": item["q"], "kind": "lookup" if "tool" in item else "question"}
        for name in order:
            row[name] = await run_item(agents[name], item)
        rows.append(row)
        marks = " ".join(f"{n}={'ok' if row[n]['ok'] else '--'}" for n in names)
        progress(f"{index + 1}/{len(items)} {marks}")
    return {"rows": rows, "configs": names}


def summarise(rows: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in names:
        runs = [r[name] for r in rows]
        by_kind = {
            kind: [r[name]["ok"] for r in rows if r["kind"] == kind]
            for kind in ("lookup", "question")
        }
        served = Counter(run.get("served_by", "error") for run in runs)
        out[name] = {
            "accuracy": sum(run["ok"] for run in runs) / len(runs),
            "lookup_accuracy": sum(by_kind["lookup"]) / max(1, len(by_kind["lookup"])),
            "question_accuracy": sum(by_kind["question"]) / max(1, len(by_kind["question"])),
            "mean_seconds": statistics.mean(run["seconds"] for run in runs),
            "median_seconds": statistics.median(run["seconds"] for run in runs),
            "served_by": dict(served),
            "escalations": sum(
                any(":escalation->" in d for d in run.get("decisions", ())) for run in runs
            ),
            "errors": sum("error" in run for run in runs),
        }
    large = out["large"]["mean_seconds"]
    for name in names:
        out[name]["latency_vs_large"] = out[name]["mean_seconds"] / large
    for name in names:
        if name != "small" and name != "large":
            out[name]["routing_accuracy"] = _routing_accuracy(rows, name)
    return out


def _routing_accuracy(rows: list[dict[str, Any]], name: str) -> float:
    """How often the router's first choice matched the request's kind (lookup -> small)."""
    right = 0
    for row in rows:
        decisions = row[name].get("decisions", [])
        first = decisions[0].split("->")[1] if decisions else ""
        right += (first in (SMALL, TIERS)) == (row["kind"] == "lookup")
    return right / len(rows)


def markdown(report: dict[str, Any]) -> list[str]:
    s = report["summary"]
    lines = [
        "# Small, large or routed: accuracy and latency on a mixed workload",
        "",
        f"`python bench/routing.py`: {report['requests']} requests "
        f"({report['lookups']} lookups a tool answers, {report['questions']} questions a "
        f"135M model tends to get wrong), one agent definition, greedy decoding; small = "
        f"`{SMALL}`, large = `{LARGE}`, both embedded. Every request runs on every "
        "configuration in rotating order.",
        "",
        "| configuration | accuracy | lookups | questions | mean latency | vs large | median "
        "| answered by small | escalations | routing right |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in report["configs"]:
        row = s[name]
        small_share = (
            sum(count for model, count in row["served_by"].items() if model == SMALL)
            / report["requests"]
        )
        routing = row.get("routing_accuracy")
        lines.append(
            f"| {name} | {row['accuracy']:.0%} | {row['lookup_accuracy']:.0%} | "
            f"{row['question_accuracy']:.0%} | {row['mean_seconds']:.2f} s | "
            f"{row['latency_vs_large']:.2f}× | {row['median_seconds']:.2f} s | "
            f"{small_share:.0%} | {row['escalations']} | "
            f"{'' if routing is None else f'{routing:.0%}'} |"
        )
    lines += [
        "",
        "- *rules*: one regular expression of lookup words sends a request to the small model, "
        "everything else goes to the large one.",
        "- *classifier*: no rule; the small model classifies each request (lookup / question) "
        "under an enum constraint.",
        "- *rules+escalation*: the rule; lookups go to the small model and escalate to the "
        "large one when the answer did not come from a tool (a validator of the lookup route).",
        "- *rules+classifier+escalation*: the same, the classifier deciding what the rule does "
        "not match (here: the questions).",
        "- *routing right*: the router's first choice matched the request's kind.",
        "",
        *_machine.markdown_tail((), report["machine"]),
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 requests of each kind")
    args = parser.parse_args()
    data = json.loads(WORKLOAD.read_text())
    lookups, questions = data["lookups"], data["questions"]
    if args.quick:
        lookups, questions = lookups[:4], questions[:4]
    # interleave the kinds, as a real stream of requests would
    items = [x for pair in zip(lookups, questions, strict=True) for x in pair]
    outcome = asyncio.run(bench(items))
    report = {
        "quick": args.quick,
        "requests": len(items),
        "lookups": len(lookups),
        "questions": len(questions),
        "configs": outcome["configs"],
        "summary": summarise(outcome["rows"], outcome["configs"]),
        "rows": outcome["rows"],
        "machine": _machine.machine_info(),
    }
    out = ROOT / "bench" / "results"
    stem = "routing-quick" if args.quick else "routing"
    (out / f"{stem}.json").write_text(json.dumps(report, indent=1) + "\n")
    lines = markdown(report)
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[6 : 6 + len(report["configs"])]))


if __name__ == "__main__":
    main()
