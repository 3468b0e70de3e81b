"""PostgreSQL ↔ AIR, through pglast (PostgreSQL's own grammar decides validity).

Lowering maps every pglast node to one AIR node: the canonical kind, type and
value come from `kinds_pg`, and the node's own fields ride along as
attributes and role-named children, so emission rebuilds the exact pglast
tree and deparses it. Lowering checks that promise for every statement:
if the deparsed text does not parse back to the same tree (locations aside),
the statement becomes an OPAQUE node that keeps its source text, relations
and columns.
"""

from __future__ import annotations

from typing import Any

import pglast
from pglast import ast
from pglast.stream import RawStream

from sqlx.air import kinds_pg
from sqlx.air.build import GraphBuilder, add_members
from sqlx.air.errors import EmissionError, LoweringError
from sqlx.air.model import AIRGraph, AIRNode

DIALECT = "postgres"
# Source positions: not part of a statement's meaning (PostgreSQL 17 added list bounds).
_POSITION_FIELDS = frozenset(("location", "stmt_location", "stmt_len", "rexpr_list_start",
                              "rexpr_list_end", "list_start", "list_end"))  # fmt: skip
LIMIT_ROLE = "@limit"


def parse(sql: str) -> tuple[dict[str, Any], ...]:
    try:
        return tuple(raw(skip_none=True) for raw in pglast.parse_sql(sql))
    except pglast.parser.ParseError as exc:
        position = exc.args[1] if len(exc.args) > 1 else None
        raise LoweringError(str(exc.args[0]), position, DIALECT) from exc


def _is_position(key: str) -> bool:
    return key in _POSITION_FIELDS or key.endswith("_location")


def strip_positions(tree: Any) -> Any:
    """A parse tree without source positions, for comparing trees."""
    if isinstance(tree, dict):
        return {k: strip_positions(v) for k, v in tree.items() if not _is_position(k)}
    if isinstance(tree, tuple):
        return tuple(strip_positions(v) for v in tree)
    return tree


class _Lowerer:
    def __init__(self, builder: GraphBuilder) -> None:
        self.b = builder

    def node(self, d: dict[str, Any]) -> str:
        cls = d["@"]
        attrs: list[tuple[str, Any]] = [("@pg", cls)]
        children: list[str] = []
        roles: list[str] = []
        fields = dict(d)
        if cls == "SelectStmt" and ("limitCount" in fields or "limitOffset" in fields):
            children.append(self._limit(fields))
            roles.append(LIMIT_ROLE)
        for key, val in fields.items():
            if key == "@" or _is_position(key):
                continue
            if isinstance(val, dict):
                if "#" in val:  # an enum: its name is enough to rebuild it
                    attrs.append((key, val["name"]))
                else:
                    children.append(self.node(val))
                    roles.append(key)
            elif isinstance(val, tuple):
                add_members(key, val, self.item, children, roles, attrs)
            else:
                attrs.append((key, val))
        type_, kind, value, alias, extra = kinds_pg.classify(cls, d)
        loc = d.get("location")
        span = (loc, loc) if isinstance(loc, int) and loc >= 0 else None
        return self.b.add(type_, kind, value=value, alias=alias, attrs=attrs + extra,
                          children=children, roles=roles, span=span)  # fmt: skip

    def item(self, item: Any) -> str:
        if isinstance(item, dict):
            return self.node(item)
        if isinstance(item, tuple):
            kids = [self.item(i) for i in item]
            return self.b.add("expr", "LIST", children=kids, roles=["items[]"] * len(kids))
        return self.b.add("literal", "VALUE", value=item)

    def _limit(self, fields: dict[str, Any]) -> str:
        """Spec §6: LIMIT / FETCH FIRST / OFFSET become one LIMIT clause (count, offset)."""
        children, roles = [], []
        count = fields.pop("limitCount", None)
        offset = fields.pop("limitOffset", None)
        option = fields.pop("limitOption", None)
        value = None
        if count is not None:
            children.append(self.node(count))
            roles.append("count")
            value = kinds_pg.const_value(count)
        if offset is not None:
            children.append(self.node(offset))
            roles.append("offset")
        attrs = [("option", option["name"])] if option else []
        if option and option["name"] == "LIMIT_OPTION_WITH_TIES":
            attrs.append(("with_ties", True))
        return self.b.add("clause", "LIMIT", value=value, attrs=attrs, children=children,
                          roles=roles)  # fmt: skip


# Whether statements of a shape (pglast fingerprint) round-trip through the
# deparser: literals are printed by the same code whatever their values, so
# checking once per shape is enough. Bounded: cleared when full.
_VERIFIED: dict[str, bool] = {}
_VERIFIED_MAX = 50_000


def _round_trips(graph: AIRGraph, raw: dict[str, Any], source: str) -> bool:
    try:
        shape = fingerprint(source)
    except Exception:  # fingerprinting failed: verify this statement alone
        shape = None
    known = _VERIFIED.get(shape) if shape else None
    if known is not None:
        return known
    try:
        emitted = emit(graph)
        same = strip_positions(parse(emitted)) == (strip_positions({**raw, "@": "RawStmt"}),)
    except Exception:  # any deparser failure means: not modelled
        same = False
    if shape:
        if len(_VERIFIED) >= _VERIFIED_MAX:
            _VERIFIED.clear()
        _VERIFIED[shape] = same
    return same


def lower_statement(raw: dict[str, Any], sql: str) -> AIRGraph:
    """One RawStmt (as a dict) of `sql` to a graph, or OPAQUE if it would not round-trip."""
    start = raw.get("stmt_location", 0)
    length = raw.get("stmt_len", 0) or len(sql) - start
    source = sql[start : start + length].strip()
    builder = GraphBuilder(DIALECT)
    root = _Lowerer(builder).node(raw["stmt"])
    graph = builder.build(root, source=source)
    if not _round_trips(graph, raw, source):
        return opaque(raw, source)
    return graph


def opaque(raw: dict[str, Any], source: str) -> AIRGraph:
    """A statement AIR does not model: its exact text, relations and columns."""
    relations, columns = kinds_pg.references(raw)
    builder = GraphBuilder(DIALECT)
    kids = [builder.add("identifier", "TABLE", value=r) for r in relations]
    kids += [builder.add("identifier", "COLUMN", value=c) for c in columns]
    roles = ["relations[]"] * len(relations) + ["columns[]"] * len(columns)
    statement = kinds_pg.statement_kind(raw["stmt"]["@"], raw["stmt"])
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
        if not key.startswith("@") and key in _field_names(cls):
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
    tree = _rebuild(graph, root)
    # Calls written in SQL syntax (AT TIME ZONE, substring(x FROM y), trim(...))
    # must be printed that way again, or they re-parse as plain calls.
    special = any(n.attr("funcformat") == "COERCE_SQL_SYNTAX" for n in graph.nodes.values())
    try:
        return RawStream(special_functions=special)(ast.RawStmt({"@": "RawStmt", "stmt": tree}))
    except Exception as exc:  # the deparser raises many types
        raise EmissionError(f"cannot deparse: {exc}", DIALECT) from exc


def fingerprint(sql: str) -> str:
    return pglast.parser.fingerprint(sql)
