"""Policy tags on AIR (spec §11): table and column nodes carry the caller's tags.

`apply_tags(graph, tags, columns)` takes tags keyed `table`, `schema.table`,
`table.column` or `schema.table.column` and returns a new graph whose TABLE,
COLUMN and STAR nodes carry them. Columns are resolved through aliases, CTEs
and derived tables (subqueries in FROM); `*` and `t.*` expand when `columns`
names each table's columns. A column node gets its table's tags under its
own (column tags win). Identical column nodes in different scopes can resolve
to different tables, so the graph is rebuilt per occurrence.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from sqlx.air.build import GraphBuilder
from sqlx.air.model import AIRGraph, AIRNode, node_id

TagMap = Mapping[str, Mapping[str, str]]
# The tag a column reference gets when, with table columns given, it cannot be tied
# to a listed column (an alias's column list, a join alias, a merged USING column).
UNRESOLVED = "@unresolved"
_SCOPES = frozenset(("SELECT", "INSERT", "UPDATE", "DELETE", "MERGE"))
Ref = tuple[str, str]  # (table, column)


@dataclass
class _Scope:
    tables: dict[str, str] = field(default_factory=dict)  # alias or name -> real table
    derived: dict[str, dict[str, set[Ref]]] = field(default_factory=dict)  # name -> col -> refs
    order: list[str] = field(default_factory=list)  # source names in FROM order


class _Tagger:
    def __init__(self, graph: AIRGraph, tags: TagMap, columns: Mapping[str, list[str]],
                 resolve: Callable[[str], str] | None = None) -> None:  # fmt: skip
        self.g = graph
        self.qualify = resolve
        self.columns = {_norm(k): [c.lower() for c in v] for k, v in columns.items()}
        table_names = {_norm(str(n.value)) for n in graph.nodes.values() if n.kind == "TABLE"}
        self.table_tags: dict[str, dict[str, str]] = {}
        self.column_tags: dict[Ref, dict[str, str]] = {}
        for key, value in tags.items():
            name = _norm(key)
            table, _, col = name.rpartition(".")
            if name in table_names or name in self.columns or not table:
                self.table_tags[name] = dict(value)
            else:
                self.column_tags[(table, col)] = dict(value)
        self.ctes: list[dict[str, dict[str, set[Ref]]]] = []
        self.b = GraphBuilder(graph.dialect)

    # --- resolution -----------------------------------------------------------

    def _table_tags(self, table: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for name, value in self.table_tags.items():
            if same_table(table, name):
                out.update(value)
        return out

    def _ref_tags(self, ref: Ref) -> dict[str, str]:
        out = self._table_tags(ref[0])
        for (table, col), value in self.column_tags.items():
            if col == ref[1] and same_table(table, ref[0]):
                out.update(value)
        return out

    def _columns_of(self, table: str) -> list[str]:
        return columns_of(self.columns, table)

    def _source_refs(self, scope: _Scope, source: str, column: str) -> set[Ref]:
        if source in scope.derived:
            derived = scope.derived[source]
            if column == "*":
                return set().union(*derived.values()) if derived else set()
            return derived.get(column, set())
        table = scope.tables.get(source)
        if table is None:
            return set()
        if column == "*":
            return {(table, c) for c in self._columns_of(table)}
        return {(table, column)}

    def resolve(self, scopes: list[_Scope], dotted: str) -> set[Ref]:
        parts = _norm(dotted).split(".")
        column = parts[-1]
        qualifier = ".".join(parts[:-1])
        for scope in reversed(scopes):  # innermost first, then correlated outer scopes
            if qualifier:
                for source in scope.order:
                    if source == qualifier or source.endswith("." + qualifier):
                        return self._source_refs(scope, source, column)
                continue
            if column == "*":
                refs: set[Ref] = set()
                for source in scope.order:
                    refs |= self._source_refs(scope, source, "*")
                return refs
            owners = [s for s in scope.order if self._has_column(scope, s, column)]
            if not owners and column in scope.order:
                # A table's name as a value is its whole row (`SELECT t FROM t`,
                # `row_to_json(t)`, `t::text`): every column of it is read.
                return self._source_refs(scope, column, "*")
            if len(owners) == 1 or (not owners and len(scope.order) == 1):
                return self._source_refs(scope, (owners or scope.order)[0], column)
        return set()

    def _known(self, refs: set[Ref]) -> bool:
        """Whether every ref names a column the caller listed for its table."""
        return bool(refs) and all(ref[1] in self._columns_of(ref[0]) for ref in refs)

    def _has_column(self, scope: _Scope, source: str, column: str) -> bool:
        if source in scope.derived:
            return column in scope.derived[source]
        return column in self._columns_of(scope.tables.get(source, ""))

    # --- scopes -------------------------------------------------------------------

    def _scope(self, stmt: AIRNode, outer: list[_Scope]) -> _Scope:
        scope = _Scope()
        for node in self._local(stmt):
            if node.kind == "TABLE" and node.value:
                real = _norm(str(node.value))
                name = _norm(node.alias) if node.alias else real
                cte = next((c[real] for c in reversed(self.ctes) if real in c), None)
                if cte is not None:
                    scope.derived[name] = cte
                else:
                    scope.tables[name] = self.qualify(real) if self.qualify else real
                scope.order.append(name)
            elif node.kind == "SUBQUERY":
                alias = _alias_name(self.g, node)
                inner = next((self.g[k] for k in node.children if self.g[k].kind in _SCOPES
                              or self.g[k].type == "statement"), None)  # fmt: skip
                if alias and inner is not None:
                    scope.derived[alias] = self.outputs(inner, [*outer, scope])
                    scope.order.append(alias)
        return scope

    def _local(self, stmt: AIRNode) -> list[AIRNode]:
        """Nodes of this statement's own level: not inside nested statements or CTE bodies."""
        out: list[AIRNode] = []
        stack = list(reversed(stmt.children))
        while stack:
            node = self.g[stack.pop()]
            out.append(node)
            if node.type == "statement" or node.kind in ("CTE", "SUBQUERY", "WITH"):
                continue
            stack.extend(reversed(node.children))
        return out

    def outputs(self, stmt: AIRNode, scopes: list[_Scope]) -> dict[str, set[Ref]]:
        """What each output column of a SELECT is made of (for derived tables and CTEs)."""
        if stmt.kind in ("UNION", "INTERSECT", "EXCEPT"):
            merged: dict[str, set[Ref]] = {}
            for kid in stmt.children:
                if self.g[kid].type == "statement":
                    for name, refs in self.outputs(self.g[kid], scopes).items():
                        merged.setdefault(name, set()).update(refs)
            return merged
        scope = self._scope(stmt, scopes)
        out: dict[str, set[Ref]] = {}
        for role, target in self.g.children(stmt):
            if role not in ("targetList[]", "expressions[]"):
                continue
            refs = set()
            label = target.alias
            for node in _subtree(self.g, target.id):
                if node.kind in ("COLUMN", "STAR"):
                    dotted = str(node.value or "*")
                    refs |= self.resolve([*scopes, scope], dotted)
                    label = label or dotted.rpartition(".")[2]
            if label == "*":
                for table, col in refs:
                    out.setdefault(col, set()).add((table, col))
            elif label:
                out[_norm(label)] = refs
        return out

    # --- rebuild --------------------------------------------------------------------

    def rebuild(self, nid: str, scopes: list[_Scope]) -> str:
        node = self.g[nid]
        pushed_ctes = False
        if node.type == "statement" and node.kind in _SCOPES:
            ctes = self._ctes(node, scopes)
            if ctes:
                self.ctes.append(ctes)
                pushed_ctes = True
            scopes = [*scopes, self._scope(node, scopes)]
        children = [self.rebuild(k, scopes) for k in node.children]
        if pushed_ctes:
            self.ctes.pop()
        # A node that stands for several columns (`*`, a UNION's output) carries every
        # tag of each: two columns' different values of one key must both be seen.
        tags: set[tuple[str, str]] = set()
        if node.kind == "TABLE" and node.value:
            name = _norm(str(node.value))
            if self.qualify and not any(name in c for c in self.ctes):
                name = self.qualify(name)
            tags = set(self._table_tags(name).items())
        elif node.kind in ("COLUMN", "STAR") and scopes:
            refs = self.resolve(scopes, str(node.value or "*"))
            for ref in refs:
                tags |= self._ref_tags(ref).items()
            if self.columns and node.kind == "COLUMN" and not self._known(refs):
                # What this names is not known: a caller that polices data must not
                # take the absence of tags for the absence of data.
                tags.add((UNRESOLVED, "1"))
        changed = children != list(node.children)
        nid2 = self.b.add(
            node.type, node.kind, value=node.value, alias=node.alias, attrs=node.attrs,
            children=children, roles=node.roles, span=node.span,
            lineage=(nid,) if changed else node.lineage,
        )  # fmt: skip
        if tags:
            nid2 = self._with_tags(nid2, tags, nid)
        return nid2

    def _ctes(self, stmt: AIRNode, scopes: list[_Scope]) -> dict[str, dict[str, set[Ref]]]:
        found: dict[str, dict[str, set[Ref]]] = {}
        for node in _subtree(self.g, stmt.id, stop_at_statements=True):
            if node.kind != "CTE":
                continue
            name = node.attr("ctename") or _alias_name(self.g, node)
            body = next((self.g[k] for k in node.children if self.g[k].type == "statement"), None)
            if name and body is not None:
                self.ctes.append(found)  # earlier CTEs (and recursion) are visible
                try:
                    found[_norm(name)] = self.outputs(body, scopes)
                finally:
                    self.ctes.pop()
        return found

    def _with_tags(self, nid: str, tags: set[tuple[str, str]], source: str) -> str:
        """The node `nid` with `tags` added; its lineage names `source`, the node it tags."""
        node = self.b.nodes[nid]
        merged = tuple(sorted(set(node.tags) | tags))
        new_id = node_id(node.type, node.kind, node.value, node.alias, node.attrs, merged,
                         node.children, node.roles, node.dialect)  # fmt: skip
        if new_id not in self.b.nodes:
            self.b.nodes[new_id] = AIRNode(new_id, node.type, node.kind, node.children, node.value,
                                           node.alias, merged, node.span, (source,), node.roles,
                                           node.attrs, node.dialect)  # fmt: skip
        return new_id


def same_table(a: str, b: str) -> bool:
    """Whether two table names (normalised, either may be schema-qualified) name one table.

    An unqualified name matches a qualified one of any schema: policy errs on
    the side of applying."""
    return a == b or a.endswith("." + b) or b.endswith("." + a)


def columns_of(columns: Mapping[str, Sequence[str]], table: str) -> list[str]:
    """A table's columns. An unqualified name that several tables share (its schema
    unknown) has the columns of all of them: `*` then reads whatever any has."""
    exact = columns.get(table)
    if exact is not None:
        return list(exact)
    out: list[str] = []
    for name, cols in columns.items():
        if same_table(table, name):
            out += [c for c in cols if c not in out]
    return out


def _norm(name: str) -> str:
    return name.replace('"', "").replace("`", "").lower()


def _alias_name(graph: AIRGraph, node: AIRNode) -> str | None:
    for role, kid in graph.children(node):
        if role == "alias":
            name = kid.attr("aliasname") or next(
                (graph[c].value for c in kid.children if graph[c].kind == "NAME"), None
            )
            return _norm(str(name)) if name else None
    return _norm(node.alias) if node.alias else None


def _subtree(graph: AIRGraph, nid: str, stop_at_statements: bool = False) -> list[AIRNode]:
    out: list[AIRNode] = []
    stack = [nid]
    first = True
    while stack:
        node = graph[stack.pop()]
        out.append(node)
        if stop_at_statements and node.type == "statement" and not first and node.kind != "WITH":
            continue
        first = False
        stack.extend(reversed(node.children))
    return out


def apply_tags(
    graph: AIRGraph,
    tags: TagMap,
    columns: Mapping[str, list[str]] | None = None,
    resolve: Callable[[str], str] | None = None,
) -> AIRGraph:
    """A copy of `graph` whose TABLE, COLUMN and STAR nodes carry `tags`. `resolve` maps
    an unqualified table name to the table the session's search path finds."""
    tagger = _Tagger(graph, tags, columns or {}, resolve)
    root = tagger.rebuild(graph.root, [])
    return tagger.b.build(root, source=graph.source, trace_id=graph.trace_id)


def tagged(graph: AIRGraph) -> list[AIRNode]:
    """The nodes of `graph` that carry tags."""
    return [n for n in graph.walk() if n.tags]
