"""MySQL, SQLite, T-SQL, Oracle, Snowflake ... ↔ AIR, through sqlglot.

Same shape as `air.pg`: every sqlglot expression becomes one AIR node whose
canonical kind comes from `kinds_sg`, with its own arguments kept as
attributes and role-named children so emission rebuilds the expression.
Statements sqlglot does not parse into a structure (its `Command`) become
OPAQUE nodes that keep their text.
"""

from __future__ import annotations

import enum
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.dialects.mysql import MySQL
from sqlglot.errors import ErrorLevel, ParseError, SqlglotError, TokenError, UnsupportedError

from sqlx.air import kinds_sg
from sqlx.air.build import GraphBuilder, add_members
from sqlx.air.errors import EmissionError, LoweringError
from sqlx.air.model import CAPS, AIRGraph, AIRNode

LIMIT_ROLE = "@limit"
# Enum-valued arguments, stored as ("@enum", class, member) and resolved back here.
_ENUMS: dict[str, type[enum.Enum]] = {
    cls.__qualname__: cls
    for cls in (exp.DataType.Type, *(v for v in vars(exp).values()
                                     if isinstance(v, type) and issubclass(v, enum.Enum)))
}  # fmt: skip


# Utility statements sqlglot does not parse; valid SQL must not be an error, so
# these are kept as OPAQUE text when sqlglot refuses them.
_UTILITY_VERBS = frozenset((
    "RELEASE", "DEALLOCATE", "LOCK", "UNLOCK", "KILL", "HANDLER", "FLUSH", "RESET", "PURGE",
    "INSTALL", "UNINSTALL", "XA", "DO", "CHECKSUM", "OPTIMIZE", "REPAIR", "CACHE", "SIGNAL",
    "RESIGNAL", "GET", "HELP",
))  # fmt: skip
# Savepoints have no sqlglot expression, and its versions differ on them (a bare
# `SAVEPOINT sp1` was once read as a SELECT of a column): they are taken before
# sqlglot and modelled as TRANSACTION statements, as PostgreSQL's are.
_SAVEPOINT_VERBS = frozenset(("SAVEPOINT", "RELEASE"))


class MySQLAnsiQuotes(MySQL):
    """MySQL as a session with sql_mode ANSI_QUOTES reads it: `"x"` names a column or
    table instead of being a string. (sqlglot registers it under its lower-case name.)"""

    class Tokenizer(MySQL.Tokenizer):
        QUOTES = ["'"]
        IDENTIFIERS = ["`", '"']


MYSQL_ANSI_QUOTES = "mysqlansiquotes"


def parse(sql: str, dialect: str) -> list[exp.Expression]:
    verb = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
    single = ";" not in sql.strip().rstrip(";")
    if verb in _SAVEPOINT_VERBS and single:
        return [_command(sql, verb)]
    try:
        return [e for e in sqlglot.parse(sql, read=dialect) if e is not None]
    except (ParseError, TokenError) as exc:
        if verb in _UTILITY_VERBS and single:
            return [_command(sql, verb)]
        errors = getattr(exc, "errors", None) or [{}]
        first = errors[0]
        message = first.get("description") or str(exc).splitlines()[0]
        position = None
        if first.get("line") is not None:
            position = _offset(sql, first["line"], first.get("col", 0))
        raise LoweringError(message, position, dialect) from exc


def _command(sql: str, verb: str) -> exp.Command:
    rest = sql.strip().rstrip(";").strip()[len(verb) :].strip()
    return exp.Command(this=verb, expression=exp.Literal.string(rest))


def _offset(sql: str, line: int, col: int) -> int:
    lines = sql.splitlines(keepends=True)
    return sum(len(x) for x in lines[: max(line - 1, 0)]) + max(col - 1, 0)


class _Lowerer:
    def __init__(self, builder: GraphBuilder) -> None:
        self.b = builder

    def node(self, e: exp.Expression) -> str:
        cls = type(e).__name__
        attrs: list[tuple[str, Any]] = [("@sg", cls)]
        children: list[str] = []
        roles: list[str] = []
        args = dict(e.args)
        rownum = _take_rownum(args) if isinstance(e, exp.Select) else None
        if rownum is not None:
            children.append(self._rownum(*rownum))
            roles.append(LIMIT_ROLE)
        elif isinstance(e, exp.Select) and (args.get("limit") or args.get("offset")):
            children.append(self._limit(args))
            roles.append(LIMIT_ROLE)
        for key, val in args.items():
            if val is None:
                continue
            if isinstance(val, exp.Expression):
                children.append(self.node(val))
                roles.append(key)
            elif isinstance(val, list):
                add_members(key, val, self.item, children, roles, attrs)
            elif isinstance(val, enum.Enum):
                attrs.append((key, ("@enum", type(val).__qualname__, val.name)))
            else:
                attrs.append((key, val if isinstance(val, str | int | float | bool) else str(val)))
        if e.comments:
            attrs.append(("@comments", tuple(e.comments)))
        type_, kind, value, alias, extra = kinds_sg.classify(e)
        return self.b.add(type_, kind, value=value, alias=alias, attrs=attrs + extra,
                          children=children, roles=roles)  # fmt: skip

    def item(self, item: Any) -> str:
        if isinstance(item, exp.Expression):
            return self.node(item)
        return self.b.add("literal", "VALUE", value=item if item is None or isinstance(
            item, str | int | float | bool) else str(item))  # fmt: skip

    def _rownum(self, predicate: exp.Expression, place: str, count: int) -> str:
        """Spec §6: Oracle's `ROWNUM <= n` filter is a LIMIT too; the predicate rides along."""
        child = self.node(predicate)
        return self.b.add("clause", "LIMIT", value=count, attrs=[("form", "ROWNUM"),
                          ("place", place)], children=[child], roles=["rownum"])  # fmt: skip

    def _limit(self, args: dict[str, Any]) -> str:
        """Spec §6: LIMIT, TOP, FETCH FIRST and OFFSET become one LIMIT clause."""
        children, roles = [], []
        limit, offset = args.pop("limit", None), args.pop("offset", None)
        value = None
        if limit is not None:
            children.append(self.node(limit))
            roles.append("limit")
            count = limit.args.get("expression") or limit.args.get("count")
            if isinstance(count, exp.Literal) and not count.is_string:
                value = int(count.this) if count.this.isdigit() else count.this
        if offset is not None:
            children.append(self.node(offset))
            roles.append("offset")
        form = type(limit).__name__.upper() if limit is not None else "OFFSET"
        return self.b.add("clause", "LIMIT", value=value, attrs=[("form", form)],
                          children=children, roles=roles)  # fmt: skip


def _rownum_count(p: exp.Expression) -> int | None:
    if (
        isinstance(p, exp.LTE | exp.LT)
        and isinstance(p.this, exp.Column)
        and p.this.name.upper() == "ROWNUM"
        and isinstance(p.expression, exp.Literal)
        and not p.expression.is_string
        and p.expression.this.isdigit()
    ):
        return int(p.expression.this) - (1 if isinstance(p, exp.LT) else 0)
    return None


def _take_rownum(args: dict[str, Any]) -> tuple[exp.Expression, str, int] | None:
    """Split a top-level `ROWNUM <= n` (alone or one side of an AND) out of WHERE."""
    where = args.get("where")
    if where is None:
        return None
    cond = where.this
    count = _rownum_count(cond)
    if count is not None:
        args["where"] = None
        return cond, "only", count
    if isinstance(cond, exp.And):
        for place, side, other in (("left", cond.this, cond.expression),
                                   ("right", cond.expression, cond.this)):  # fmt: skip
            count = _rownum_count(side)
            if count is not None:
                args["where"] = exp.Where(this=other)
                return side, place, count
    return None


def _put_rownum_back(args: dict[str, Any], limit: AIRNode, predicate: exp.Expression) -> None:
    place = limit.attr("place")
    rest = args.get("where")
    if place == "only" or rest is None:
        args["where"] = exp.Where(this=predicate)
    elif place == "left":
        args["where"] = exp.Where(this=exp.And(this=predicate, expression=rest.this))
    else:
        args["where"] = exp.Where(this=exp.And(this=rest.this, expression=predicate))


def lower_statement(e: exp.Expression, dialect: str) -> AIRGraph:
    builder = GraphBuilder(dialect)
    verb = str(e.this).upper() if isinstance(e, exp.Command) else ""
    if verb in _SAVEPOINT_VERBS:
        attrs = [("@sg", "Command"), ("this", verb), ("expression", e.text("expression"))]
        root = builder.add("statement", "TRANSACTION", attrs=attrs)
        return builder.build(root, source=e.sql(dialect=dialect))
    if isinstance(e, exp.Command):
        source = e.sql(dialect=dialect)
        root = builder.add("statement", "OPAQUE", value=source,
                           attrs=[("statement", str(e.this).upper())])  # fmt: skip
        return builder.build(root, source=source)
    root = _Lowerer(builder).node(e)
    return builder.build(root, source=e.sql(dialect=dialect))


# --- emission -----------------------------------------------------------------


def rebuild(graph: AIRGraph, target: str | None = None) -> exp.Expression:
    """The sqlglot expression of `graph`, in the forms `target` (default: origin) uses."""
    node = graph.root_node
    if node.kind == "OPAQUE" and node.attr("@sg") is None:
        raise EmissionError("an unmodelled statement has only its source text", graph.dialect)
    return _rebuild(graph, node, target or graph.dialect)


def _rebuild(graph: AIRGraph, node: AIRNode, target: str) -> Any:
    cls = node.attr("@sg")
    if cls is None:
        if node.kind == "VALUE":
            return node.value
        raise EmissionError(f"node {node.id} has no sqlglot form", graph.dialect)
    args: dict[str, Any] = {}
    rownum: tuple[AIRNode, exp.Expression] | None = None
    for key, value in node.attrs:
        if not key.startswith("@") and key not in kinds_sg.DERIVED_ATTRS:
            if isinstance(value, tuple) and value[:1] == ("@enum",):
                args[key] = _ENUMS[value[1]][value[2]]
            else:
                args[key] = list(value) if isinstance(value, tuple) else value
    for role, child in zip(node.roles, node.children, strict=True):
        child_node = graph[child]
        if role == LIMIT_ROLE and child_node.attr("form") == "ROWNUM":
            if target == "oracle":
                rownum = (child_node, _rebuild(graph, graph[child_node.children[0]], target))
            else:  # other dialects get their own LIMIT form from the count
                args["limit"] = exp.Limit(expression=exp.Literal.number(child_node.value))
        elif role == LIMIT_ROLE:
            for sub_role, sub in zip(child_node.roles, child_node.children, strict=True):
                args[sub_role] = _rebuild(graph, graph[sub], target)
        elif role.endswith("[]"):
            args.setdefault(role[:-2], []).append(_rebuild(graph, child_node, target))
        else:
            args[role] = _rebuild(graph, child_node, target)
    if rownum is not None:
        _put_rownum_back(args, *rownum)
    built = getattr(exp, cls)(**args)
    comments = node.attr("@comments")
    if comments:
        built.comments = list(comments)
    return built


def _lower_ilike(node: exp.Expression) -> exp.Expression:
    if isinstance(node, exp.ILike):
        return exp.Like(this=exp.Lower(this=node.this), expression=exp.Lower(this=node.expression))
    return node


# Dialects whose row limit can keep ties (FETCH FIRST ... WITH TIES).
_WITH_TIES = frozenset(("postgres", "oracle"))


def target_forms(expression: exp.Expression, dialect: str) -> exp.Expression:
    """Rewrite constructs the target lacks into its own forms (spec §6, in reverse).

    What has no form there is refused: sqlglot would otherwise write different
    SQL without saying so (a plain LIMIT for FETCH ... WITH TIES).
    """
    if dialect not in _WITH_TIES:
        for options in expression.find_all(exp.LimitOptions):
            if options.args.get("with_ties"):
                raise EmissionError("FETCH FIRST ... WITH TIES has no equivalent", dialect)
    caps = CAPS.get(dialect)
    if caps is not None and not caps.ilike:
        expression = expression.transform(_lower_ilike)
    return expression


def generate(expression: exp.Expression, dialect: str) -> str:
    try:
        expression = target_forms(expression, dialect)
        return expression.sql(dialect=dialect, unsupported_level=ErrorLevel.RAISE)
    except UnsupportedError as exc:
        raise EmissionError(f"cannot express: {exc}", dialect) from exc
    except SqlglotError as exc:
        raise EmissionError(str(exc), dialect) from exc


def transpile(sql: str, read: str, write: str) -> str:
    try:
        parsed = sqlglot.parse_one(sql, read=read)
    except (ParseError, TokenError) as exc:
        raise EmissionError(f"cannot read as {read}: {exc}", write) from exc
    if isinstance(parsed, exp.Command):
        raise EmissionError(f"{read} statement is not modelled and cannot be translated", write)
    return generate(parsed, write)
