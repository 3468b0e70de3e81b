"""Validation (spec §9): structured diagnostics `{severity, node, hint}`.

Checks: unique ids, referential integrity, type safety of comparisons whose
operand types are known, normalisation completeness (no vendor token left as
a kind), and hash stability (every id matches its content).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlx.air.model import NODE_TYPES, AIRGraph, node_id

# Kinds a spec §6 normalisation should have replaced; finding one is a defect.
VENDOR_TOKENS = frozenset(("ILIKE", "TOP", "ROWNUM", "FETCH", "JSONB_EXTRACT",
                           "JSON_EXTRACT_SCALAR", "JSON_VALUE", "LIMIT_OPTION"))  # fmt: skip
_COMPARISONS = frozenset(("EQ", "NEQ", "LT", "GT", "LTE", "GTE"))
_NUMERIC = frozenset(("INTEGER", "FLOAT"))


@dataclass(frozen=True, slots=True)
class Diagnostic:
    severity: str  # "error", "warning", "info"
    node: str | None
    hint: str

    def to_json(self) -> dict[str, str | None]:
        return {"severity": self.severity, "node": self.node, "hint": self.hint}


def validate(graph: AIRGraph, duplicates: tuple[str, ...] = ()) -> list[Diagnostic]:
    """Diagnostics for `graph`; an empty list means valid. `duplicates` comes from JSON input."""
    out = [Diagnostic("error", d, "duplicate node id") for d in duplicates]
    if graph.root not in graph.nodes:
        return [*out, Diagnostic("error", graph.root, "root node is missing")]
    for key, node in graph.nodes.items():
        if key != node.id:
            out.append(Diagnostic("error", key, f"stored under a different id than {node.id}"))
        if node.type not in NODE_TYPES:
            out.append(Diagnostic("error", node.id, f"unknown node type {node.type!r}"))
        if len(node.roles) != len(node.children):
            out.append(Diagnostic("error", node.id, "roles and children differ in length"))
        for kid in node.children:  # lineage may name nodes of the graph this one came from
            if kid not in graph.nodes:
                out.append(Diagnostic("error", node.id, f"refers to missing node {kid}"))
        expected = node_id(node.type, node.kind, node.value, node.alias, node.attrs, node.tags,
                           node.children, node.roles, node.dialect)  # fmt: skip
        if expected != node.id:
            out.append(Diagnostic("error", node.id, "id does not match content: hash unstable"))
        if node.kind in VENDOR_TOKENS:
            out.append(Diagnostic("warning", node.id, f"vendor token {node.kind} not normalised"))
        if node.kind in _COMPARISONS and len(node.children) >= 2:
            out.extend(_type_check(graph, node.id))
    if graph.root_node.kind == "OPAQUE":
        out.append(Diagnostic("info", graph.root, "statement not modelled: kept as source text"))
    return out


def _type_check(graph: AIRGraph, nid: str) -> list[Diagnostic]:
    node = graph[nid]
    kinds = []
    for kid in node.children:
        child = graph[kid]
        if child.kind == "NAME":  # an operator name under pglast's A_Expr
            continue
        kinds.append(child.kind if child.type == "literal" else None)
    known = [k for k in kinds if k and k != "NULL"]
    if len(known) == 2 and (known[0] in _NUMERIC) != (known[1] in _NUMERIC):
        return [Diagnostic("warning", nid, f"compares {known[0]} with {known[1]}")]
    return []
