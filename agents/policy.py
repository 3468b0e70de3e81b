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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from sqlx.air.api import lower_all
from sqlx.air.errors import LoweringError
from sqlx.air.model import AIRGraph, AIRNode
from sqlx.air.tags import UNRESOLVED, apply_tags, same_table
from sqlx.config.policy import ACTION_STRENGTH, Policy, Rule

# Reading any of these shows data (or its statistics) the proxy cannot police.
_OPAQUE_READERS = frozenset(("query_to_xml", "query_to_xml_and_xmlschema", "query_to_xmlschema",
                             "ts_stat", "ts_rewrite",
                             "cursor_to_xml", "table_to_xml", "table_to_xml_and_xmlschema",
                             "database_to_xml", "schema_to_xml", "dblink", "dblink_exec",
                             "lo_export", "pg_read_file", "pg_read_binary_file"))  # fmt: skip
_STATS_RELATIONS = frozenset(("pg_stats", "pg_statistic", "pg_stats_ext", "pg_stats_ext_exprs",
                              "pg_statistic_ext_data"))  # fmt: skip
_IDENTITY_SETTINGS = frozenset(("role", "session_authorization"))
_WRITES = frozenset(("INSERT", "UPDATE", "DELETE", "MERGE"))


@dataclass(frozen=True, slots=True)
class Who:
    """What a policy may know about a session (fixed at authentication)."""

    user: str
    database: str
    application: str = ""
    client_addr: str = ""


@dataclass(frozen=True)
class Catalog:
    """What the proxy knows of the upstream schema (read by `agents.catalog`)."""

    columns: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # schema.table -> cols
    comment_tags: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    builtin_functions: frozenset[str] = frozenset()  # names in pg_catalog
    # Names of functions and operators defined outside pg_catalog: one that shares a
    # built-in's name may be what an unqualified call resolves to.
    user_functions: frozenset[str] = frozenset()
    user_operators: frozenset[str] = frozenset()
    views: Mapping[str, str] = field(default_factory=dict)  # schema.view -> its SELECT
    # An inheritance or partition tree's tables share their tags: a partition holds
    # the parent's rows, and the parent shows its children's.
    families: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    version: int = 0

    @property
    def known(self) -> bool:
        return bool(self.columns or self.builtin_functions)


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


TagMap = dict[str, dict[str, str]]


def _tag_map(policy: Policy, catalog: Catalog, rules: tuple[tuple[int, Rule], ...]) -> TagMap:
    tags: TagMap = {k: dict(v) for k, v in catalog.comment_tags.items()}
    for key, value in policy.tags.items():
        tags[key] = {**tags.get(key, {}), **value}
    for index, rule in rules:
        for table in rule.when.tables:
            tags.setdefault(table, {})[f"@table:{index}"] = "1"
        for column in rule.when.columns:
            tags.setdefault(column, {})[f"@column:{index}"] = "1"
    if catalog.families:
        _share_in_families(tags, catalog)
    return tags


def _share_in_families(tags: TagMap, catalog: Catalog) -> None:
    """Give every table of an inheritance or partition tree the tags of the others."""
    for key, value in list(tags.items()):
        name = key.lower()
        for table, others in catalog.families.items():
            if same_table(table, name):
                targets = [(o, "") for o in others]
            else:
                owner, _, column = name.rpartition(".")
                if not owner or not same_table(table, owner):
                    continue
                targets = [(o, "." + column) for o in others]
            for other, suffix in targets:
                merged = tags.setdefault(other + suffix, {})
                for k, v in value.items():
                    merged.setdefault(k, v)


def effective_tags(graphs: list[AIRGraph], policy: Policy, catalog: Catalog,
                   rules: tuple[tuple[int, Rule], ...]) -> TagMap:  # fmt: skip
    """Tags of tables and columns (comments, then the pack, then the rules' own), and of
    the columns of each view the statements read: a view column carries the tags of the
    columns it shows, through views of views."""
    tags = _tag_map(policy, catalog, rules)
    if catalog.views:
        pending = [str(n.value).lower() for g in graphs for n in g.walk() if n.kind == "TABLE"]
        done: set[str] = set()
        _add_view_tags(pending, done, tags, catalog, depth=0)
    return tags


def _add_view_tags(names: list[str], done: set[str], tags: TagMap, catalog: Catalog,
                   depth: int) -> None:  # fmt: skip
    columns = {k: list(v) for k, v in catalog.columns.items()}
    for name in names:
        view = next((v for v in catalog.views if same_table(v, name)), None)
        if view is None or view in done or depth > 16:
            continue
        done.add(view)
        try:
            graphs = lower_all(catalog.views[view])
        except LoweringError:
            continue
        inner = [str(n.value).lower() for g in graphs for n in g.walk() if n.kind == "TABLE"]
        _add_view_tags(inner, done, tags, catalog, depth + 1)  # views it reads, first
        for graph in graphs:
            tagged = apply_tags(graph, tags, columns)
            for role, target in tagged.children(tagged.root_node):
                if role != "targetList[]":
                    continue
                found = {k: v for n in tagged.walk(target.id) for k, v in n.tags}
                name_ = target.alias or next(
                    (str(n.value).rpartition(".")[2] for n in tagged.walk(target.id)
                     if n.kind == "COLUMN"), None)  # fmt: skip
                if found and name_:
                    key = f"{view}.{name_.lower()}"
                    tags[key] = {**tags.get(key, {}), **found}


def column_tags(tags: TagMap, table: str, column: str) -> dict[str, str]:
    """The tags of one catalog column: its table's, then its own."""
    found: dict[str, str] = {}
    for key, value in tags.items():
        key = key.lower()
        key_table, _, key_col = key.rpartition(".")
        if same_table(table, key) or (key_col == column and same_table(table, key_table)):
            found.update(value)
    return found


def touched_columns(rule: Rule, index: int, table: str, columns: Iterable[str],
                    tags: TagMap) -> list[str]:  # fmt: skip
    """The columns of `table` a rule's data conditions (tags, tables, columns) hold for."""
    w = rule.when
    if not (w.tables or w.columns or w.tags):
        return []
    out = []
    for column in columns:
        have = column_tags(tags, table, column)
        if (not w.tables or f"@table:{index}" in have) and (
                not w.columns or f"@column:{index}" in have) and all(
                have.get(k) == v for k, v in w.tags.items()):  # fmt: skip
            out.append(column)
    return out


def _masked_tables(policy: Policy, catalog: Catalog,
                   rules: tuple[tuple[int, Rule], ...]) -> set[str]:  # fmt: skip
    tags = _tag_map(policy, catalog, rules)
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
        name = str(node.value).lower()
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
        found = [n for n in tagged if all(n.tag_map.get(k) == v for k, v in want)]
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
    columns = sorted({str(n.value) for n in hits if n.kind in ("COLUMN", "STAR")})
    tags = sorted({(k, v) for n in hits for k, v in n.tags if not k.startswith("@")})
    reason = rule.reason or _default_reason(rule, tables, columns)
    return Finding(rule.name, rule.action, tuple(tables), tuple(columns), tuple(tags), reason)


def _default_reason(rule: Rule, tables: list[str], columns: list[str]) -> str:
    what = ", ".join(columns or tables)
    verb = {"deny": "denied", "mask": "masked", "filter": "filtered", "audit": "audited",
            "allow": "allowed"}[rule.action]  # fmt: skip
    return f"{verb} by policy {rule.name!r}" + (f" ({what})" if what else "")


# Statements that create code the server runs later, out of the proxy's sight.
_CODE_DDL = frozenset(("CreateFunctionStmt", "AlterFunctionStmt", "CreateTrigStmt", "DefineStmt",
                       "CreateCastStmt", "RuleStmt", "CreateDomainStmt", "CreateEventTrigStmt",
                       "CreateTransformStmt", "CreatePLangStmt", "CreateOpClassStmt",
                       "CreateConversionStmt", "CreatePolicyStmt", "AlterPolicyStmt"))  # fmt: skip
_DDL_KINDS = frozenset(("CREATE", "ALTER", "DROP", "COMMENT", "TRUNCATE", "GRANT", "REVOKE",
                        "SECURITY_LABEL", "CLUSTER", "REINDEX"))  # fmt: skip


def _blind_spots(graph: AIRGraph, catalog: Catalog, policy: Policy,
                 masked_tables: set[str]) -> str | None:  # fmt: skip
    """Why the proxy cannot see what a masked session's statement reads, if it cannot."""
    allowed = {f.lower() for f in policy.allow_functions}
    for node in graph.walk():
        if node.kind in ("DO", "CALL"):
            return f"{node.kind} runs code the proxy cannot see through"
        if node.attr("@pg") in _CODE_DDL:
            return "creating code the server runs later, out of the proxy's sight"
        if node.attr("@pg") in ("CommentStmt", "SecLabelStmt"):
            return "comments and labels may carry the tags policy reads"
        if node.kind == "TABLE" and node.value:
            name = str(node.value).lower()
            if name.rpartition(".")[2] in _STATS_RELATIONS:
                return f"{node.value} exposes column statistics"
            if graph.root_node.type == "statement" and graph.kind in _DDL_KINDS and any(
                    same_table(t, name) for t in masked_tables):  # fmt: skip
                return f"a schema change to {name}, which has masked columns"
        if node.attr("@pg") == "A_Expr" and catalog.user_operators:
            op = ".".join(str(kid.value) for r, kid in graph.children(node) if r == "name[]")
            if op.rpartition(".")[2] in catalog.user_operators:
                return f"operator {op} may be user-defined code"
        if node.type != "function" or not node.value:
            continue
        name = str(node.value).lower()
        schema, _, short = name.rpartition(".")
        if name in allowed or short in allowed:
            continue
        if short in _OPAQUE_READERS:
            return f"{short}() runs SQL the proxy cannot see through"
        builtin = (schema in ("", "pg_catalog") and short in catalog.builtin_functions
                   and (schema == "pg_catalog" or short not in catalog.user_functions))  # fmt: skip
        if catalog.builtin_functions and not builtin:
            return f"{name}() is not a built-in function and may read masked data"
    return None


def _first_text(graph: AIRGraph, call: AIRNode) -> str:
    for role, kid in graph.children(call):
        if role.startswith("args") and kid.type == "literal":
            return str(kid.value).lower()
    return ""


def _identity_change(graph: AIRGraph) -> str | None:
    """A statement that would make the session act as another role."""
    for node in graph.walk():
        if node.attr("@pg") == "VariableSetStmt" and node.attr("kind") != "VAR_RESET":
            name = str(node.attr("name") or "").lower()
            if name in _IDENTITY_SETTINGS:
                return f"SET {name} would change the session's identity"
        is_set_config = node.type == "function" and str(node.value or "").lower().endswith(
            "set_config")  # fmt: skip
        if is_set_config and _first_text(graph, node) in _IDENTITY_SETTINGS:
            return "set_config() would change the session's identity"
    return None


def startup_identity(settings: Iterable[tuple[str, str]]) -> str | None:
    """A startup parameter that would make the session act as another role."""
    for key, value in settings:
        name = key.lower()
        if name in _IDENTITY_SETTINGS:
            return f"the startup parameter {name} would change the session's identity"
        if name == "options" and any(s in value.lower().replace("_", "-") for s in (
                "role=", "session-authorization=")):  # fmt: skip
            return "the startup options would change the session's identity"
    return None


def evaluate(
    graphs: list[AIRGraph], who: Who, policy: Policy, catalog: Catalog = Catalog()
) -> Outcome:
    """The verdict for the statements of one string, for one session."""
    rules = session_rules(policy, who)
    if not rules:
        return ALLOWED
    findings: list[Finding] = []
    guard = guarded(policy, who)
    for graph in graphs:
        if guard and policy.fail_closed and graph.kind == "OPAQUE":
            findings.append(_fail_closed(f"{graph.root_node.attr('statement')} is not modelled"))
            continue
        if guard:
            why = _identity_change(graph)
            if why:
                findings.append(Finding("identity", "deny", reason=why))
                continue
        if masked(policy, who) and policy.fail_closed:
            why = _blind_spots(graph, catalog, policy, _masked_tables(policy, catalog, rules))
            if why:
                findings.append(Finding("opaque-read", "deny", reason=why))
                continue
        if guard and policy.fail_closed and catalog.known:
            stale = _stale_expansion(graph, policy, catalog, rules)
            if stale:
                findings.append(Finding(STALE, "deny", reason=(
                    f"the policy names {stale}, which the proxy's catalog does not list: "
                    "a * or whole-row read could return it unmasked; the catalog is being "
                    "read again")))  # fmt: skip
                continue
        tags = effective_tags([graph], policy, catalog, rules)
        tagged_graph = apply_tags(graph, tags, {k: list(v) for k, v in catalog.columns.items()})
        tagged = [n for n in tagged_graph.walk() if n.tags]
        tagged += _implicit_reads(tagged_graph, policy, catalog, rules)
        unresolved = any(UNRESOLVED in n.tag_map for n in tagged)
        for index, rule in rules:
            found = _match(rule, index, tagged_graph, tagged)
            if found is None and unresolved and rule.action in ("mask", "filter"):
                found = _reads_policed_table(rule, index, graph, catalog, tags)
            if found is not None:
                findings.append(found)
    return combine(findings)


STALE = "stale-catalog"


def _stale_expansion(graph: AIRGraph, policy: Policy, catalog: Catalog,
                     rules: tuple[tuple[int, Rule], ...]) -> str | None:  # fmt: skip
    """A column the policy names but the catalog does not list, of a table this statement
    reads with `*`, a whole row or `COPY t TO`: the expansion would miss it."""
    named = [k.lower() for k in policy.tags] + [c.lower() for _, r in rules for c in r.when.columns]
    missing: list[tuple[str, str]] = []
    for key in named:
        if any(same_table(t, key) for t in catalog.columns):
            continue  # a table-level key
        table, _, column = key.rpartition(".")
        known = next((cols for t, cols in catalog.columns.items() if same_table(t, table)), None)
        if table and (known is None or column not in known):
            missing.append((table, column))
    if not missing:
        return None
    tables = {str(n.value).lower(): n for n in graph.walk() if n.kind == "TABLE" and n.value}
    names = set(tables) | {n.alias.lower() for n in tables.values() if n.alias}
    implicit = any(n.kind == "STAR" or (n.kind == "COLUMN" and str(n.value).lower() in names)
                   for n in graph.walk()) or (graph.kind == "COPY"
                   and not any(r == "attlist[]" for r in graph.root_node.roles))  # fmt: skip
    if not implicit:
        return None
    for table, column in missing:
        if any(same_table(t, table) for t in tables):
            return f"{table}.{column}"
    return None


def _implicit_reads(
    graph: AIRGraph, policy: Policy, catalog: Catalog, rules: tuple[tuple[int, Rule], ...]
) -> list[AIRNode]:
    """`COPY table TO ...` reads every column (or the listed ones) without naming them."""
    root = graph.root_node
    if root.kind != "COPY" or root.attr("is_from"):
        return []
    table = next((n for role, n in graph.children(root) if role == "relation"), None)
    if table is None:
        return []
    name = str(table.value).lower()
    listed = [str(n.value).lower() for role, n in graph.children(root) if role == "attlist[]"]
    columns = listed or next(
        (list(cols) for t, cols in catalog.columns.items() if same_table(t, name)), []
    )
    out = []
    for col in columns:
        tags: dict[str, str] = {}
        for key, value in effective_tags([graph], policy, catalog, rules).items():
            key_table, _, key_col = key.lower().rpartition(".")
            if same_table(key.lower(), name) or (key_col == col and same_table(key_table, name)):
                tags.update(value)
        if tags:
            ref = f"{name}.{col}"
            out.append(AIRNode(f"copy:{ref}", "identifier", "COLUMN", value=ref,
                               tags=tuple(sorted(tags.items()))))  # fmt: skip
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
