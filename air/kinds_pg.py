"""PostgreSQL parse-tree classes → AIR types and canonical kinds (a table per concern).

The canonical vocabulary is shared with the sqlglot side (`kinds_sg`): SELECT,
INSERT, ..., WHERE-level operators (EQ, GT, LIKE, IN ...), COLUMN, TABLE,
literal kinds, functions by name. A class without an entry keeps its name in
upper snake case, which the validator reports as not normalised.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from sqlx.air.pg_tree import CONST_VALUES, const

STATEMENT_KINDS = {
    "SelectStmt": "SELECT", "InsertStmt": "INSERT", "UpdateStmt": "UPDATE",
    "DeleteStmt": "DELETE", "MergeStmt": "MERGE", "TransactionStmt": "TRANSACTION",
    "CopyStmt": "COPY", "VariableSetStmt": "SET", "VariableShowStmt": "SHOW",
    "ExplainStmt": "EXPLAIN", "GrantStmt": "GRANT", "GrantRoleStmt": "GRANT",
    "DoStmt": "DO", "CallStmt": "CALL", "PrepareStmt": "PREPARE", "ExecuteStmt": "EXECUTE",
    "DeallocateStmt": "DEALLOCATE", "DeclareCursorStmt": "DECLARE", "FetchStmt": "FETCH",
    "ClosePortalStmt": "CLOSE", "ListenStmt": "LISTEN", "UnlistenStmt": "UNLISTEN",
    "NotifyStmt": "NOTIFY", "TruncateStmt": "TRUNCATE", "VacuumStmt": "VACUUM",
    "LockStmt": "LOCK", "CommentStmt": "COMMENT", "RenameStmt": "ALTER",
    "IndexStmt": "CREATE", "ViewStmt": "CREATE", "RuleStmt": "CREATE", "DefineStmt": "CREATE",
    "CompositeTypeStmt": "CREATE", "DropStmt": "DROP", "DiscardStmt": "DISCARD",
    "CheckPointStmt": "CHECKPOINT", "ReindexStmt": "REINDEX", "ClusterStmt": "CLUSTER",
    "LoadStmt": "LOAD", "SecLabelStmt": "SECURITY_LABEL", "ReassignOwnedStmt": "REASSIGN",
}  # fmt: skip

_OPERATORS = {
    "=": "EQ", "<>": "NEQ", "!=": "NEQ", "<": "LT", ">": "GT", "<=": "LTE", ">=": "GTE",
    "+": "ADD", "-": "SUB", "*": "MUL", "/": "DIV", "%": "MOD", "^": "POW", "||": "CONCAT",
    "~": "REGEXP", "~*": "REGEXP", "!~": "NOT_REGEXP", "!~*": "NOT_REGEXP",
    "@>": "CONTAINS", "<@": "CONTAINED_BY", "&&": "OVERLAPS", "?": "JSON_HAS_KEY",
    "?|": "JSON_HAS_ANY_KEY", "?&": "JSON_HAS_ALL_KEYS",
}  # fmt: skip
# Spec §6: every JSON access form is one JSON_EXTRACT; attrs keep which form.
_JSON_OPERATORS = {"->": (False, False), "->>": (True, False), "#>": (False, True),
                   "#>>": (True, True)}  # fmt: skip
_EXPR_KINDS = {
    "AEXPR_LIKE": "LIKE", "AEXPR_ILIKE": "LIKE", "AEXPR_SIMILAR": "SIMILAR",
    "AEXPR_BETWEEN": "BETWEEN", "AEXPR_NOT_BETWEEN": "NOT_BETWEEN",
    "AEXPR_BETWEEN_SYM": "BETWEEN", "AEXPR_NOT_BETWEEN_SYM": "NOT_BETWEEN",
    "AEXPR_DISTINCT": "IS_DISTINCT_FROM", "AEXPR_NOT_DISTINCT": "IS_NOT_DISTINCT_FROM",
    "AEXPR_NULLIF": "NULLIF", "AEXPR_OP_ANY": "ANY", "AEXPR_OP_ALL": "ALL",
}  # fmt: skip
_NODE_KINDS = {
    "ColumnRef": ("identifier", "COLUMN"), "RangeVar": ("identifier", "TABLE"),
    "ResTarget": ("expr", "TARGET"), "JoinExpr": ("clause", "JOIN"),
    "WithClause": ("clause", "WITH"), "CommonTableExpr": ("clause", "CTE"),
    "SortBy": ("clause", "ORDER_BY"), "WindowDef": ("clause", "WINDOW"),
    "OnConflictClause": ("clause", "ON_CONFLICT"), "RangeSubselect": ("expr", "SUBQUERY"),
    "SubLink": ("expr", "SUBQUERY"), "TypeCast": ("expr", "CAST"), "CaseExpr": ("expr", "CASE"),
    "CaseWhen": ("expr", "WHEN"), "CoalesceExpr": ("function", "COALESCE"),
    "MinMaxExpr": ("function", "GREATEST"), "A_ArrayExpr": ("expr", "ARRAY"),
    "RowExpr": ("expr", "ROW"), "A_Indirection": ("expr", "SUBSCRIPT"),
    "A_Star": ("identifier", "STAR"), "ParamRef": ("expr", "PARAM"),
    "Alias": ("identifier", "ALIAS"), "String": ("identifier", "NAME"),
    "TypeName": ("identifier", "TYPE"), "RangeFunction": ("expr", "TABLE_FUNCTION"),
    "GroupingSet": ("clause", "GROUPING_SET"), "LockingClause": ("clause", "LOCKING"),
    "IntoClause": ("clause", "INTO"), "SetToDefault": ("expr", "DEFAULT"),
    "CollateClause": ("expr", "COLLATE"), "BooleanTest": ("expr", "IS_BOOLEAN"),
    "SQLValueFunction": ("function", "SQL_VALUE_FUNCTION"), "DefElem": ("expr", "OPTION"),
    "ColumnDef": ("clause", "COLUMN_DEF"), "Constraint": ("clause", "CONSTRAINT"),
    "RoleSpec": ("identifier", "ROLE"), "MultiAssignRef": ("expr", "MULTI_ASSIGN"),
    "Integer": ("literal", "INTEGER"), "Float": ("literal", "FLOAT"),
    "Boolean": ("literal", "BOOLEAN"), "BitString": ("literal", "BITSTRING"),
}  # fmt: skip
_CONST_KINDS = {"Integer": "INTEGER", "Float": "FLOAT", "String": "STRING",
                "Boolean": "BOOLEAN", "BitString": "BITSTRING"}  # fmt: skip
# A literal node's field and its default (libpg_query's JSON omits 0 and false).
_CONST_FIELD = {cls: (key, default) for key, cls, default in CONST_VALUES}


def upper_snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).upper()


def statement_kind(cls: str, body: dict[str, Any]) -> str:
    """The canonical kind of a statement, from its libpg_query JSON body."""
    if cls == "SelectStmt":
        op = body.get("op", "SETOP_NONE")
        return "SELECT" if op == "SETOP_NONE" else op.removeprefix("SETOP_")
    if cls == "GrantStmt" and not body.get("is_grant", False):
        return "REVOKE"
    if cls in STATEMENT_KINDS:
        return STATEMENT_KINDS[cls]
    for prefix, kind in (("Create", "CREATE"), ("Alter", "ALTER"), ("Drop", "DROP")):
        if cls.startswith(prefix):
            return kind
    return upper_snake(cls.removesuffix("Stmt"))


def _const(body: dict[str, Any]) -> tuple[str, Any]:
    """(kind, Python value) of an A_Const body."""
    found = None if body.get("isnull") else const(body)
    if found is None:
        return ("NULL" if body.get("isnull") else "CONSTANT"), None
    _key, cls, raw = found
    if cls == "Float":
        try:
            return "FLOAT", float(raw)
        except (TypeError, ValueError):
            return "FLOAT", raw
    return _CONST_KINDS[cls], raw


def const_value(node: dict[str, Any]) -> Any:
    """The Python value of a JSON-wrapped A_Const (None for NULL or a non-constant)."""
    body = node.get("A_Const")
    return None if body is None else _const(body)[1]


def _names(items: list[dict[str, Any]]) -> list[str]:
    out = []
    for item in items:
        ((cls, body),) = item.items()
        out.append("*" if cls == "A_Star" else str(body.get("sval", "")))
    return out


Classified = tuple[str, str, Any, "str | None", "tuple[tuple[str, Any], ...]"]
Classifier = Callable[[dict[str, Any]], Classified]
_NOTHING: tuple[tuple[str, Any], ...] = ()


def _a_const(body: dict[str, Any]) -> Classified:
    kind, value = _const(body)
    return "literal", kind, value, None, _NOTHING


def _bool_expr(body: dict[str, Any]) -> Classified:
    return "expr", body.get("boolop", "AND_EXPR").removesuffix("_EXPR"), None, None, _NOTHING


def _null_test(body: dict[str, Any]) -> Classified:
    kind = "IS_NULL" if body.get("nulltesttype", "IS_NULL") == "IS_NULL" else "IS_NOT_NULL"
    return "expr", kind, None, None, _NOTHING


def _func_call(body: dict[str, Any]) -> Classified:
    name = ".".join(_names(body.get("funcname", ())))
    return "function", name.rsplit(".", 1)[-1].upper(), name, None, _NOTHING


def _column_ref(body: dict[str, Any]) -> Classified:
    return "identifier", "COLUMN", ".".join(_names(body.get("fields", ()))), None, _NOTHING


def _range_var(body: dict[str, Any]) -> Classified:
    alias = body.get("alias", {}).get("aliasname")
    return "identifier", "TABLE", _relation(body), alias, _NOTHING


_CLASSIFIERS: dict[str, Classifier] = {
    "A_Const": _a_const, "BoolExpr": _bool_expr, "NullTest": _null_test, "FuncCall": _func_call,
    "ColumnRef": _column_ref, "RangeVar": _range_var,
}  # fmt: skip
# Classes whose type and kind are fixed and whose value and alias are plain fields:
# (type, kind, value field, its default, alias field).
Static = tuple[str, str, "str | None", Any, "str | None"]
_STATIC: dict[str, Static] = {
    "ResTarget": ("expr", "TARGET", None, None, "name"),
    "ParamRef": ("expr", "PARAM", "number", 0, None),
    "String": ("identifier", "NAME", "sval", None, None),
}  # fmt: skip


def static(cls: str) -> Static | None:
    """How a `cls` node is classified when no code is needed (see `_STATIC`), else None."""
    if cls in _STATIC:
        return _STATIC[cls]
    if cls in _CLASSIFIERS or cls.endswith("Stmt") or cls == "A_Expr":
        return None
    type_, kind = _NODE_KINDS.get(cls, ("expr", upper_snake(cls)))
    if type_ == "literal":
        key, default = _CONST_FIELD[cls]
        return type_, kind, key, default, None
    return type_, kind, None, None, None


def classifier(cls: str) -> Classifier:
    """The function giving (type, kind, value, alias, extra attrs) of a `cls` node's JSON body."""
    found = _CLASSIFIERS.get(cls)
    if found is not None:
        return found
    fixed = static(cls)
    if fixed is not None:
        type_, kind, value_key, default, alias_key = fixed

        def found(body: dict[str, Any]) -> Classified:
            value = body.get(value_key, default) if value_key else None
            return type_, kind, value, body.get(alias_key) if alias_key else None, _NOTHING
    elif cls.endswith("Stmt"):
        found = lambda body: ("statement", statement_kind(cls, body), None, None, _NOTHING)  # noqa: E731
    else:
        found = _expr
    _CLASSIFIERS[cls] = found
    return found


def classify(cls: str, body: dict[str, Any]) -> Classified:
    """(type, kind, value, alias, extra attrs) of one node, from its libpg_query JSON body."""
    return classifier(cls)(body)


def _relation(d: dict[str, Any]) -> str:
    return ".".join(p for p in (d.get("catalogname"), d.get("schemaname"), d.get("relname")) if p)


def _expr(body: dict[str, Any]) -> Classified:
    kind_name = body.get("kind", "AEXPR_OP")
    op = ".".join(_names(body.get("name", ())))
    negated = op.startswith("!")
    if kind_name in ("AEXPR_LIKE", "AEXPR_ILIKE"):
        extra = (("case_insensitive", kind_name == "AEXPR_ILIKE"),)
        return "expr", "NOT_LIKE" if negated else "LIKE", None, None, extra
    if kind_name == "AEXPR_IN":
        return "expr", "NOT_IN" if op == "<>" else "IN", None, None, _NOTHING
    if kind_name in _EXPR_KINDS:
        return "expr", _EXPR_KINDS[kind_name], None, None, _NOTHING
    if op in _JSON_OPERATORS:
        scalar, path = _JSON_OPERATORS[op]
        return "expr", "JSON_EXTRACT", None, None, (("scalar", scalar), ("path", path))
    return "expr", _OPERATORS.get(op, "OPERATOR"), None, None, (("operator", op),)


def references(tree: Any) -> tuple[list[str], list[str]]:
    """Relations and columns named anywhere in a pglast-form tree (for OPAQUE nodes)."""
    relations: list[str] = []
    columns: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            cls = node.get("@")
            if cls == "RangeVar":
                name = _relation(node)
                if name not in relations:
                    relations.append(name)
            elif cls == "ColumnRef":
                parts = node.get("fields", ())
                name = ".".join("*" if f.get("@") == "A_Star" else str(f.get("sval", ""))
                                for f in parts)  # fmt: skip
                if name not in columns:
                    columns.append(name)
            for value in node.values():
                walk(value)
        elif isinstance(node, tuple | list):
            for value in node:
                walk(value)

    walk(tree)
    return relations, columns
