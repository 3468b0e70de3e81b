"""The tags policy sees on tables and columns.

A table or column gets the tags of its pack entries and of its comments; each
rule's table and column conditions become private marks (`@table:<i>`,
`@column:<i>`) so they resolve like tags; the tables of an inheritance or
partition tree share their tags; a view's columns carry those of the columns
they show, through views of views.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlx.agents.facts import Catalog
from sqlx.air.api import lower_all
from sqlx.air.errors import LoweringError
from sqlx.air.model import AIRGraph
from sqlx.air.tags import apply_tags, same_table
from sqlx.config.policy import Policy, Rule

TagMap = dict[str, dict[str, str]]
# The role of a view's output columns in its lowered SELECT (pglast's, sqlglot's).
_TARGETS = frozenset(("targetList[]", "expressions[]"))


def tag_map(policy: Policy, catalog: Catalog, rules: tuple[tuple[int, Rule], ...]) -> TagMap:
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
    tags = tag_map(policy, catalog, rules)
    if catalog.views:
        pending = [catalog.resolve(str(n.value).lower()) for g in graphs for n in g.walk()
                   if n.kind == "TABLE"]  # fmt: skip
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
            graphs = lower_all(catalog.views[view], catalog.dialect)
        except LoweringError:
            continue
        inner = [str(n.value).lower() for g in graphs for n in g.walk() if n.kind == "TABLE"]
        _add_view_tags(inner, done, tags, catalog, depth + 1)  # views it reads, first
        for graph in graphs:
            tagged = apply_tags(graph, tags, columns, catalog.resolve)
            for role, target in tagged.children(tagged.root_node):
                if role not in _TARGETS:
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
