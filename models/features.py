"""The reward model's input: a shape's AIR features, then its plan's features.

AIR features come from `air.features` (what the statement says); plan
features from the server's EXPLAIN (FORMAT JSON) of the shape's generic plan
(what the server would do), zeros with `has_plan` 0 while no plan is known.
Both lists only grow at their end, so a model reads vectors of a later
release by their first `inputs` columns.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from sqlx.air.features import FEATURES

PLAN_FEATURES: tuple[str, ...] = (
    "has_plan", "log_total_cost", "log_plan_rows", "plan_nodes", "seq_scans", "index_scans",
    "joins", "sorts", "aggregates", "max_depth",
)  # fmt: skip
INPUTS: tuple[str, ...] = (*FEATURES, *PLAN_FEATURES)
NO_PLAN: tuple[float, ...] = (0.0,) * len(PLAN_FEATURES)


def _nodes(node: dict[str, Any], depth: int = 1) -> Iterator[tuple[dict[str, Any], int]]:
    yield node, depth
    for child in node.get("Plans", ()):
        yield from _nodes(child, depth + 1)


def plan_features(plan: dict[str, Any] | None) -> tuple[float, ...]:
    """The features of one EXPLAIN (FORMAT JSON) `Plan` node tree."""
    if not plan:
        return NO_PLAN
    counts = dict.fromkeys(PLAN_FEATURES, 0.0)
    counts["has_plan"] = 1.0
    counts["log_total_cost"] = math.log1p(max(float(plan.get("Total Cost", 0.0)), 0.0))
    counts["log_plan_rows"] = math.log1p(max(float(plan.get("Plan Rows", 0.0)), 0.0))
    for node, depth in _nodes(plan):
        kind = str(node.get("Node Type", ""))
        counts["plan_nodes"] += 1
        counts["seq_scans"] += kind == "Seq Scan"
        counts["index_scans"] += kind in ("Index Scan", "Index Only Scan", "Bitmap Index Scan")
        counts["joins"] += kind in ("Nested Loop", "Hash Join", "Merge Join")
        counts["sorts"] += kind in ("Sort", "Incremental Sort")
        counts["aggregates"] += kind == "Aggregate"
        counts["max_depth"] = max(counts["max_depth"], float(depth))
    return tuple(counts[name] for name in PLAN_FEATURES)


def model_input(air: Sequence[float], plan: Sequence[float]) -> np.ndarray:
    """One row of the model's input (float32, 1 x len(INPUTS))."""
    return np.asarray([[*air, *plan]], dtype=np.float32)
