"""PostgreSQL parse-tree classes → AIR types and canonical kinds (a table per concern).

The canonical vocabulary is shared with the sqlglot side (`kinds_sg`): SELECT,
INSERT, ..., WHERE-level operators (EQ, GT, LIKE, IN ...), COLUMN, TABLE,
literal kinds, functions by name. A class without an entry keeps its name in
upper snake case, which the validator reports as not normalised.
"""

from __future__ import annotations

import re
from typing import Any

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
_CONST_FIELD = {"Integer": "ival", "Float": "fval", "String": "sval", "Boolean": "boolval",
                "BitString": "bsval"}  # fmt: skip


def upper_snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).upper()


def statement_kind(cls: str, d: dict[str, Any]) -> str:
    if cls == "SelectStmt":
        op = d.get("op", {}).get("name", "SETOP_NONE")
        return "SELECT" if op == "SETOP_NONE" else op.removeprefix("SETOP_")
    if cls == "GrantStmt" and not d.get("is_grant", False):
        return "REVOKE"
    if cls in STATEMENT_KINDS:
        return STATEMENT_KINDS[cls]
    for prefix, kind in (("Create", "CREATE"), ("Alter", "ALTER"), ("Drop", "DROP")):
        if cls.startswith(prefix):
            return kind
    return upper_snake(cls.removesuffix("Stmt"))


def const_value(d: dict[str, Any]) -> Any:
    """The Python value of an A_Const (None for NULL or a non-constant)."""
    if d.get("@") != "A_Const" or d.get("isnull"):
        return None
    val = d.get("val", {})
    raw = val.get(_CONST_FIELD.get(val.get("@", ""), ""))
    if val.get("@") == "Float":
        try:
            return float(raw)
        except (TypeError, ValueError):
            return raw
    return raw


def _names(fields: tuple[dict[str, Any], ...]) -> list[str]:
    return ["*" if f.get("@") == "A_Star" else str(f.get("sval", "")) for f in fields]


def classify(cls: str, d: dict[str, Any]) -> tuple[str, str, Any, str | None, list]:
    """(type, kind, value, alias, extra attrs) of one pglast node."""
    if cls.endswith("Stmt"):
        return "statement", statement_kind(cls, d), None, None, []
    if cls == "A_Const":
        if d.get("isnull"):
            return "literal", "NULL", None, None, []
        kind = _CONST_KINDS.get(d.get("val", {}).get("@", ""), "CONSTANT")
        return "literal", kind, const_value(d), None, []
    if cls == "A_Expr":
        return _expr(d)
    if cls == "BoolExpr":
        return "expr", d["boolop"]["name"].removesuffix("_EXPR"), None, None, []
    if cls == "NullTest":
        kind = "IS_NULL" if d["nulltesttype"]["name"] == "IS_NULL" else "IS_NOT_NULL"
        return "expr", kind, None, None, []
    if cls == "FuncCall":
        name = ".".join(_names(d.get("funcname", ())))
        return "function", name.rsplit(".", 1)[-1].upper(), name, None, []
    if cls == "ColumnRef":
        return "identifier", "COLUMN", ".".join(_names(d.get("fields", ()))), None, []
    if cls == "RangeVar":
        name = ".".join(p for p in (d.get("catalogname"), d.get("schemaname"), d.get("relname"))
                        if p)  # fmt: skip
        alias = d.get("alias", {}).get("aliasname")
        return "identifier", "TABLE", name, alias, []
    if cls == "ResTarget":
        return "expr", "TARGET", None, d.get("name"), []
    if cls == "ParamRef":
        return "expr", "PARAM", d.get("number"), None, []
    if cls == "String":
        return "identifier", "NAME", d.get("sval"), None, []
    if cls in _NODE_KINDS:
        type_, kind = _NODE_KINDS[cls]
        value = d.get(_CONST_FIELD.get(cls, "")) if type_ == "literal" else None
        return type_, kind, value, None, []
    return "expr", upper_snake(cls), None, None, []


def _expr(d: dict[str, Any]) -> tuple[str, str, Any, str | None, list]:
    kind_name = d["kind"]["name"]
    op = ".".join(_names(d.get("name", ())))
    negated = op.startswith("!")
    if kind_name in ("AEXPR_LIKE", "AEXPR_ILIKE"):
        extra = [("case_insensitive", kind_name == "AEXPR_ILIKE")]
        return "expr", "NOT_LIKE" if negated else "LIKE", None, None, extra
    if kind_name == "AEXPR_IN":
        return "expr", "NOT_IN" if op == "<>" else "IN", None, None, []
    if kind_name in _EXPR_KINDS:
        return "expr", _EXPR_KINDS[kind_name], None, None, []
    if op in _JSON_OPERATORS:
        scalar, path = _JSON_OPERATORS[op]
        return "expr", "JSON_EXTRACT", None, None, [("scalar", scalar), ("path", path)]
    return "expr", _OPERATORS.get(op, "OPERATOR"), None, None, [("operator", op)]


def references(tree: Any) -> tuple[list[str], list[str]]:
    """Relations and columns named anywhere in a parse tree (for OPAQUE nodes)."""
    relations: list[str] = []
    columns: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            cls = node.get("@")
            if cls == "RangeVar":
                name = classify(cls, node)[2]
                if name not in relations:
                    relations.append(name)
            elif cls == "ColumnRef":
                name = ".".join(_names(node.get("fields", ())))
                if name not in columns:
                    columns.append(name)
            for value in node.values():
                walk(value)
        elif isinstance(node, tuple | list):
            for value in node:
                walk(value)

    walk(tree)
    return relations, columns
