"""Masks and row filters, applied by rewriting the statement (PostgreSQL).

Every place a statement *reads* a masked or filtered table (FROM, JOIN,
USING, MERGE's source, subqueries, CTE bodies, UNION arms, PREPARE, DECLARE,
EXPLAIN, `COPY (SELECT ...)`) gets a derived table in its stead:

    FROM customers c   →   FROM (SELECT id, name, <mask>(email) AS email, phone
                                 FROM customers WHERE <filter>) c

so whatever the statement does with the rows (plain and qualified columns,
`*`, `t.*`, aliases, whole-row references like `row_to_json(c)` or `c::text`)
sees masked values only. `COPY t TO` becomes `COPY (SELECT ...) TO`; a masked
column in `RETURNING` (or `RETURNING *`) is masked in place; UPDATE and DELETE
get a filter's predicate in their WHERE.

Refused instead (the caller denies): a masked column in WHERE, JOIN, GROUP
BY, ORDER BY or a window (its values could be inferred) unless the rule says
`on_inference: allow`; a masked column an UPDATE, MERGE or ON CONFLICT copies;
a masked table in a position this module does not rewrite (TABLESAMPLE, a
whole-row RETURNING); a masked table whose columns the catalog does not list.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlx.agents.policy import (
    Catalog,
    TagMap,
    Who,
    effective_tags,
    session_rules,
    touched_columns,
)
from sqlx.air import pg
from sqlx.air.model import AIRGraph
from sqlx.air.tags import apply_tags, same_table
from sqlx.config.policy import Policy, Rule

_PLACEHOLDER = "__sqlx_masked_column__"
# Where a RangeVar is read (as opposed to written: INSERT/UPDATE/DELETE targets).
_READ_KEYS = frozenset(("fromClause", "larg", "rarg", "usingClause", "sourceRelation"))
# Clauses whose use of a masked column lets a client infer its values (pglast's names,
# then sqlglot's, for graphs lowered from MySQL).
_INFERENCE_ROLES = frozenset(("whereClause", "havingClause", "groupClause[]", "sortClause[]",
                              "quals", "partitionClause[]", "orderClause[]",
                              "distinctClause[]", "usingClause[]", "joinCondition",
                              "condition",
                              "where", "having", "group", "order", "on", "using[]",
                              "partition_by[]", "qualify"))  # fmt: skip
# Values a write stores: a masked column read there is copied in clear into the table.
_WRITERS = frozenset(("UpdateStmt", "OnConflictClause", "MergeWhenClause"))
_WRITTEN_ROLES = frozenset(("targetList[]", "values[]"))
# sqlglot's: `SET col = value` is an EQ whose `expression` is the value stored.
_SG_WRITERS = frozenset(("Update", "OnConflict"))


class Refused(Exception):
    """The statement cannot be rewritten safely; the message says why."""


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def mask_sql(rule: Rule, column: str, type_: tuple[str, bool] | None = None) -> str:
    """The SQL expression that stands for `column` under `rule`'s mask.

    With the column's type known (`(type, is_string)`), the mask keeps it, so a
    driver decodes what it expects: a string column gets its masked text cast
    back to its type; `redact` and `null` of any other type give NULL of that
    type. `hash` and `partial` of a non-string column are text."""
    col = _quote(column)
    kind = rule.mask_kind
    type_name, is_string = type_ or ("text", True)
    if kind == "null" or (kind == "redact" and not is_string):
        return f"NULL::{type_name}"
    if kind == "redact":
        text = f"CASE WHEN {col} IS NULL THEN NULL ELSE '****' END"
    elif kind == "hash":
        text = f"encode(sha256(convert_to({col}::text, 'UTF8')), 'hex')"
    elif kind == "partial":
        as_text = f"{col}::text"
        middle = f"repeat('*', length({as_text}) - 4)"
        text = (f"CASE WHEN {col} IS NULL THEN NULL WHEN length({as_text}) <= 4 THEN '****' "
                f"ELSE left({as_text}, 2) || {middle} || right({as_text}, 2) END")  # fmt: skip
    else:
        return kind.removeprefix("sql:").replace("{col}", col)
    return f"({text})::{type_name}" if is_string and type_name != "text" else text


MaskSql = Callable[[Rule, str, "tuple[str, bool] | None"], str]


@dataclass
class TablePolicy:
    """What reading one table takes: masked columns (with their rule) and row filters."""

    table: str  # schema.table, as the catalog names it
    columns: tuple[str, ...]
    masks: dict[str, Rule]
    filters: list[str]
    types: Mapping[str, tuple[str, bool]] = field(default_factory=dict)  # of masked columns
    render: MaskSql = mask_sql  # the server's dialect of mask expressions

    def mask(self, column: str, placeholder: str | None = None) -> str | None:
        """The mask expression of `column` (written on `placeholder` if given), if masked."""
        rule = self.masks.get(column)
        if rule is None:
            return None
        return self.render(rule, placeholder or column, self.types.get(column))


def table_policies(catalog: Catalog, rules: list[tuple[int, Rule]], tags: TagMap,
                   render: MaskSql = mask_sql) -> dict[str, TablePolicy]:  # fmt: skip
    """The tables and views `rules` (mask and filter rules that matched) touch: for each,
    its masked columns (`policy.touched_columns`) and row filters."""
    out: dict[str, TablePolicy] = {}
    for table, columns in catalog.columns.items():
        for index, rule in rules:
            touched = touched_columns(rule, index, table, columns, tags)
            if not touched:
                continue
            entry = out.setdefault(table, TablePolicy(table, columns, {}, [], {}, render))
            if rule.action == "mask":
                for column in touched:
                    entry.masks.setdefault(column, rule)
                    found = catalog.types.get(f"{table}.{column}")
                    if found is not None:
                        entry.types[column] = found
            elif rule.action == "filter" and rule.predicate not in entry.filters:
                entry.filters.append(rule.predicate or "false")
    return out


def policy_named(name: str, tables: dict[str, TablePolicy], catalog: Catalog,
                 ) -> TablePolicy | None:  # fmt: skip
    """The policy of the table a statement names `name` (lower case, CTEs ruled out), if
    policed; raises `Refused` when the name could stand for more than one table."""
    name = catalog.resolve(name)
    found = [tp for t, tp in tables.items() if same_table(t, name)]
    if found and "." not in name:
        # The search path is not known: the table the server reads could be another
        # schema's, and the rewrite would read the policed one in its place.
        others = [t for t in catalog.columns if same_table(t, name)]
        if len(others) > 1:
            raise Refused(f"{name} names tables in several schemas ({', '.join(others)}) "
                          "and the session's search_path is not known to the proxy; "
                          "qualify it with its schema")  # fmt: skip
    if len(found) > 1:
        raise Refused(f"{name} could name several policed tables; qualify it with its schema")
    return found[0] if found else None


def check_inference(graph: AIRGraph, catalog: Catalog, tables: dict[str, TablePolicy]) -> None:
    """Refuse a statement that filters, joins, groups or sorts on a masked column."""
    masked = {(t, c): rule for t, tp in tables.items() for c, rule in tp.masks.items()}
    if not masked:
        return
    tag_map = {f"{t}.{c}": {"@masked": f"{t}.{c}"} for t, c in masked}
    columns = {k: list(v) for k, v in catalog.columns.items()}
    tagged = apply_tags(graph, tag_map, columns, catalog.resolve)
    # (node, why a masked column under it would leak: "" if it would not)
    stack: list[tuple[str, str]] = [(tagged.root, "")]
    seen: set[tuple[str, str]] = set()
    while stack:
        nid, why = stack.pop()
        if (nid, why) in seen:
            continue
        seen.add((nid, why))
        node = tagged[nid]
        # A node over several columns carries each one's mark.
        for ref in (v for k, v in node.tags if k == "@masked") if why else ():
            table, _, column = ref.rpartition(".")
            if why == "copied" or masked[(table, column)].on_inference == "deny":
                raise Refused(f"masked column {ref} is {why}")
        writer = node.attr("@pg") in _WRITERS
        assigns = node.attr("@sg") in _SG_WRITERS
        for role, kid in zip(node.roles, node.children, strict=True):
            if writer and role in _WRITTEN_ROLES:
                stack.append((kid, "copied"))
            elif assigns and role == "expressions[]" and tagged[kid].attr("@sg") == "EQ":
                target = tagged[kid]
                for kid_role, value in zip(target.roles, target.children, strict=True):
                    stack.append((value, "copied" if kid_role == "expression" else why))
            elif role in _INFERENCE_ROLES and not why:
                stack.append((kid, "used to filter, join, group or sort"))
            else:
                stack.append((kid, why))


# --- rewriting the pglast tree ------------------------------------------------------


def _expr(sql: str, column: dict[str, Any] | None = None) -> dict[str, Any]:
    """A parsed SQL expression; the placeholder column becomes `column` if given."""
    (raw,) = pg.parse(f"SELECT {sql}")
    expr = raw["stmt"]["targetList"][0]["val"]
    return _replace_placeholder(expr, column) if column is not None else expr


def _map(node: Any, visit: Callable[[dict[str, Any]], Any]) -> Any:
    """`node` with each dict replaced by what `visit` returns for it (None: keep it and
    look inside)."""
    if isinstance(node, dict):
        found = visit(node)
        if found is not None:
            return found
        return {k: _map(v, visit) for k, v in node.items()}
    if isinstance(node, tuple | list):
        return tuple(_map(v, visit) for v in node)
    return node


def _replace_placeholder(node: Any, column: dict[str, Any]) -> Any:
    def visit(d: dict[str, Any]) -> Any:
        is_ref = d.get("@") == "ColumnRef"
        return column if is_ref and [f.get("sval") for f in d["fields"]] == [_PLACEHOLDER] else None

    return _map(node, visit)


def _derived_select(tp: TablePolicy, relation: dict[str, Any], only: list[str] | None) -> str:
    cols = []
    for column in only or tp.columns:
        masked = tp.mask(column)
        cols.append(f"{masked} AS {_quote(column)}" if masked else _quote(column))
    schema, _, table = tp.table.rpartition(".")
    source = f"{'' if relation.get('inh', True) else 'ONLY '}{_quote(schema)}.{_quote(table)}"
    where = " AND ".join(f"({p})" for p in tp.filters)
    return f"SELECT {', '.join(cols)} FROM {source}" + (f" WHERE {where}" if where else "")


class Rewriter:
    def __init__(self, tables: dict[str, TablePolicy], catalog: Catalog) -> None:
        self.tables = tables
        self.catalog = catalog
        self.scope: list[frozenset[str]] = []  # CTE names visible here, innermost last
        self.changed = False
        self.unqualify: set[tuple[str, str]] = set()

    def policy_of(self, relation: dict[str, Any]) -> TablePolicy | None:
        name = ".".join(p for p in (relation.get("schemaname"), relation["relname"]) if p).lower()
        if not relation.get("schemaname") and any(name in names for names in self.scope):
            return None  # a CTE of that name, visible here
        return policy_named(name, self.tables, self.catalog)

    def walk(self, node: Any, key: str = "") -> Any:
        if isinstance(node, tuple | list):
            return tuple(self.walk(v, key) for v in node)
        if not isinstance(node, dict):
            return node
        if node.get("withClause"):
            return self._with(node, key)
        cls = node.get("@")
        if cls == "RangeVar":
            tp = self.policy_of(node)
            if tp is None:
                return node
            if key not in _READ_KEYS:
                raise Refused(f"{tp.table} is read in a form the proxy cannot rewrite")
            return self._derived(node, tp)
        if cls in ("UpdateStmt", "DeleteStmt", "InsertStmt", "MergeStmt"):
            return self._write(node)
        if cls == "CopyStmt" and node.get("relation") and not node.get("is_from"):
            return self._copy(node)
        return {k: self.walk(v, k) for k, v in node.items()}

    def _with(self, stmt: dict[str, Any], key: str) -> dict[str, Any]:
        """A statement with CTEs: a CTE's name hides a table only where PostgreSQL says
        it is visible (not in its own body or earlier siblings', unless RECURSIVE)."""
        clause = stmt["withClause"]
        ctes = clause.get("ctes", ())
        names = [str(c.get("ctename", "")).lower() for c in ctes]
        bodies = []
        for i, cte in enumerate(ctes):
            self.scope.append(frozenset(names if clause.get("recursive") else names[:i]))
            try:
                bodies.append(self.walk(cte, "ctes"))
            finally:
                self.scope.pop()
        self.scope.append(frozenset(names))
        try:
            body = self.walk({k: v for k, v in stmt.items() if k != "withClause"}, key)
        finally:
            self.scope.pop()
        return {**body, "withClause": {**clause, "ctes": tuple(bodies)}}

    def _derived(self, relation: dict[str, Any], tp: TablePolicy) -> dict[str, Any]:
        self.changed = True
        (raw,) = pg.parse(_derived_select(tp, relation, None))
        alias = relation.get("alias") or {"@": "Alias", "aliasname": relation["relname"]}
        if not relation.get("alias") and relation.get("schemaname"):
            # `schema.table.column` no longer names anything once the table is a
            # derived table called `table`: such references lose their schema.
            self.unqualify.add((str(relation["schemaname"]), str(relation["relname"])))
        return {"@": "RangeSubselect", "lateral": False, "subquery": raw["stmt"], "alias": alias}

    def _write(self, stmt: dict[str, Any]) -> dict[str, Any]:
        target = stmt.get("relation")
        out = {k: (v if k == "relation" else self.walk(v, k)) for k, v in stmt.items()}
        tp = self.policy_of(target) if target else None
        if tp is None:
            return out
        if tp.filters and stmt["@"] in ("UpdateStmt", "DeleteStmt"):
            self.changed = True
            where = " AND ".join(f"({p})" for p in tp.filters)
            cond = _expr(where)
            old = out.get("whereClause")
            out["whereClause"] = cond if old is None else {
                "@": "BoolExpr", "boolop": "AND_EXPR", "args": (old, cond)}  # fmt: skip
        if tp.masks:  # a copy of a masked column into the table is refused by check_inference
            returning = out.get("returningClause") or {}
            if returning.get("exprs"):
                self.changed = True
                out["returningClause"] = {**returning, "exprs": self._returning(
                    returning["exprs"], tp)}  # fmt: skip
        return out

    def _returning(self, targets: tuple[dict[str, Any], ...], tp: TablePolicy) -> tuple:
        out = []
        for target in targets:
            val = target.get("val", {})
            star = val.get("@") == "ColumnRef" and val["fields"][-1].get("@") == "A_Star"
            if star:
                out.extend(self._masked_target(column, tp) for column in tp.columns)
                continue
            out.append(_mask_refs(target, tp))
        return tuple(out)

    def _masked_target(self, column: str, tp: TablePolicy) -> dict[str, Any]:
        ref = {"@": "ColumnRef", "fields": ({"@": "String", "sval": column},)}
        masked = tp.mask(column, _PLACEHOLDER)
        val = _expr(masked, ref) if masked else ref
        return {"@": "ResTarget", "name": column, "val": val}

    def _copy(self, stmt: dict[str, Any]) -> dict[str, Any]:
        relation = stmt["relation"]
        tp = self.policy_of(relation)
        if tp is None:
            return stmt
        self.changed = True
        only = [a["sval"].lower() for a in stmt.get("attlist", ())] or None
        (raw,) = pg.parse(_derived_select(tp, relation, only))
        out = {k: v for k, v in stmt.items() if k not in ("relation", "attlist")}
        out["query"] = raw["stmt"]
        return out


def _mask_refs(node: Any, tp: TablePolicy) -> Any:
    """A RETURNING item with each masked column of the target replaced by its mask."""

    def visit(d: dict[str, Any]) -> Any:
        cls = d.get("@")
        if cls == "ResTarget":
            val = d.get("val", {})
            name = d.get("name")
            if name is None and val.get("@") == "ColumnRef":
                name = val["fields"][-1].get("sval")
            return {**d, "val": _mask_refs(val, tp), **({"name": name} if name else {})}
        if cls == "A_Indirection":
            raise Refused(f"a field of a row of {tp.table} in RETURNING")
        if cls != "ColumnRef":
            return None
        names = [f.get("sval") for f in d.get("fields", ()) if f.get("@") == "String"]
        column = (names[-1] or "").lower() if names else ""
        if column in tp.masks:
            return _expr(tp.mask(column, _PLACEHOLDER) or _PLACEHOLDER, d)
        if len(names) == 1 and column not in tp.columns:
            # Not a column: the table's (or its alias's) whole row.
            raise Refused(f"a whole-row reference to {tp.table} in RETURNING")
        return d

    return _map(node, visit)


def _unqualify(node: Any, names: set[tuple[str, str]]) -> Any:
    """Column references `schema.table.x` to a table now derived: `table.x`."""

    def visit(d: dict[str, Any]) -> Any:
        fields = d.get("fields") if d.get("@") == "ColumnRef" else None
        if fields and len(fields) >= 3 and (fields[0].get("sval"), fields[1].get("sval")) in names:
            return {**d, "fields": tuple(fields[1:])}
        return None

    return _map(node, visit)


def rewrite(graphs: list[AIRGraph], policy: Policy, who: Who, catalog: Catalog,
            names: set[str]) -> str:  # fmt: skip
    """The statements of one string with the masks and filters of the rules `names` (those
    that matched) applied; raises `Refused`."""
    if not catalog.known:
        raise Refused("the proxy could not read the catalog to rewrite this statement")
    rules = session_rules(policy, who)
    applied = [(i, r) for i, r in rules if r.name in names and r.action in ("mask", "filter")]
    tables = table_policies(catalog, applied, effective_tags(graphs, policy, catalog, rules))
    texts = []
    for graph in graphs:
        check_inference(graph, catalog, tables)
        (raw,) = pg.parse(graph.source)
        rewriter = Rewriter(tables, catalog)
        tree = rewriter.walk(raw["stmt"])
        if rewriter.unqualify:
            tree = _unqualify(tree, rewriter.unqualify)
        texts.append(pg.deparse(tree) if rewriter.changed else graph.source)
    return ";\n".join(texts)
