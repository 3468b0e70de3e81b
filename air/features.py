"""Vectorisation (spec §10): a fixed-length float32 feature vector and a token sequence.

FEATURES names every position of the vector; the order never changes within
a version (append only), so a model trained on one release reads the next.
"""

from __future__ import annotations

import numpy as np

from sqlx.air import shape
from sqlx.air.model import AIRGraph

FEATURES_VERSION = 1
FEATURES: tuple[str, ...] = (
    "nodes", "depth", "tables", "joins", "predicates", "and_or", "aggregates", "functions",
    "subqueries", "ctes", "window_functions", "set_operations", "literals", "parameters",
    "has_where", "has_group", "has_order", "has_limit", "has_distinct", "columns", "star",
    "is_select", "is_insert", "is_update", "is_delete", "is_ddl", "is_transaction", "is_opaque",
)  # fmt: skip
_DDL = frozenset(("CREATE", "ALTER", "DROP", "TRUNCATE", "GRANT", "REVOKE", "COMMENT"))


def features(graph: AIRGraph) -> np.ndarray:
    """The feature vector of `graph`, float32, len(FEATURES) long."""
    cached = graph._cache.get("features")
    if cached is not None:
        return cached
    root = graph.root_node
    counts = dict.fromkeys(FEATURES, 0.0)
    depth = 0
    for node, d in shape.tree(graph):
        depth = max(depth, d)
        counts["nodes"] += 1
        kind = node.kind
        counts["tables"] += kind == "TABLE"
        counts["joins"] += kind == "JOIN"
        counts["predicates"] += kind in shape.COMPARISONS
        counts["and_or"] += kind in ("AND", "OR")
        counts["aggregates"] += shape.is_aggregate(node)
        counts["functions"] += node.type == "function"
        counts["subqueries"] += kind == "SUBQUERY"
        counts["ctes"] += kind == "CTE"
        counts["window_functions"] += kind == "WINDOW" or node.attr("@sg") == "Window"
        counts["set_operations"] += kind in ("UNION", "INTERSECT", "EXCEPT")
        counts["literals"] += node.type == "literal" and kind not in ("VALUE", "NAME")
        counts["parameters"] += kind == "PARAM"
        counts["columns"] += kind == "COLUMN"
        counts["star"] += kind == "STAR"
        counts["has_limit"] = max(counts["has_limit"], float(kind == "LIMIT"))
        counts["has_distinct"] = max(counts["has_distinct"], float(kind == "DISTINCT" or bool(
            node.attr("distinct"))))  # fmt: skip
    counts["depth"] = depth
    counts["has_where"] = float(bool(shape.child(graph, root, "where")))
    counts["has_group"] = float(bool(shape.child(graph, root, "group")))
    counts["has_order"] = float(bool(shape.child(graph, root, "order")))
    counts["is_select"] = float(root.kind in ("SELECT", "UNION", "INTERSECT", "EXCEPT"))
    counts["is_insert"] = float(root.kind == "INSERT")
    counts["is_update"] = float(root.kind == "UPDATE")
    counts["is_delete"] = float(root.kind == "DELETE")
    counts["is_ddl"] = float(root.kind in _DDL)
    counts["is_transaction"] = float(root.kind == "TRANSACTION")
    counts["is_opaque"] = float(root.kind == "OPAQUE")
    vector = np.array([counts[f] for f in FEATURES], dtype=np.float32)
    vector.setflags(write=False)
    graph._cache["features"] = vector
    return vector


def of_text(text: str) -> tuple[list[AIRGraph], tuple[float, ...]]:
    """A statement text's graphs and the first one's features (zeros if it does not lower):
    what is kept of a query shape, from its placeholder text."""
    from sqlx.air.api import lower_all  # the API imports every dialect; features need none
    from sqlx.air.errors import LoweringError

    try:
        graphs = lower_all(text) if text else []
    except LoweringError:
        graphs = []
    if not graphs:
        return [], (0.0,) * len(FEATURES)
    return graphs, tuple(float(x) for x in features(graphs[0]))


def tokens(graph: AIRGraph) -> list[str]:
    """The graph flattened pre-order into `type:KIND` tokens, with `(` `)` around children."""
    out: list[str] = []

    def visit(nid: str) -> None:
        node = graph[nid]
        out.append(f"{node.type}:{node.kind}")
        if node.children and node.type != "literal":
            out.append("(")
            for kid in node.children:
                visit(kid)
            out.append(")")

    visit(graph.root)
    return out
