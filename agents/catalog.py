"""The upstream catalog as policy needs it: tables, their columns, view definitions,
inheritance and partition trees, built-in functions, the search_path settings of
roles and databases (to resolve unqualified names), and tags written in column or
table comments.

Read over the proxy's own connection (the upstream DSN's user), once per
database before the first client of that database is let through, and again
in the background after DDL passes through. A database whose catalog cannot
be read gets an empty one, which policy treats as unknown (fail closed for
sessions a rule guards).

A comment tags its column or table when it starts with the policy's prefix:
`COMMENT ON COLUMN customers.email IS 'sqlx: sensitivity=pii, mask=true'`.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import asyncpg
import structlog

from sqlx.agents.facts import DEFAULT_PATH
from sqlx.agents.policy import Catalog

log = structlog.get_logger("sqlx.catalog")

_COLUMNS = """
SELECT n.nspname, c.relname, a.attname, col_description(c.oid, a.attnum),
       CASE WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod)
            ELSE format_type(a.atttypid, a.atttypmod) END,
       t.typcategory = 'S'
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_type t ON t.oid = a.atttypid
WHERE c.relkind IN ('r', 'v', 'm', 'f', 'p') AND a.attnum > 0 AND NOT a.attisdropped
  AND n.nspname NOT IN ('information_schema', 'pg_toast')
ORDER BY n.nspname, c.relname, a.attnum
"""
_TABLE_COMMENTS = """
SELECT n.nspname, c.relname, obj_description(c.oid, 'pg_class')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'v', 'm', 'f', 'p') AND obj_description(c.oid, 'pg_class') IS NOT NULL
"""
_BUILTINS = "SELECT DISTINCT proname FROM pg_proc WHERE pronamespace = 'pg_catalog'::regnamespace"
_USER_FUNCTIONS = """
SELECT DISTINCT proname FROM pg_proc
WHERE pronamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
"""
_USER_OPERATORS = (
    "SELECT DISTINCT oprname FROM pg_operator WHERE oprnamespace <> 'pg_catalog'::regnamespace"
)
_INHERITS = """
SELECT cn.nspname, c.relname, pn.nspname, p.relname
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace cn ON cn.oid = c.relnamespace
JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace pn ON pn.oid = p.relnamespace
"""
_VIEWS = """
SELECT n.nspname, c.relname, pg_get_viewdef(c.oid)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('v', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
"""
# search_path set per role and/or database (ALTER ROLE/DATABASE ... SET), for this database.
_PATH_SETTINGS = """
SELECT COALESCE(r.rolname, ''), s.setdatabase <> 0, substr(opt, length('search_path=') + 1)
FROM pg_db_role_setting s
LEFT JOIN pg_roles r ON r.oid = s.setrole
CROSS JOIN LATERAL unnest(s.setconfig) AS opt
WHERE s.setdatabase IN (0, (SELECT oid FROM pg_database WHERE datname = current_database()))
  AND opt LIKE 'search\\_path=%'
"""
# The server's own default: the proxy's session value, unless it came from a role or
# database setting (those are read above), then the built-in one.
_SERVER_PATH = """
SELECT CASE WHEN source IN ('user', 'database', 'database user', 'client', 'session')
            THEN boot_val ELSE reset_val END
FROM pg_settings WHERE name = 'search_path'
"""


def parse_comment_tags(comment: str | None, prefix: str) -> dict[str, str]:
    """`sqlx: sensitivity=pii, mask=true` → {"sensitivity": "pii", "mask": "true"}."""
    if not comment or not comment.strip().startswith(prefix):
        return {}
    tags = {}
    for part in comment.strip()[len(prefix) :].split(","):
        key, sep, value = part.partition("=")
        if sep and key.strip():
            tags[key.strip()] = value.strip()
    return tags


def tags_of(
    columns: Iterable[tuple[str, str, str, str | None]],
    tables: Iterable[tuple[str, str, str | None]],
    prefix: str,
) -> dict[str, dict[str, str]]:
    """The tags written in comments: (schema, table, column, comment) rows, then (schema,
    table, comment) rows -> {"schema.table[.column]": tags} (lower-case keys)."""
    tags: dict[str, dict[str, str]] = {}
    for schema, table, column, comment in columns:
        found = parse_comment_tags(comment, prefix)
        if found:
            tags[f"{schema}.{table}.{column}".lower()] = found
    for schema, table, comment in tables:
        found = parse_comment_tags(comment, prefix)
        if found:
            tags[f"{schema}.{table}".lower()] = found
    return tags


async def read_catalog(connect: Mapping[str, Any], database: str, prefix: str, version: int,
                       timeout_s: float = 10.0) -> Catalog:  # fmt: skip
    """Read one database's catalog; `connect` holds asyncpg.connect's keyword arguments."""
    conn = await asyncpg.connect(
        **connect, database=database, timeout=timeout_s,
        server_settings={"application_name": "sqlx-os catalog"},
    )  # fmt: skip
    try:
        path_settings = await conn.fetch(_PATH_SETTINGS)
        server_path = await conn.fetchval(_SERVER_PATH)
        # With only pg_catalog on the path, view definitions name every other table
        # with its schema: they resolve the same whatever a session's path is.
        await conn.execute("SET search_path = pg_catalog")
        rows = await conn.fetch(_COLUMNS)
        tables = await conn.fetch(_TABLE_COMMENTS)
        builtins = await conn.fetch(_BUILTINS)
        views = await conn.fetch(_VIEWS)
        inherits = await conn.fetch(_INHERITS)
        user_functions = await conn.fetch(_USER_FUNCTIONS)
        user_operators = await conn.fetch(_USER_OPERATORS)
    finally:
        await conn.close()
    columns: dict[str, list[str]] = {}
    types: dict[str, tuple[str, bool]] = {}
    for schema, table, column, _comment, type_name, is_string in rows:
        name = f"{schema}.{table}".lower()
        columns.setdefault(name, []).append(column.lower())
        # A domain's base type: a mask value need not pass the domain's checks.
        types[f"{name}.{column.lower()}"] = (type_name, bool(is_string))
    tags = tags_of((r[:4] for r in rows), tables, prefix)
    return Catalog(
        columns={k: tuple(v) for k, v in columns.items()},
        comment_tags=tags,
        types=types,
        builtin_functions=frozenset(r[0] for r in builtins),
        views={f"{schema}.{name}".lower(): text for schema, name, text in views if text},
        families=_families(inherits),
        user_functions=frozenset(r[0] for r in user_functions),
        user_operators=frozenset(r[0] for r in user_operators),
        path_settings={(role, in_db): value for role, in_db, value in path_settings},
        server_path=server_path or DEFAULT_PATH,
        version=version,
        read_ok=True,
    )


def _families(rows: list[tuple[str, str, str, str]]) -> dict[str, tuple[str, ...]]:
    """Each table of an inheritance or partition tree -> every other table of its tree."""
    linked: dict[str, set[str]] = {}
    for cs, cn, ps, pn in rows:
        child, parent = f"{cs}.{cn}".lower(), f"{ps}.{pn}".lower()
        linked.setdefault(child, set()).add(parent)
        linked.setdefault(parent, set()).add(child)
    out: dict[str, tuple[str, ...]] = {}
    for table in linked:
        seen, stack = {table}, [table]
        while stack:
            for other in linked[stack.pop()] - seen:
                seen.add(other)
                stack.append(other)
        out[table] = tuple(sorted(seen - {table}))
    return out


Reader = Callable[[Mapping[str, Any], str, str, int], Awaitable[Catalog]]


class CatalogStore:
    """One catalog per database, loaded before use and refreshed after DDL.

    `reader` reads one (PostgreSQL's by default); `errors` are the exceptions of its
    client library that mean the server could not be read."""

    def __init__(self, connect: Mapping[str, Any], prefix: str = "sqlx:",
                 on_change: Callable[[], None] | None = None, reader: Reader = read_catalog,
                 errors: tuple[type[Exception], ...] = (asyncpg.PostgresError,),
                 ) -> None:  # fmt: skip
        self.connect = dict(connect)
        self.prefix = prefix
        self.on_change = on_change
        self.reader = reader
        self.errors = (OSError, TimeoutError, ssl.SSLError, *errors)
        self._catalogs: dict[str, Catalog] = {}
        self._loading: dict[str, asyncio.Task[Catalog]] = {}
        self._refreshing: set[str] = set()
        self._again: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._version = 0

    def get(self, database: str) -> Catalog:
        """The catalog of `database`; an empty (unknown) one if it was never read."""
        return self._catalogs.get(database) or Catalog()

    async def prepare(self, database: str) -> None:
        """Read `database`'s catalog unless it is known (concurrent callers share one read)."""
        if database in self._catalogs:
            return
        await self._load(database)

    def refresh(self, database: str) -> None:
        """Read `database`'s catalog again in the background (after DDL). Requests that
        arrive while a read is running make one more read after it, never a pile."""
        if database not in self._catalogs:
            return
        if database in self._refreshing:
            self._again.add(database)
            return
        self._refreshing.add(database)
        self._tasks.add(asyncio.get_running_loop().create_task(self._reread(database)))
        self._tasks = {t for t in self._tasks if not t.done()}

    async def _reread(self, database: str) -> None:
        try:
            while True:
                self._again.discard(database)
                await self._load(database, again=True)
                if database not in self._again:
                    return
        finally:
            self._refreshing.discard(database)

    async def refresh_every(self, interval_s: float) -> None:
        """Read every known catalog again every `interval_s` (DDL that did not pass
        through the proxy: migrations run against the server itself)."""
        while True:
            await asyncio.sleep(interval_s)
            for database in list(self._catalogs):
                self.refresh(database)

    async def _load(self, database: str, again: bool = False) -> None:
        task = self._loading.get(database)
        if task is None:
            self._version += 1
            task = asyncio.get_running_loop().create_task(
                self.reader(self.connect, database, self.prefix, self._version)
            )
            self._loading[database] = task
        try:
            catalog = await task
        except self.errors as exc:
            log.warning("cannot read the catalog", database=database, error=str(exc))
            catalog = self._catalogs.get(database) or Catalog(version=-1)
        finally:
            self._loading.pop(database, None)
        self._catalogs[database] = catalog
        if again and self.on_change is not None:
            self.on_change()
        (log.debug if again else log.info)("catalog read", database=database,
                                           tables=len(catalog.columns),
                                           tagged=len(catalog.comment_tags))  # fmt: skip
