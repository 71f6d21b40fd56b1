"""Lexical tool selection on the BFCL development split (no model needed, seconds to run).

Measures what ``shoal.tools.relevant_tools`` (the ``relevance`` and ``gated`` strategies) does
with the dev questions: how often the offered set holds the right tool, how often the right tool
ranks first, and how many of the generated no-tool-fits questions it rejects outright.

    .venv/bin/python bench/selection.py     # writes results/selection.json and .md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import _machine
from _machine import ROOT

from shoal.evals import irrelevance_items, load_suite, tool_name
from shoal.tools import relevant_tools

SUITE = ROOT.parent / "shared" / "datasets" / "bfcl-dev"


def main() -> None:
    suite = Path(sys.argv[1]) if len(sys.argv) > 1 else SUITE
    items = load_suite(suite)
    contains = top1 = 0
    for item in items:
        wanted = tool_name(next(iter(item.ground_truth[0])))
        offered = [t.name for t in relevant_tools(item.question, item.tools)]
        contains += wanted in offered
        top1 += bool(offered) and offered[0] == wanted
    unrelated = irrelevance_items(items)
    rejected = sum(1 for item in unrelated if not relevant_tools(item.question, item.tools))
    report = {
        "suite": str(suite),
        "questions": len(items),
        "offered_set_holds_the_right_tool": contains,
        "right_tool_ranked_first": top1,
        "no_tool_fits_questions": len(unrelated),
        "no_tool_fits_rejected_by_relevance": rejected,
        "machine": _machine.machine_info(),
    }
    out = ROOT / "bench" / "results"
    (out / "selection.json").write_text(json.dumps(report, indent=1) + "\n")
    lines = [
        "# Lexical tool selection on the BFCL dev split",
        "",
        "`python bench/selection.py` (`shoal.tools.relevant_tools`, no model)",
        "",
        "| measure | count |",
        "|---|---|",
        f"| questions | {len(items)} |",
        f"| offered set holds the right tool | {contains} |",
        f"| right tool ranked first | {top1} |",
        f"| generated no-tool-fits questions | {len(unrelated)} |",
        f"| of those, rejected by relevance alone | {rejected} |",
        "",
        *_machine.markdown_tail((), report["machine"]),
    ]
    (out / "selection.md").write_text("\n".join(lines))
    print("\n".join(lines[4:11]))


if __name__ == "__main__":
    main()
