"""Masks and row filters for MySQL and MariaDB, applied by rewriting the statement.

The same contract as `agents.mask` (PostgreSQL), on sqlglot's tree of the
statement as the server runs it (executable comments opened): every place a
statement *reads* a masked or filtered table (FROM and JOIN, in queries,
subqueries, CTE bodies, UNION arms, `INSERT ... SELECT`, `CREATE ... AS
SELECT`, MySQL's `TABLE t`) gets a derived table in its stead,

    FROM customers c   →   FROM (SELECT id, name, <mask> AS email FROM shop.customers
                                 WHERE <filter>) AS c

so whatever the statement does with the rows sees masked values only. The
tables an UPDATE or DELETE changes (every table of a multi-table one) get a
filter's predicate in their WHERE, qualified with the table's alias.

Refused instead (the caller denies): a masked column used to filter, join,
group or sort (unless the rule says `on_inference: allow`) or copied by SET
or ON DUPLICATE KEY UPDATE; ON DUPLICATE KEY UPDATE into a filtered table
(it could change a row the filter hides); RETURNING from a masked table; a
policed table in any other position (TRUNCATE, a partition list the derived
table cannot carry, ...); a table whose columns the catalog does not list.

Mask expressions in MySQL's dialect: `redact` keeps a string column's
values as `****` (NULL stays NULL) and makes any other column NULL; `hash`
is the hex SHA-256 of the value's UTF-8 text (as on PostgreSQL); `partial`
keeps two characters at each end; `null` is NULL; `sql:<expr>` is used as
written, with `{col}` for the column, and must be valid MySQL.
"""

from __future__ import annotations

import re

import sqlglot
from sqlglot import exp
from sqlglot.dialects.mysql import MySQL
from sqlglot.errors import SqlglotError
from sqlglot.tokens import TokenType

from sqlx.agents.mask import (
    Refused,
    TablePolicy,
    check_inference,
    policy_named,
    table_policies,
)
from sqlx.agents.policy import Catalog, Who, effective_tags, session_rules
from sqlx.air.model import AIRGraph
from sqlx.config.policy import Policy, Rule

DIALECT = "mysql"
# The table arguments a derived table can carry inside it; any other is refused.
_INNER_ARGS = frozenset(("hints", "partition"))
_KNOWN_ARGS = frozenset(("this", "db", "alias", *_INNER_ARGS))
# Positions that name a table without reading its rows.
_METADATA = (exp.Describe, exp.Show)
_CLOSE = re.compile(r"\s*\)")
_TABLE_STATEMENT = re.compile(r"\bTABLE\s*$", re.IGNORECASE)


def quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def mask_sql(rule: Rule, column: str, type_: tuple[str, bool] | None = None) -> str:
    """The MySQL expression that stands for `column` under `rule`'s mask."""
    col = quote(column)
    kind = rule.mask_kind
    is_string = type_[1] if type_ is not None else True
    if kind == "null" or (kind == "redact" and not is_string):
        return "NULL"
    as_text = col if is_string else f"CAST({col} AS CHAR)"
    if kind == "redact":
        return f"CASE WHEN {col} IS NULL THEN NULL ELSE '****' END"
    if kind == "hash":
        return f"SHA2(CONVERT({as_text} USING utf8mb4), 256)"
    if kind == "partial":
        length = f"CHAR_LENGTH({as_text})"
        return (f"CASE WHEN {col} IS NULL THEN NULL WHEN {length} <= 4 THEN '****' "
                f"ELSE CONCAT(LEFT({as_text}, 2), REPEAT('*', {length} - 4), "
                f"RIGHT({as_text}, 2)) END")  # fmt: skip
    return kind.removeprefix("sql:").replace("{col}", col)


def _parse(sql: str) -> exp.Expression:
    try:
        return sqlglot.parse_one(sql, read=DIALECT)
    except SqlglotError as exc:
        raise Refused(f"the rewritten statement is not valid: {exc}") from exc


def _derived_select(tp: TablePolicy, catalog: Catalog, table: exp.Table,
                    written: dict[str, str]) -> exp.Select:  # fmt: skip
    """`SELECT <columns, masked> FROM <the table, as written> WHERE <filters>`.

    A column of a derived table is named as the derived table spells it, where the
    table's own would be named as the statement spells it: so it is spelled as the
    statement does (`written`), or else as the table does."""
    cols = []
    for column in tp.columns:
        spelled = written.get(column) or catalog.spelled.get(f"{tp.table}.{column}", column)
        masked = tp.mask(column, spelled)
        cols.append(f"{masked} AS {quote(spelled)}" if masked else quote(spelled))
    where = " AND ".join(f"({p})" for p in tp.filters)
    select = _parse(f"SELECT {', '.join(cols)} FROM t" + (f" WHERE {where}" if where else ""))
    schema, _, name = tp.table.rpartition(".")
    spelled = catalog.spelled
    inner = exp.Table(this=exp.to_identifier(spelled.get(tp.table, name), quoted=True),
                      db=exp.to_identifier(spelled.get(schema, schema), quoted=True))  # fmt: skip
    for arg in _INNER_ARGS:
        if table.args.get(arg):
            inner.set(arg, table.args[arg].copy() if isinstance(table.args[arg], exp.Expression)
                      else [a.copy() for a in table.args[arg]])  # fmt: skip
    select.args["from_" if "from_" in select.args else "from"].set("this", inner)
    return select


def _with_of(node: exp.Expression) -> exp.With | None:
    found = node.args.get("with_") or node.args.get("with")
    return found if isinstance(found, exp.With) else None


def _is_cte(table: exp.Table) -> bool:
    """Whether an unqualified table name is a CTE visible where it is written (not in its
    own body or an earlier sibling's, unless RECURSIVE)."""
    if table.args.get("db"):
        return False
    name = table.name.lower()
    prev, node = table, table.parent
    while node is not None:
        if isinstance(node, exp.With):
            names = [c.alias_or_name.lower() for c in node.expressions]
            at = next((i for i, c in enumerate(node.expressions) if c is prev), len(names))
            if name in (names if node.args.get("recursive") else names[:at]):
                return True
        else:
            clause = _with_of(node)
            if clause is not None and clause is not prev and name in (
                    c.alias_or_name.lower() for c in clause.expressions):  # fmt: skip
                return True
        prev, node = node, node.parent
    return False


class Rewriter:
    """Finds what to change in one statement's tree: the policed tables it reads (each
    with the derived table for it), and the WHERE of the writes it filters (changed in
    the tree)."""

    def __init__(self, tables: dict[str, TablePolicy], catalog: Catalog) -> None:
        self.tables = tables
        self.catalog = catalog
        self.derived: list[tuple[exp.Table, exp.Subquery]] = []
        self.unqualified: list[exp.Column] = []  # `db.t.col` of a table now derived
        self.wrote = False  # a write's WHERE was changed in the tree

    @property
    def changed(self) -> bool:
        return bool(self.derived or self.wrote)

    def policy_of(self, table: exp.Table) -> TablePolicy | None:
        if _is_cte(table):
            return None
        name = ".".join(p for p in (table.text("db"), table.name) if p).lower()
        return policy_named(name, self.tables, self.catalog)

    def run(self, tree: exp.Expression) -> None:
        targets = self._targets(tree)
        unqualify: set[tuple[str, str]] = set()
        written: dict[str, str] = {}
        for column in tree.find_all(exp.Column):
            written.setdefault(column.name.lower(), column.name)
        for table in list(tree.find_all(exp.Table)):
            if id(table) in targets or table.find_ancestor(*_METADATA) is not None:
                continue
            tp = self.policy_of(table)
            if tp is None:
                continue
            extra = any(table.args.get(k) for k in table.args.keys() - _KNOWN_ARGS)
            if extra or not isinstance(table.parent, exp.From | exp.Join):
                raise Refused(f"{tp.table} is read in a form the proxy cannot rewrite")
            alias = table.alias or table.name
            if not table.alias and table.args.get("db"):
                # `db.t.col` names nothing once `t` is a derived table: such columns lose `db`.
                unqualify.add((table.text("db").lower(), table.name.lower()))
            select = _derived_select(tp, self.catalog, table, written)
            named = exp.TableAlias(this=exp.to_identifier(alias, quoted=True))
            derived = exp.Subquery(this=select, alias=named)
            self.derived.append((table, derived))
        self.unqualified = [c for c in tree.find_all(exp.Column) if c.args.get("db") and (
            c.text("db").lower(), c.text("table").lower()) in unqualify]  # fmt: skip

    def regenerated(self, tree: exp.Expression) -> str:
        """The whole statement written again from its changed tree."""
        for table, derived in self.derived:
            table.replace(derived)
        for column in self.unqualified:
            column.set("db", None)
        return tree.sql(dialect=DIALECT)

    def spliced(self, source: str) -> str | None:
        """The statement's own text with only the policed tables (and `db.t.col`
        references to them) replaced: result column names, which MySQL takes from an
        expression's text, stay as the client wrote them. None if a position is unknown."""
        edits: list[tuple[int, int, str]] = []
        for table, derived in self.derived:
            span = _span(source, table)
            if span is None or _TABLE_STATEMENT.search(source, 0, span[0]):
                return None  # unknown, or MySQL's `TABLE t`: written again whole
            edits.append((*span, derived.sql(dialect=DIALECT)))
        for column in self.unqualified:
            db, name = column.args["db"].meta, column.args["table"].meta
            if "start" not in db or "start" not in name:
                return None
            edits.append((db["start"], name["start"], ""))
        out = source
        for start, end, text in sorted(edits, reverse=True):
            out = out[:start] + text + out[end:]
        return out

    def _targets(self, tree: exp.Expression) -> set[int]:
        """The tables UPDATE, DELETE and INSERT statements write (their ids), with each
        write's filters and RETURNING seen to."""
        out: set[int] = set()
        for stmt in tree.find_all(exp.Update, exp.Delete, exp.Insert):
            head = stmt.this.this if isinstance(stmt.this, exp.Schema) else stmt.this
            tables = [head] if isinstance(head, exp.Table) else []
            if isinstance(head, exp.Table):
                tables += [j.this for j in head.args.get("joins") or () if
                           isinstance(j.this, exp.Table)]  # fmt: skip
            using = stmt.args.get("using")
            if isinstance(using, list):
                tables += [t for t in using if isinstance(t, exp.Table)]
            if isinstance(stmt, exp.Delete):
                # `DELETE c FROM customers c ...`: `c` names a table of the FROM list.
                out.update(id(t) for t in stmt.args.get("tables") or ())
            for table in tables:
                out.add(id(table))
                tp = self.policy_of(table)
                if tp is not None:
                    self._write(stmt, table, tp)
        return out

    def _write(self, stmt: exp.Expression, table: exp.Table, tp: TablePolicy) -> None:
        if tp.masks and stmt.args.get("returning"):
            raise Refused(f"RETURNING from {tp.table}, which has masked columns")
        if not tp.filters:
            return
        if isinstance(stmt, exp.Insert):
            if stmt.args.get("conflict") is not None:
                raise Refused(f"ON DUPLICATE KEY UPDATE could change rows of {tp.table} "
                              "its filter hides")  # fmt: skip
            return
        self.wrote = True
        qualifier = table.alias or table.name
        for predicate in tp.filters:
            cond = _parse(f"SELECT 1 FROM t WHERE ({predicate})").args["where"].this
            for column in cond.find_all(exp.Column):
                if not column.table:
                    column.set("table", exp.to_identifier(qualifier, quoted=True))
            stmt.where(cond, copy=False)  # type: ignore[attr-defined]


def rewrite(graphs: list[AIRGraph], policy: Policy, who: Who, catalog: Catalog,
            names: set[str], text: str) -> str:  # fmt: skip
    """The statements of `text` (lowered as `graphs`) with the masks and filters of the
    rules `names` (those that matched) applied, in MySQL's dialect; raises `Refused`."""
    if not catalog.known:
        raise Refused("the proxy could not read the catalog to rewrite this statement")
    rules = session_rules(policy, who)
    applied = [(i, r) for i, r in rules if r.name in names and r.action in ("mask", "filter")]
    tags = effective_tags(graphs, policy, catalog, rules)
    tables = table_policies(catalog, applied, tags, mask_sql)
    sources = _statements(text)
    if len(sources) != len(graphs):
        sources = [g.source for g in graphs]  # sqlglot's own text of each
    out = []
    for graph, source in zip(graphs, sources, strict=True):
        check_inference(graph, catalog, tables)
        tree = _parse(source)
        rewriter = Rewriter(tables, catalog)
        rewriter.run(tree)
        if rewriter.changed:
            spliced = None if rewriter.wrote else rewriter.spliced(source)
            written = spliced if spliced is not None else rewriter.regenerated(tree)
            if _placeholders(written) != _placeholders(source):
                raise Refused("the rewrite would move the statement's parameters")
            source = written
        out.append(source)
    return ";\n".join(out)


def _placeholders(sql: str) -> int:
    try:
        tokens = MySQL().tokenize(sql)
    except SqlglotError as exc:
        raise Refused(f"the rewritten statement is not valid: {exc}") from exc
    return sum(1 for t in tokens if t.token_type is TokenType.PLACEHOLDER)


def _statements(text: str) -> list[str]:
    """`text` cut at the semicolons between its statements, as sqlglot cuts it."""
    try:
        tokens = MySQL().tokenize(text)
    except SqlglotError:
        return []
    out, start, seen = [], 0, False
    for token in tokens:
        if token.token_type is TokenType.SEMICOLON:
            if seen:
                out.append(text[start : token.start])
            start, seen = token.end + 1, False
        else:
            seen = True
    if seen:
        out.append(text[start:])
    return out


def _span(source: str, table: exp.Table) -> tuple[int, int] | None:
    """Where a table reference is written: from its name to its alias or last hint."""
    names = [i for i in (table.args.get("db"), table.args.get("this")) if i is not None]
    if not names or any("start" not in i.meta for i in names):
        return None
    start = min(i.meta["start"] for i in names)
    idents = [i for i in table.find_all(exp.Identifier) if "end" in i.meta]
    last = max(idents, key=lambda i: i.meta["end"])
    end = last.meta["end"] + 1
    if last.find_ancestor(exp.IndexTableHint, exp.Partition) is not None:
        # The last name is inside `USE INDEX (...)` or `PARTITION (...)`: up to its `)`.
        close = _CLOSE.match(source, end)
        if close is None:
            return None
        end = close.end()
    return start, end
