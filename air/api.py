"""The public functions of AIR: lower, lower_all, emit, transpile, fingerprint, literals.

PostgreSQL goes through pglast; every other dialect through sqlglot. Emission
to the graph's own dialect rebuilds the origin parser's tree; emission to
another dialect goes through sqlglot, which raises rather than emit SQL that
means something else.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from sqlx.air import build, events, model, pg, pg_lower, sg
from sqlx.air.errors import EmissionError, LoweringError
from sqlx.air.model import AIRGraph, AIRNode

# Names accepted for the dialects; sqlglot's own names elsewhere.
ALIASES = {"postgresql": "postgres", "pg": "postgres", "mariadb": "mysql", "mssql": "tsql",
           "sqlserver": "tsql"}  # fmt: skip
EMIT_DIALECTS = ("postgres", "mysql", "sqlite", "tsql", "oracle", "snowflake", "duckdb",
                 "bigquery")  # fmt: skip


def _dialect(name: str) -> str:
    return ALIASES.get(name.lower(), name.lower())


def lower_all(sql: str, dialect: str = "postgres", trace_id: str | None = None) -> list[AIRGraph]:
    """One graph per statement of `sql`. Invalid SQL raises LoweringError."""
    dialect = _dialect(dialect)
    events.emit("air.parse.start", trace_id=trace_id, dialect=dialect)
    try:
        trees: list[Any] = pg.parse_json(sql) if dialect == "postgres" else sg.parse(sql, dialect)
    except LoweringError as exc:
        events.emit("air.parse.error", trace_id=trace_id, dialect=dialect, error=exc.message)
        raise
    events.emit("air.parse.ok", trace_id=trace_id, dialect=dialect, statements=len(trees))
    events.emit("air.normalize.start", trace_id=trace_id, dialect=dialect)
    if dialect == "postgres":
        graphs = [pg.lower_statement(raw, sql) for raw in trees]
    else:
        graphs = [sg.lower_statement(e, dialect) for e in trees]
    if trace_id is not None:
        graphs = [replace(g, trace_id=trace_id) for g in graphs]
    for graph in graphs:
        events.emit("air.normalize.ok", trace_id=trace_id, air_id=graph.root, kind=graph.kind)
    return graphs


def lower(sql: str, dialect: str = "postgres", trace_id: str | None = None) -> AIRGraph:
    """The graph of exactly one statement."""
    graphs = lower_all(sql, dialect, trace_id)
    if len(graphs) != 1:
        raise LoweringError(
            f"expected one statement, found {len(graphs)} (use lower_all)", None, _dialect(dialect)
        )
    return graphs[0]


def emit(graph: AIRGraph, dialect: str | None = None) -> str:
    """SQL for `graph` in `dialect` (default: the dialect it was lowered from)."""
    target = _dialect(dialect or graph.dialect)
    origin = graph.dialect
    if origin == "postgres":
        text = pg.emit(graph)
        return text if target == origin else sg.transpile(text, "postgres", target)
    root = graph.root_node
    if root.kind == "OPAQUE" and root.attr("@sg") is None:
        if target == origin:
            return str(root.value)
        raise EmissionError(f"an unmodelled {origin} statement cannot be translated", target)
    return sg.generate(sg.rebuild(graph, target), target)


def transpile(sql: str, read: str, write: str) -> list[str]:
    return [emit(g, write) for g in lower_all(sql, read)]


def fingerprint(graph: AIRGraph) -> str:
    """The query's shape, literals ignored. For PostgreSQL it is pglast's fingerprint."""
    cached = graph._cache.get("fingerprint")
    if cached is None:
        if graph.dialect == "postgres":
            cached = pg.fingerprint(emit(graph))
        else:
            cached = _shape_hash(graph, graph.root, {})
        graph._cache["fingerprint"] = cached
    return cached


def _shape_hash(graph: AIRGraph, node_id: str, memo: dict[str, str]) -> str:
    if node_id in memo:
        return memo[node_id]
    node = graph[node_id]
    if node.type == "literal":
        content = repr(("literal", node.dialect))
    else:
        kids = tuple(_shape_hash(graph, c, memo) for c in node.children)
        content = repr((node.type, node.kind, node.value, node.attrs, node.roles, kids))
    memo[node_id] = hashlib.blake2b(content.encode(), digest_size=8).hexdigest()
    return memo[node_id]


def summary_of(graphs: list[AIRGraph]) -> str:
    """`SELECT customers orders`: the statement kind and the tables it names, for
    span names, metrics and logs (never a literal). More statements add ` ...`."""
    if not graphs:
        return ""
    g = graphs[0]
    tables: list[str] = []
    for node in g.walk():
        if node.kind == "TABLE" and node.value and str(node.value) not in tables:
            tables.append(str(node.value))
    kind = str(g.root_node.attr("statement") or g.kind) if g.kind == "OPAQUE" else g.kind
    return " ".join([kind, *tables[:3]]) + (" ..." if len(graphs) > 1 else "")


def clear_memos() -> None:
    """Forget every memo lowering keeps (ids, fingerprints, round-trip verdicts, leaves), as in a
    process that has lowered nothing yet. Results never depend on them; timings do."""
    pg._VERIFIED.clear()
    pg._FINGERPRINTS.clear()
    build._IDS.clear()
    model._CONTENT_REPR.clear()
    pg_lower.clear_leaves()


def literals(graph: AIRGraph) -> list[Any]:
    """Literal values in source order (repeats included): the side vector of a shape."""
    return [n.value for n in _tree(graph, graph.root) if n.type == "literal" and n.kind != "VALUE"]


def _tree(graph: AIRGraph, node_id: str) -> Iterator[AIRNode]:
    node = graph[node_id]
    yield node
    if node.type == "literal":
        return
    for child in node.children:
        yield from _tree(graph, child)
