"""What policy knows of a session and of the upstream catalog: values, no I/O."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from sqlx.air.tags import columns_of

# One element of a search_path setting: a quoted name (doubled quotes inside) or a word.
_PATH_ITEM = re.compile(r'\s*("(?:[^"]|"")*"|[^,\s]+)\s*(?:,|$)')
DEFAULT_PATH = '"$user", public'


class Who(NamedTuple):
    """What a policy may know about a session (fixed at authentication). A named
    tuple: it is part of every decision-cache key, and hashes in C."""

    user: str
    database: str
    application: str = ""
    client_addr: str = ""


@dataclass(frozen=True)
class Catalog:
    """What the proxy knows of the upstream schema (read by `agents.catalog`)."""

    columns: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # schema.table -> cols
    comment_tags: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    # schema.table.column -> (its type as format_type writes it, whether it is a string
    # type): masks keep a column's type, so a driver decodes what it expects.
    types: Mapping[str, tuple[str, bool]] = field(default_factory=dict)
    builtin_functions: frozenset[str] = frozenset()  # names in pg_catalog
    # Names of functions and operators defined outside pg_catalog: one that shares a
    # built-in's name may be what an unqualified call resolves to.
    user_functions: frozenset[str] = frozenset()
    user_operators: frozenset[str] = frozenset()
    views: Mapping[str, str] = field(default_factory=dict)  # schema.view -> its SELECT
    # An inheritance or partition tree's tables share their tags: a partition holds
    # the parent's rows, and the parent shows its children's.
    families: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # search_path settings made with ALTER ROLE / ALTER DATABASE ... SET, for this
    # database: (role, or "" for every role; whether it is this database's) -> value.
    path_settings: Mapping[tuple[str, bool], str] = field(default_factory=dict)
    server_path: str = DEFAULT_PATH  # the server's own default
    # The search path unqualified names are resolved with (schemas, lower case), or
    # None when it is not known: an unqualified name then stands for every table of
    # that name, whichever schema it is in.
    search_path: tuple[str, ...] | None = None
    version: int = 0
    # The server's SQL dialect: "postgres", or "mysql" (one catalog for every database of
    # the server, schema = database; no built-in function list, user routines instead).
    dialect: str = "postgres"
    read_ok: bool = False  # read from a server (even one with no tables)
    # Lower-case table and column keys -> the name as the server spells it, where that
    # differs (MySQL keeps a column's case in result sets: a rewrite keeps it too).
    spelled: Mapping[str, str] = field(default_factory=dict)
    _default_paths: dict[str, tuple[str, ...]] = field(default_factory=dict, compare=False,
                                                       repr=False)  # fmt: skip

    @property
    def known(self) -> bool:
        return self.read_ok or bool(self.columns or self.builtin_functions)

    def default_path(self, user: str) -> tuple[str, ...]:
        """The search path a new session of `user` starts with (PostgreSQL's precedence:
        role in this database, role, this database, the server)."""
        path = self._default_paths.get(user)
        if path is None:
            found = self.path_settings
            raw = (found.get((user, True)) or found.get((user, False)) or found.get(("", True))
                   or self.server_path)  # fmt: skip
            path = self._default_paths[user] = parse_search_path(raw, user)
        return path

    def with_path(self, path: tuple[str, ...] | None) -> Catalog:
        return self if path == self.search_path else replace(self, search_path=path)

    def columns_of(self, name: str) -> tuple[str, ...]:
        """The columns of table `name` (resolved first). An unqualified name that
        several tables share has the columns of all of them."""
        return tuple(columns_of(self.columns, self.resolve(name)))

    def resolve(self, name: str) -> str:
        """The schema-qualified table an unqualified `name` (lower case) names under the
        search path; `name` itself when it is qualified, the path is not known, or no
        table of the path has that name (a CTE, a temporary or unknown table)."""
        path = self.search_path
        if path is None or "." in name:
            return name
        if "pg_catalog" not in path and self.dialect == "postgres":  # first unless placed
            path = ("pg_catalog", *path)
        for schema in path:
            qualified = f"{schema}.{name}"
            if qualified in self.columns:
                return qualified
        return name


def parse_search_path(raw: str, user: str) -> tuple[str, ...]:
    """`"$user", public, "My Schema"` -> ("alice", "public", "my schema") for `alice`.
    Names are compared in lower case, as the proxy's catalog keys are."""
    out: list[str] = []
    for item in _PATH_ITEM.findall(raw.strip()):
        name = item[1:-1].replace('""', '"') if item.startswith('"') else item
        if name == "$user":
            name = user
        if name and name not in out:
            out.append(name.lower())
    return tuple(out)
