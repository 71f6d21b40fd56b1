"""Evaluators: measure agents and models on suites of questions."""

from shoal.evals.bfcl import (
    BfclItem,
    Score,
    bfcl_to_json_schema,
    irrelevance_items,
    load_suite,
    score_calls,
    tool_name,
)
from shoal.evals.runner import (
    BUCKETS,
    STRATEGIES,
    CategorySummary,
    EvalReport,
    ItemOutcome,
    evaluate,
    evaluate_item,
)

__all__ = [
    "BUCKETS",
    "STRATEGIES",
    "BfclItem",
    "CategorySummary",
    "EvalReport",
    "ItemOutcome",
    "Score",
    "bfcl_to_json_schema",
    "evaluate",
    "evaluate_item",
    "irrelevance_items",
    "load_suite",
    "score_calls",
    "tool_name",
]
