"""Policy evaluation: AIR graphs and session facts in, a verdict out (pure, no I/O).

A rule applies to a session when its who-conditions hold (users,
except_users, databases, applications, clients). It matches a statement when
its data conditions hold as well: statement kinds, tables, columns and tags
(resolved by `air.tags` through aliases, CTEs, subqueries, `*` and whole-row
references), presence of WHERE or LIMIT. Table and column conditions ride on
the same resolution as tags: each becomes a private tag of its rule.

The strongest matching action wins (deny > mask > filter > audit > allow).
What the proxy cannot see through is denied whenever a deny, mask or filter
rule applies to the session and the policy fails closed: text it cannot
parse, a statement AIR keeps OPAQUE, a FunctionCall message, and, for
sessions a mask applies to, functions outside `pg_catalog`, dynamic SQL,
statistics views and any change of identity (`SET ROLE`, ...).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from sqlx.agents.blind_spots import (
    STALE,
    blind_spots,
    identity_change,
    stale_expansion,
    startup_identity,
)
from sqlx.agents.facts import Catalog, Who
from sqlx.agents.policy_tags import (
    TagMap,
    column_tags,
    effective_tags,
    touched_columns,
)
from sqlx.air.model import AIRGraph, AIRNode
from sqlx.air.tags import UNRESOLVED, apply_tags, same_table
from sqlx.config.policy import ACTION_STRENGTH, Policy, Rule

__all__ = ["STALE", "Catalog", "TagMap", "Who", "column_tags", "effective_tags",
           "startup_identity", "touched_columns"]  # fmt: skip


@dataclass(frozen=True)
class Finding:
    """One rule that matched a statement, with what it matched on."""

    rule: str
    action: str
    tables: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()
    tags: tuple[tuple[str, str], ...] = ()
    reason: str = ""


@dataclass(frozen=True)
class Outcome:
    """The verdict for one statement string (all its statements)."""

    action: str  # allow | deny | mask | filter | audit
    findings: tuple[Finding, ...] = ()

    @property
    def deciding(self) -> Finding | None:
        """The finding that set the action (first of the strongest)."""
        return next((f for f in self.findings if f.action == self.action), None)

    @property
    def reason(self) -> str:
        found = self.deciding
        return found.reason if found else ""


ALLOWED = Outcome("allow")


def _client_in(addr: str, cidrs: Iterable[str]) -> bool:
    try:
        ip = ipaddress.ip_address(addr.split("%")[0])
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(c, strict=False) for c in cidrs)


def _applies(rule: Rule, who: Who) -> bool:
    w = rule.when
    if w.users and who.user not in w.users:
        return False
    if who.user in w.except_users:
        return False
    if w.databases and who.database not in w.databases:
        return False
    if w.applications and who.application not in w.applications:
        return False
    return not w.clients or _client_in(who.client_addr, w.clients)


def session_rules(policy: Policy, who: Who) -> tuple[tuple[int, Rule], ...]:
    """The rules whose who-conditions hold for `who`, with their index in the policy."""
    return tuple((i, r) for i, r in enumerate(policy.rules) if _applies(r, who))


def guarded(policy: Policy, who: Who) -> bool:
    """Whether a deny, mask or filter rule applies to the session (fail closed then)."""
    return any(r.action in ("deny", "mask", "filter") for _, r in session_rules(policy, who))


def masked(policy: Policy, who: Who) -> bool:
    return any(r.action == "mask" for _, r in session_rules(policy, who))


def _masked_tables(catalog: Catalog, rules: tuple[tuple[int, Rule], ...],
                   tags: TagMap) -> set[str]:  # fmt: skip
    return {t for t, cols in catalog.columns.items() for i, r in rules
            if r.action == "mask" and touched_columns(r, i, t, cols, tags)}  # fmt: skip


def _reads_policed_table(rule: Rule, index: int, graph: AIRGraph, catalog: Catalog,
                         tags: TagMap) -> Finding | None:  # fmt: skip
    """A mask or filter rule holds for a statement that names a table it polices and has
    column references the tags could not tie to a column (table column aliases, join
    aliases, merged USING columns): the rewrite then masks the table itself."""
    if rule.when.statements and not _statement_kinds(graph) & set(rule.when.statements):
        return None
    for node in graph.walk():
        if node.kind != "TABLE" or not node.value:
            continue
        name = catalog.resolve(str(node.value).lower())
        for table, columns in catalog.columns.items():
            if same_table(table, name):
                touched = touched_columns(rule, index, table, columns, tags)
                if touched:
                    reason = rule.reason or _default_reason(rule, [table], [])
                    return Finding(rule.name, rule.action, (table,),
                                   tuple(f"{table}.{c}" for c in touched), (), reason)  # fmt: skip
    return None


def _is_statement(node: AIRNode) -> bool:
    return node.type == "statement"


def _has(graph: AIRGraph, node: AIRNode, roles: tuple[str, ...]) -> bool:
    return any(role in roles for role in node.roles) or any(
        graph[c].kind in ("WHERE", "LIMIT") and graph[c].kind.lower() in roles
        for c in node.children
    )


def _statement_kinds(graph: AIRGraph) -> set[str]:
    kinds = {n.kind for n in graph.walk() if _is_statement(n)}
    root = graph.root_node
    if root.kind == "OPAQUE":
        kinds.add(str(root.attr("statement") or "OPAQUE"))
    return kinds


def _condition_nodes(tagged: list[AIRNode], key: str) -> list[AIRNode]:
    return [n for n in tagged if key in n.tag_map]


def _match(rule: Rule, index: int, graph: AIRGraph, tagged: list[AIRNode]) -> Finding | None:
    w = rule.when
    kinds = _statement_kinds(graph)
    if w.statements and not kinds & set(w.statements):
        return None
    hits: list[AIRNode] = []
    if w.tables:
        found = _condition_nodes(tagged, f"@table:{index}")
        if not found:
            return None
        hits += found
    if w.columns:
        found = _condition_nodes(tagged, f"@column:{index}")
        if not found:
            return None
        hits += found
    if w.tags:
        want = w.tags.items()
        # Pairs, not a mapping: a node over several columns may hold a key twice.
        found = [n for n in tagged if all(pair in n.tags for pair in want)]
        if not found:
            return None
        hits += found
    if w.has_where is not None or w.has_limit is not None:
        targets = [n for n in graph.walk() if _is_statement(n) and
                   (not w.statements or n.kind in w.statements)]  # fmt: skip
        if w.has_where is not None and not any(
            _has(graph, n, ("whereClause", "where")) == w.has_where for n in targets
        ):
            return None
        if w.has_limit is not None and not any(
            _has(graph, n, ("@limit", "limit")) == w.has_limit for n in targets
        ):
            return None
    tables = sorted({str(n.value) for n in hits if n.kind == "TABLE"})
    # A bare star may have no value: it is named `*`, never "None", in reasons.
    named = [n for n in hits if n.kind == "STAR" or (n.kind == "COLUMN" and n.value is not None)]
    columns = sorted({"*" if n.value is None else str(n.value) for n in named})
    tags = sorted({(k, v) for n in hits for k, v in n.tags if not k.startswith("@")})
    reason = rule.reason or _default_reason(rule, tables, columns)
    return Finding(rule.name, rule.action, tuple(tables), tuple(columns), tuple(tags), reason)


def _default_reason(rule: Rule, tables: list[str], columns: list[str]) -> str:
    what = ", ".join(columns or tables)
    verb = {"deny": "denied", "mask": "masked", "filter": "filtered", "audit": "audited",
            "allow": "allowed"}[rule.action]  # fmt: skip
    return f"{verb} by policy {rule.name!r}" + (f" ({what})" if what else "")


_NO_CATALOG = Catalog()


def evaluate(
    graphs: list[AIRGraph], who: Who, policy: Policy, catalog: Catalog = _NO_CATALOG
) -> Outcome:
    """The verdict for the statements of one string, for one session."""
    rules = session_rules(policy, who)
    if not rules:
        return ALLOWED
    findings: list[Finding] = []
    guard = guarded(policy, who)
    blind = masked(policy, who) and policy.fail_closed
    columns = {k: list(v) for k, v in catalog.columns.items()}
    for graph in graphs:
        tags = effective_tags([graph], policy, catalog, rules)
        if guard and policy.fail_closed and graph.kind == "OPAQUE":
            findings.append(_fail_closed(f"{graph.root_node.attr('statement')} is not modelled"))
            continue
        if guard:
            why = identity_change(graph)
            if why:
                findings.append(Finding("identity", "deny", reason=why))
                continue
        if blind:
            why = blind_spots(graph, catalog, policy, _masked_tables(catalog, rules, tags))
            if why:
                findings.append(Finding("opaque-read", "deny", reason=why))
                continue
        if guard and policy.fail_closed and catalog.known:
            stale = stale_expansion(graph, policy, catalog, rules)
            if stale:
                findings.append(Finding(STALE, "deny", reason=(
                    f"the policy names {stale}, which the proxy's catalog does not list: "
                    "a * or whole-row read could return it unmasked; the catalog is being "
                    "read again")))  # fmt: skip
                continue
        tagged_graph = apply_tags(graph, tags, columns, catalog.resolve)
        tagged = [n for n in tagged_graph.walk() if n.tags]
        tagged += _implicit_reads(tagged_graph, catalog, tags)
        unresolved = any(UNRESOLVED in n.tag_map for n in tagged)
        for index, rule in rules:
            found = _match(rule, index, tagged_graph, tagged)
            if found is None and unresolved and rule.action in ("mask", "filter"):
                found = _reads_policed_table(rule, index, graph, catalog, tags)
            if found is not None:
                findings.append(found)
    return combine(findings)


def _implicit_reads(graph: AIRGraph, catalog: Catalog, tags: TagMap) -> list[AIRNode]:
    """`COPY table TO ...` reads every column (or the listed ones) without naming them."""
    root = graph.root_node
    if root.kind != "COPY" or root.attr("is_from"):
        return []
    table = next((n for role, n in graph.children(root) if role == "relation"), None)
    if table is None:
        return []
    name = catalog.resolve(str(table.value).lower())
    listed = [str(n.value).lower() for role, n in graph.children(root) if role == "attlist[]"]
    columns = listed or list(catalog.columns_of(name))
    out = []
    for col in columns:
        found = column_tags(tags, name, col)
        if found:
            ref = f"{name}.{col}"
            out.append(AIRNode(f"copy:{ref}", "identifier", "COLUMN", value=ref,
                               tags=tuple(sorted(found.items()))))  # fmt: skip
    return out


def _fail_closed(why: str) -> Finding:
    return Finding("fail-closed", "deny", reason=f"{why}: denied because the policy fails closed")


def combine(findings: list[Finding]) -> Outcome:
    if not findings:
        return ALLOWED
    action = max((f.action for f in findings), key=lambda a: ACTION_STRENGTH[a])
    ordered = sorted(findings, key=lambda f: -ACTION_STRENGTH[f.action])
    return Outcome(action, tuple(ordered))


def unparsable(policy: Policy, who: Who, error: str) -> Outcome:
    """Text the proxy cannot parse: denied if a guarding rule applies and it fails closed."""
    if policy.fail_closed and guarded(policy, who):
        return combine([_fail_closed(f"the proxy cannot parse this statement ({error})")])
    return ALLOWED


def function_call(policy: Policy, who: Who) -> Outcome:
    """The FunctionCall message names a function by OID only: the proxy cannot see through it."""
    if policy.fail_closed and guarded(policy, who):
        return combine([_fail_closed("a FunctionCall message")])
    return ALLOWED
