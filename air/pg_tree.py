"""libpg_query's JSON parse tree, read with pglast's field layout, without pglast's AST.

pglast builds a Python object per parse-tree node, which costs ten times
more than the parse itself on a large statement. libpg_query hands the same
tree over as JSON, but the JSON omits defaults (false, 0, the first enum
member) and does not name the class of a field typed as one struct
(`RangeVar* relation`). `fields(cls)` gives, per class, how each of pglast's
fields is read from that JSON and what it defaults to, so the lowerer can
walk the JSON and produce exactly the attributes pglast's dict form would
have. `to_pglast` does the whole conversion (used where a whole pglast-form
tree is wanted: OPAQUE references, tests that compare trees).
"""

from __future__ import annotations

from typing import Any

import orjson
from pglast import ast, enums, parser

# How a field is read (FieldPlan.how).
NODE, LIST, STRUCT, ENUM, CONST, SCALAR, POSITION = range(7)
# Source positions: not part of a statement's meaning (PostgreSQL 17 added list bounds).
POSITION_FIELDS = frozenset(("location", "stmt_location", "stmt_len", "rexpr_list_start",
                             "rexpr_list_end", "list_start", "list_end"))  # fmt: skip
_NUMERIC = frozenset(("int", "int16", "int32", "long", "Index", "Oid", "AttrNumber", "uint32",
                      "SubTransactionId", "AclMode", "bits32", "RelFileNumber"))  # fmt: skip
# A_Const's value union: JSON key, the value node's class, its default.
CONST_VALUES = (("ival", "Integer", 0), ("fval", "Float", None), ("boolval", "Boolean", False),
                ("sval", "String", None), ("bsval", "BitString", None))  # fmt: skip

# (pglast field name, JSON key, how, detail): detail is the default of a
# SCALAR, the class of a STRUCT, the (type, default member) of an ENUM.
FieldPlan = tuple[str, str, int, Any]
_plans: dict[str, tuple[FieldPlan, ...]] = {}
_enum_values: dict[tuple[str, str], int] = {}


def is_position(name: str, value: Any) -> bool:
    """Whether a field of a pglast-form tree is a source position (ParseLoc)."""
    # CREATE TABLESPACE's `location` is its directory, a string.
    return (name in POSITION_FIELDS or name.endswith("_location")) and not isinstance(value, str)


def _field(name: str, c_type: str) -> FieldPlan:
    key = name.rstrip("_")  # pglast renames fields that are Python keywords (`def_`)
    if c_type in ("Node*", "Expr*"):
        return name, key, NODE, None
    if c_type == "List*":
        return name, key, LIST, None
    if c_type == "ValUnion":
        return name, key, CONST, None
    if c_type == "ParseLoc":
        return name, key, POSITION, None
    if c_type.endswith("*") and c_type != "char*":
        return name, key, STRUCT, c_type[:-1]
    if c_type == "bool":
        return name, key, SCALAR, False
    if c_type == "char":
        return name, key, SCALAR, "\x00"
    if c_type in _NUMERIC:
        return name, key, SCALAR, 0
    if c_type in ("Cost", "double"):
        return name, key, SCALAR, 0.0
    if hasattr(enums, c_type):
        return name, key, ENUM, (c_type, next(iter(getattr(enums, c_type))).name)
    if hasattr(ast, c_type):  # an embedded struct (CreateForeignTableStmt.base)
        return name, key, STRUCT, c_type
    return name, key, SCALAR, None


def fields(cls: str) -> tuple[FieldPlan, ...]:
    """How each of pglast's fields of `cls` is read from libpg_query's JSON, in pglast's order."""
    plan = _plans.get(cls)
    if plan is None:
        slots = getattr(ast, cls).__slots__
        plan = _plans[cls] = tuple(_field(n, info.c_type) for n, info in slots.items())
    return plan


def enum_value(type_name: str, name: str) -> int:
    key = (type_name, name)
    value = _enum_values.get(key)
    if value is None:
        value = _enum_values[key] = getattr(enums, type_name)[name].value
    return value


def const(body: dict[str, Any]) -> tuple[str, str, Any] | None:
    """(JSON key, class, value) of an A_Const body's value; None for NULL."""
    for key, cls, default in CONST_VALUES:
        if key in body:
            return key, cls, body[key].get(key, default)
    return None


def parse_json(sql: str) -> list[dict[str, Any]]:
    """The RawStmt bodies of `sql` as libpg_query's JSON; pglast's ParseError if invalid."""
    return orjson.loads(parser.parse_sql_json(sql)).get("stmts", [])


# --- the whole tree in pglast's dict form ------------------------------------------


def to_pglast(cls: str, body: dict[str, Any]) -> dict[str, Any]:
    """One JSON struct body as `pglast.ast.<cls>(...)(skip_none=True)` would give it."""
    out: dict[str, Any] = {"@": cls}
    for name, key, how, detail in fields(cls):
        raw = body.get(key)
        if how == SCALAR:
            value = detail if raw is None else raw
            if value is not None:
                out[name] = value
        elif how == CONST:
            found = None if body.get("isnull") else const(body)
            if found is not None:
                _key, vcls, value = found
                out[name] = {"@": vcls, _key: value} if value is not None else {"@": vcls}
        elif how == ENUM:
            member = detail[1] if raw is None else raw
            out[name] = {"#": detail[0], "name": member, "value": enum_value(detail[0], member)}
        elif how == POSITION:
            value = 0 if raw is None else raw
            if value >= 0:
                out[name] = value
        elif raw is None:
            continue
        elif how == NODE:
            out[name] = _wrapped(raw)
        elif how == LIST:
            out[name] = tuple(_wrapped(i) for i in raw)
        else:
            out[name] = to_pglast(detail, raw)
    return out


def _wrapped(node: dict[str, Any]) -> Any:
    if not node:  # a NULL member of a list
        return None
    ((cls, body),) = node.items()
    if cls == "List":
        return tuple(_wrapped(i) for i in body.get("items", ()))
    return to_pglast(cls, body)


def parse(sql: str) -> tuple[dict[str, Any], ...]:
    """The RawStmt dicts of `sql` in pglast's dict form."""
    return tuple(to_pglast("RawStmt", raw) for raw in parse_json(sql))
