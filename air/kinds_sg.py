"""sqlglot expression classes → AIR types and canonical kinds.

Shares its vocabulary with `kinds_pg`. Attributes listed in DERIVED_ATTRS are
added for readers (spec §6 normalisation flags) and are not passed back to
sqlglot when a node is rebuilt.
"""

from __future__ import annotations

from typing import Any

from sqlglot import exp

from sqlx.air.kinds_pg import upper_snake

DERIVED_ATTRS = frozenset(("case_insensitive", "scalar", "path"))

_STATEMENTS: dict[type, str] = {
    exp.Select: "SELECT", exp.Union: "UNION", exp.Intersect: "INTERSECT",
    exp.Except: "EXCEPT", exp.Insert: "INSERT", exp.Update: "UPDATE", exp.Delete: "DELETE",
    exp.Merge: "MERGE", exp.Create: "CREATE", exp.Alter: "ALTER", exp.Drop: "DROP",
    exp.Transaction: "TRANSACTION", exp.Commit: "TRANSACTION", exp.Rollback: "TRANSACTION",
    exp.Set: "SET", exp.Use: "USE", exp.Describe: "DESCRIBE", exp.Show: "SHOW",
    exp.Grant: "GRANT", exp.TruncateTable: "TRUNCATE", exp.Copy: "COPY",
}  # fmt: skip
_KINDS: dict[type, tuple[str, str]] = {
    exp.Where: ("clause", "WHERE"), exp.Group: ("clause", "GROUP_BY"),
    exp.Having: ("clause", "HAVING"), exp.Order: ("clause", "ORDER"),
    exp.Ordered: ("clause", "ORDER_BY"), exp.Join: ("clause", "JOIN"),
    exp.From: ("clause", "FROM"), exp.With: ("clause", "WITH"), exp.CTE: ("clause", "CTE"),
    exp.Window: ("clause", "WINDOW"), exp.Limit: ("clause", "LIMIT_VALUE"),
    exp.Fetch: ("clause", "LIMIT_VALUE"), exp.Offset: ("clause", "OFFSET_VALUE"),
    exp.OnConflict: ("clause", "ON_CONFLICT"), exp.Returning: ("clause", "RETURNING"),
    exp.Column: ("identifier", "COLUMN"), exp.Table: ("identifier", "TABLE"),
    exp.Identifier: ("identifier", "NAME"), exp.Star: ("identifier", "STAR"),
    exp.TableAlias: ("identifier", "ALIAS"), exp.Alias: ("expr", "TARGET"),
    exp.Subquery: ("expr", "SUBQUERY"), exp.Cast: ("expr", "CAST"), exp.Case: ("expr", "CASE"),
    exp.If: ("expr", "WHEN"), exp.Placeholder: ("expr", "PARAM"),
    exp.Parameter: ("expr", "PARAM"), exp.Tuple: ("expr", "ROW"), exp.Paren: ("expr", "PAREN"),
    exp.EQ: ("expr", "EQ"), exp.NEQ: ("expr", "NEQ"), exp.GT: ("expr", "GT"),
    exp.GTE: ("expr", "GTE"), exp.LT: ("expr", "LT"), exp.LTE: ("expr", "LTE"),
    exp.Add: ("expr", "ADD"), exp.Sub: ("expr", "SUB"), exp.Mul: ("expr", "MUL"),
    exp.Div: ("expr", "DIV"), exp.Mod: ("expr", "MOD"), exp.DPipe: ("expr", "CONCAT"),
    exp.And: ("expr", "AND"), exp.Or: ("expr", "OR"), exp.Not: ("expr", "NOT"),
    exp.In: ("expr", "IN"), exp.Between: ("expr", "BETWEEN"), exp.Is: ("expr", "IS"),
    exp.Exists: ("expr", "EXISTS"), exp.Neg: ("expr", "NEG"), exp.Like: ("expr", "LIKE"),
    exp.ILike: ("expr", "LIKE"), exp.RegexpLike: ("expr", "REGEXP"),
}  # fmt: skip
_JSON: dict[type, tuple[bool, bool]] = {
    exp.JSONExtract: (False, False), exp.JSONExtractScalar: (True, False),
    exp.JSONBExtract: (False, True), exp.JSONBExtractScalar: (True, True),
}  # fmt: skip


def _lookup(table: dict[type, Any], e: exp.Expression) -> Any:
    for cls in type(e).__mro__:
        if cls in table:
            return table[cls]
    return None


def classify(e: exp.Expression) -> tuple[str, str, Any, str | None, list]:
    """(type, kind, value, alias, extra attrs) of one sqlglot expression."""
    statement = _STATEMENTS.get(type(e))
    if statement:
        return "statement", statement, None, None, []
    if isinstance(e, exp.Literal):
        if e.is_string:
            return "literal", "STRING", e.this, None, []
        text = e.this
        if text.isdigit():
            return "literal", "INTEGER", int(text), None, []
        return "literal", "FLOAT", text, None, []
    if isinstance(e, exp.Boolean):
        return "literal", "BOOLEAN", bool(e.this), None, []
    if isinstance(e, exp.Null):
        return "literal", "NULL", None, None, []
    json = _lookup(_JSON, e)
    if json is not None or isinstance(e, exp.JSONValue):
        scalar, path = json or (True, True)
        return "expr", "JSON_EXTRACT", None, None, [("scalar", scalar), ("path", path)]
    known = _KINDS.get(type(e))
    if known:
        type_, kind = known
        extra = [("case_insensitive", isinstance(e, exp.ILike))] if kind == "LIKE" else []
        return type_, kind, _value(e), _alias(e), extra
    if isinstance(e, exp.Anonymous):
        return "function", str(e.this).upper(), str(e.this), None, []
    if isinstance(e, exp.Func):
        return "function", e.sql_name().upper(), None, None, []
    return "expr", upper_snake(type(e).__name__), None, None, []


def _value(e: exp.Expression) -> Any:
    if isinstance(e, exp.Column | exp.Table):
        return ".".join(p.name for p in e.parts)
    if isinstance(e, exp.Identifier):
        return e.name
    if isinstance(e, exp.Placeholder | exp.Parameter):
        return e.name or "?"
    return None


def _alias(e: exp.Expression) -> str | None:
    if isinstance(e, exp.Alias | exp.Table):
        return e.alias or None
    return None
