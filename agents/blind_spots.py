"""What the proxy cannot see through, for sessions a guarding or masking rule applies to:
code and functions it cannot read, identity changes, statistics views, schema changes
to masked tables, and a catalog that may be missing a policed column."""

from __future__ import annotations

from collections.abc import Iterable

from sqlx.agents.facts import Catalog
from sqlx.agents.session_settings import is_set_config
from sqlx.air.model import AIRGraph, AIRNode
from sqlx.air.tags import same_table
from sqlx.config.policy import Policy, Rule

# Reading any of these shows data (or its statistics) the proxy cannot police.
_OPAQUE_READERS = frozenset(("query_to_xml", "query_to_xml_and_xmlschema", "query_to_xmlschema",
                             "ts_stat", "ts_rewrite",
                             "cursor_to_xml", "table_to_xml", "table_to_xml_and_xmlschema",
                             "database_to_xml", "schema_to_xml", "dblink", "dblink_exec",
                             "lo_export", "pg_read_file", "pg_read_binary_file",
                             "schema_to_xml_and_xmlschema", "database_to_xml_and_xmlschema",
                             # Logical decoding hands out the rows of every change.
                             "pg_logical_slot_peek_changes", "pg_logical_slot_get_changes",
                             "pg_logical_slot_peek_binary_changes",
                             "pg_logical_slot_get_binary_changes"))  # fmt: skip
# MySQL's: a file on the server may be a table's own data file.
_MYSQL_OPAQUE_READERS = frozenset(("load_file",))


_STATS_RELATIONS = frozenset(("pg_stats", "pg_statistic", "pg_stats_ext", "pg_stats_ext_exprs",
                              "pg_statistic_ext_data",
                              # MySQL's histograms, MariaDB's column statistics (both hold
                              # column values) and InnoDB's full-text index words.
                              "column_statistics", "column_stats", "innodb_ft_index_table",
                              "innodb_ft_index_cache"))  # fmt: skip


_IDENTITY_SETTINGS = frozenset(("role", "session_authorization"))


# Statements that create code the server runs later, out of the proxy's sight.
_CODE_DDL = frozenset(("CreateFunctionStmt", "AlterFunctionStmt", "CreateTrigStmt", "DefineStmt",
                       "CreateCastStmt", "RuleStmt", "CreateDomainStmt", "CreateEventTrigStmt",
                       "CreateTransformStmt", "CreatePLangStmt", "CreateOpClassStmt",
                       "CreateConversionStmt", "CreatePolicyStmt", "AlterPolicyStmt"))  # fmt: skip


# The same, as sqlglot parses MySQL's CREATE (a trigger or event is OPAQUE: denied anyway).
_SG_CODE_KINDS = frozenset(("FUNCTION", "PROCEDURE", "TRIGGER", "EVENT"))


_DDL_KINDS = frozenset(("CREATE", "ALTER", "DROP", "COMMENT", "TRUNCATE", "GRANT", "REVOKE",
                        "SECURITY_LABEL", "CLUSTER", "REINDEX"))  # fmt: skip


def blind_spots(graph: AIRGraph, catalog: Catalog, policy: Policy,
                 masked_tables: set[str]) -> str | None:  # fmt: skip
    """Why the proxy cannot see what a masked session's statement reads, if it cannot."""
    allowed = {f.lower() for f in policy.allow_functions}
    for node in graph.walk():
        if node.kind in ("DO", "CALL"):
            return f"{node.kind} runs code the proxy cannot see through"
        if node.attr("@pg") in _CODE_DDL or (node.attr("@sg") == "Create" and str(
                node.attr("kind") or "").upper() in _SG_CODE_KINDS):  # fmt: skip
            return "creating code the server runs later, out of the proxy's sight"
        if node.attr("@pg") in ("CommentStmt", "SecLabelStmt"):
            return "comments and labels may carry the tags policy reads"
        if node.kind == "TABLE" and node.value:
            name = catalog.resolve(str(node.value).lower())
            if name.rpartition(".")[2] in _STATS_RELATIONS:
                return f"{node.value} exposes column statistics"
            view = next((v for v in catalog.views if same_table(v, name)), None)
            if view is not None and not catalog.views[view]:
                return f"the definition of view {view} is not readable by the proxy's user"
            if graph.root_node.type == "statement" and graph.kind in _DDL_KINDS and any(
                    same_table(t, name) for t in masked_tables):  # fmt: skip
                return f"a schema change to {name}, which has masked columns"
        if node.attr("@pg") == "A_Expr" and catalog.user_operators:
            op = ".".join(str(kid.value) for r, kid in graph.children(node) if r == "name[]")
            if op.rpartition(".")[2] in catalog.user_operators:
                return f"operator {op} may be user-defined code"
        if catalog.dialect == "mysql":
            why = _mysql_routine(graph, node, catalog, allowed)
            if why:
                return why
            continue
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


def _mysql_routine(graph: AIRGraph, node: AIRNode, catalog: Catalog,
                   allowed: set[str]) -> str | None:  # fmt: skip
    """A stored or loadable function: called with its database's name, or by a name
    the server's routines have (MySQL's own functions cannot be qualified)."""
    if node.attr("@sg") == "Dot" and any(graph[c].type == "function" for c in node.children):
        return "a function qualified with a database is a stored routine and may read masked data"
    if node.type == "function" and node.attr("@sg") == "Anonymous":
        name = str(node.value or "").lower()
        if name in _MYSQL_OPAQUE_READERS and name not in allowed:
            return f"{name}() reads what the proxy cannot see through"
        if name in catalog.user_functions and name not in allowed:
            return f"{name}() is a stored routine and may read masked data"
    return None


def _first_text(graph: AIRGraph, call: AIRNode) -> str:
    for role, kid in graph.children(call):
        if role.startswith("args") and kid.type == "literal":
            return str(kid.value).lower()
    return ""


def identity_change(graph: AIRGraph) -> str | None:
    """A statement that would make the session act as another role."""
    for node in graph.walk():
        if node.attr("@pg") == "VariableSetStmt" and node.attr("kind") != "VAR_RESET":
            name = str(node.attr("name") or "").lower()
            if name in _IDENTITY_SETTINGS:
                return f"SET {name} would change the session's identity"
        if is_set_config(node) and _first_text(graph, node) in _IDENTITY_SETTINGS:
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


STALE = "stale-catalog"


def stale_expansion(graph: AIRGraph, policy: Policy, catalog: Catalog,
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
    tables = {catalog.resolve(str(n.value).lower()): n for n in graph.walk()
              if n.kind == "TABLE" and n.value}  # fmt: skip
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
