"""Reading a graph's clauses the same way whichever parser it came from.

pglast and sqlglot name a statement's parts differently (`whereClause` vs a
WHERE node, `targetList[]` vs `expressions[]`); these helpers answer in
canonical terms so the plan, features and tags need not care.
"""

from __future__ import annotations

from collections.abc import Iterator

from sqlx.air.model import AIRGraph, AIRNode

AGGREGATES = frozenset(("COUNT", "SUM", "AVG", "MIN", "MAX", "ARRAY_AGG", "STRING_AGG",
                        "JSON_AGG", "JSONB_AGG", "BOOL_AND", "BOOL_OR", "STDDEV", "VARIANCE",
                        "GROUP_CONCAT", "COUNT_IF", "ANY_VALUE"))  # fmt: skip
COMPARISONS = frozenset(("EQ", "NEQ", "LT", "GT", "LTE", "GTE", "LIKE", "NOT_LIKE", "IN",
                         "NOT_IN", "BETWEEN", "NOT_BETWEEN", "IS_NULL", "IS_NOT_NULL", "IS",
                         "IS_DISTINCT_FROM", "IS_NOT_DISTINCT_FROM", "ANY", "ALL", "REGEXP",
                         "CONTAINS", "CONTAINED_BY", "OVERLAPS", "EXISTS", "SIMILAR"))  # fmt: skip
_ROLE_GROUPS = {
    "where": ("whereClause", "where"),
    "having": ("havingClause", "having"),
    "group": ("groupClause[]", "group"),
    "order": ("sortClause[]", "order"),
    "output": ("targetList[]", "expressions[]", "returningList[]", "returning"),
    "from": ("fromClause[]", "from_", "joins[]", "relation", "this"),
}


def child(graph: AIRGraph, node: AIRNode, group: str) -> list[AIRNode]:
    """The children of `node` playing one canonical part (where, having, group, order ...)."""
    roles = _ROLE_GROUPS[group]
    out = []
    for role, kid in graph.children(node):
        if role in roles:
            # sqlglot wraps a clause in its own node (Where, Having); pglast does not.
            if kid.kind in ("WHERE", "HAVING") and kid.children:
                out.extend(graph[c] for c in kid.children)
            else:
                out.append(kid)
    return out


def tree(
    graph: AIRGraph, node_id: str | None = None, depth: int = 0
) -> Iterator[tuple[AIRNode, int]]:
    """Every node as a tree (shared nodes repeated), with its depth, pre-order.

    A literal is one value: the parser's own parts under it are not visited.
    """
    node = graph[node_id or graph.root]
    yield node, depth
    if node.type == "literal":
        return
    for kid in node.children:
        yield from tree(graph, kid, depth + 1)


def first_visits(graph: AIRGraph, node_id: str | None = None) -> list[AIRNode]:
    """The nodes of `tree` in its order, each at its first visit only (no literal parts)."""
    return list(graph.walk(node_id, literal_parts=False))


def is_subquery(node: AIRNode) -> bool:
    return node.kind == "SUBQUERY" or (node.type == "statement" and node.kind in (
        "SELECT", "UNION", "INTERSECT", "EXCEPT"))  # fmt: skip


def is_aggregate(node: AIRNode) -> bool:
    return node.type == "function" and node.kind in AGGREGATES
