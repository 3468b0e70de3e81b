"""PostgreSQL ↔ AIR, through pglast (PostgreSQL's own grammar decides validity).

Lowering (`pg_lower`) maps every parse-tree node to one AIR node whose
fields ride along as attributes and role-named children, so emission
rebuilds the exact pglast tree and deparses it. Lowering checks that
promise once per query shape:
if the deparsed text does not parse back to the same tree (locations aside),
the statement becomes an OPAQUE node that keeps its source text, relations
and columns.
"""

from __future__ import annotations

from typing import Any

import pglast
from pglast import ast
from pglast.stream import RawStream

from sqlx.air import kinds_pg, pg_tree
from sqlx.air.build import GraphBuilder
from sqlx.air.errors import EmissionError, LoweringError
from sqlx.air.model import AIRGraph, AIRNode
from sqlx.air.pg_lower import CONST_ATTR, LIMIT_ROLE, Lowerer
from sqlx.air.pg_tree import is_position

DIALECT = "postgres"


def parse_json(sql: str) -> list[dict[str, Any]]:
    """The RawStmt bodies of `sql` (libpg_query JSON); LoweringError if invalid."""
    try:
        return pg_tree.parse_json(sql)
    except pglast.parser.ParseError as exc:
        position = exc.args[1] if len(exc.args) > 1 else None
        raise LoweringError(str(exc.args[0]), position, DIALECT) from exc


def parse(sql: str) -> tuple[dict[str, Any], ...]:
    """The RawStmt trees of `sql` in pglast's dict form; LoweringError if invalid."""
    return tuple(pg_tree.to_pglast("RawStmt", raw) for raw in parse_json(sql))


def strip_positions(tree: Any) -> Any:
    """A parse tree (pglast's form or libpg_query's JSON) without source positions."""
    if isinstance(tree, dict):
        return {k: strip_positions(v) for k, v in tree.items() if not is_position(k, v)}
    if isinstance(tree, tuple | list):
        return tuple(strip_positions(v) for v in tree)
    return tree


# Whether statements of a shape (pglast fingerprint) round-trip through the
# deparser: literals are printed by the same code whatever their values, so
# checking once per shape is enough. Bounded: cleared when full.
_VERIFIED: dict[str, bool] = {}
_VERIFIED_MAX = 50_000


def _round_trips(graph: AIRGraph, raw: dict[str, Any], source: str) -> bool:
    shape = fingerprint_of(source)  # None: verify this statement alone
    known = _VERIFIED.get(shape) if shape else None
    if known is not None:
        return known
    try:
        again = parse_json(emit(graph))
        same = len(again) == 1 and strip_positions(again[0]) == strip_positions(raw)
    except Exception:  # any deparser failure means: not modelled
        same = False
    if shape:
        if len(_VERIFIED) >= _VERIFIED_MAX:
            _VERIFIED.clear()
        _VERIFIED[shape] = same
    return same


def lower_statement(raw: dict[str, Any], sql: str) -> AIRGraph:
    """One RawStmt (libpg_query JSON) of `sql` to a graph, or OPAQUE if it would not round-trip."""
    start = raw.get("stmt_location", 0)
    length = raw.get("stmt_len", 0) or len(sql) - start
    source = sql[start : start + length].strip()
    builder = GraphBuilder(DIALECT)
    root = Lowerer(builder).wrapped(raw["stmt"])
    graph = builder.build(root, source=source)
    if not _round_trips(graph, raw, source):
        return opaque(raw, source)
    return graph


def opaque(raw: dict[str, Any], source: str) -> AIRGraph:
    """A statement AIR does not model: its exact text, relations and columns."""
    relations, columns = kinds_pg.references(pg_tree.to_pglast("RawStmt", raw))
    builder = GraphBuilder(DIALECT)
    kids = [builder.add("identifier", "TABLE", value=r) for r in relations]
    kids += [builder.add("identifier", "COLUMN", value=c) for c in columns]
    roles = ["relations[]"] * len(relations) + ["columns[]"] * len(columns)
    ((cls, body),) = raw["stmt"].items()
    statement = kinds_pg.statement_kind(cls, body)
    root = builder.add("statement", "OPAQUE", value=source, attrs=[("statement", statement)],
                       children=kids, roles=roles)  # fmt: skip
    return builder.build(root, source=source)


# --- emission -----------------------------------------------------------------


def _rebuild(graph: AIRGraph, node: AIRNode) -> Any:
    cls = node.attr("@pg")
    if cls is None:
        if node.kind == "LIST":
            return tuple(_rebuild(graph, graph[c]) for c in node.children)
        if node.kind == "VALUE":
            return node.value
        raise EmissionError(f"node {node.id} has no PostgreSQL form", DIALECT)
    out: dict[str, Any] = {"@": cls}
    for key, value in node.attrs:
        if key == CONST_ATTR:
            field, vcls, raw = value
            out["val"] = {"@": vcls} if raw is None else {"@": vcls, field: raw}
        elif not key.startswith("@") and key in _field_names(cls):
            out[key] = list(value) if isinstance(value, tuple) else value
    for role, child in zip(node.roles, node.children, strict=True):
        child_node = graph[child]
        if role == LIMIT_ROLE:
            _unfold_limit(graph, child_node, out)
        elif role.endswith("[]"):
            out.setdefault(role[:-2], []).append(_rebuild(graph, child_node))
        else:
            out[role] = _rebuild(graph, child_node)
    return out


def _unfold_limit(graph: AIRGraph, limit: AIRNode, out: dict[str, Any]) -> None:
    for role, child in zip(limit.roles, limit.children, strict=True):
        out["limitCount" if role == "count" else "limitOffset"] = _rebuild(graph, graph[child])
    option = limit.attr("option")
    if option:
        out["limitOption"] = option


def _field_names(cls: str) -> frozenset[str]:
    names = _FIELDS.get(cls)
    if names is None:
        names = _FIELDS[cls] = frozenset(getattr(ast, cls).__slots__)
    return names


_FIELDS: dict[str, frozenset[str]] = {}


def emit(graph: AIRGraph) -> str:
    """The PostgreSQL text of a graph lowered from PostgreSQL."""
    root = graph.root_node
    if root.kind == "OPAQUE":
        return str(root.value)
    # Calls written in SQL syntax (AT TIME ZONE, substring(x FROM y), trim(...))
    # must be printed that way again, or they re-parse as plain calls.
    special = any(n.attr("funcformat") == "COERCE_SQL_SYNTAX" for n in graph.nodes.values())
    return deparse(_rebuild(graph, root), special)


def deparse(stmt: dict[str, Any], special_functions: bool | None = None) -> str:
    """The SQL text of one statement in pglast's dict form."""
    if special_functions is None:
        special_functions = "COERCE_SQL_SYNTAX" in repr(stmt)
    try:
        raw = ast.RawStmt({"@": "RawStmt", "stmt": stmt})
        return RawStream(special_functions=special_functions)(raw)
    except Exception as exc:  # the deparser raises many types
        raise EmissionError(f"cannot deparse: {exc}", DIALECT) from exc


def fingerprint(sql: str) -> str:
    return pglast.parser.fingerprint(sql)


# Text → fingerprint, shared by every caller in the process (the decider's shape
# cache, query statistics): a text is fingerprinted once. Bounded: cleared when full.
_FINGERPRINTS: dict[str, str | None] = {}
_FINGERPRINTS_MAX = 50_000


def known_fingerprint(sql: str, fingerprint: str) -> None:
    """Tell the cache a text's fingerprint, known another way (a text of a template whose
    fingerprint was taken: literals do not change it)."""
    if len(_FINGERPRINTS) >= _FINGERPRINTS_MAX:
        _FINGERPRINTS.clear()
    _FINGERPRINTS[sql] = fingerprint


def fingerprint_of(sql: str) -> str | None:
    """`fingerprint(sql)` remembered; None for text that does not parse."""
    found = _FINGERPRINTS.get(sql, "")
    if found != "":
        return found
    try:
        found = pglast.parser.fingerprint(sql)
    except pglast.parser.ParseError:
        found = None
    if len(_FINGERPRINTS) >= _FINGERPRINTS_MAX:
        _FINGERPRINTS.clear()
    _FINGERPRINTS[sql] = found
    return found
