"""The catalog of a MySQL or MariaDB server, as policy needs it.

One catalog covers every database of the server (a MySQL database is a
schema: `shop.customers` is table `customers` of database `shop`); a
session's default database stands where PostgreSQL has the search path.
Read from `information_schema` over the proxy's own connection (the MySQL
upstream DSN's user), before the first client is let through, again in the
background after DDL, and every `policy.catalog_refresh_s`.

That user must see every table, view definition and routine a policed
client could touch: a view whose definition it cannot read shows as one the
proxy cannot see through, and is denied to masked sessions.

Tags are written in comments as on PostgreSQL:
`ALTER TABLE customers MODIFY email text COMMENT 'sqlx: sensitivity=pii'`.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any

import aiomysql
import pymysql

from sqlx.agents.catalog import tags_of
from sqlx.agents.facts import Catalog

DIALECT = "mysql"
# The server's own schemas: nothing of a client's lives there.
_SYSTEM = "('mysql', 'information_schema', 'performance_schema', 'sys')"
_COLUMNS = f"""
SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, COLUMN_COMMENT, COLUMN_TYPE, DATA_TYPE
FROM information_schema.COLUMNS WHERE TABLE_SCHEMA NOT IN {_SYSTEM}
ORDER BY TABLE_SCHEMA, TABLE_NAME, ORDINAL_POSITION
"""
_TABLE_COMMENTS = f"""
SELECT TABLE_SCHEMA, TABLE_NAME, TABLE_COMMENT FROM information_schema.TABLES
WHERE TABLE_SCHEMA NOT IN {_SYSTEM} AND TABLE_COMMENT <> ''
"""
_VIEWS = f"""
SELECT TABLE_SCHEMA, TABLE_NAME, VIEW_DEFINITION FROM information_schema.VIEWS
WHERE TABLE_SCHEMA NOT IN {_SYSTEM}
"""
_ROUTINES = "SELECT DISTINCT ROUTINE_NAME FROM information_schema.ROUTINES"
_LOADABLE = "SELECT name FROM mysql.func"  # loadable (UDF) functions: root may read it
# A mask keeps a string column's type family; any other column's mask is NULL.
_STRING_TYPES = frozenset(("char", "varchar", "tinytext", "text", "mediumtext", "longtext",
                           "enum", "set", "json", "binary", "varbinary", "tinyblob", "blob",
                           "mediumblob", "longblob"))  # fmt: skip
ERRORS: tuple[type[Exception], ...] = (pymysql.MySQLError,)


async def read_mysql_catalog(connect: Mapping[str, Any], database: str, prefix: str,
                             version: int, timeout_s: float = 10.0) -> Catalog:  # fmt: skip
    """Read the server's catalog (`database` is ignored: one catalog holds them all);
    `connect` holds aiomysql.connect's keyword arguments."""
    conn = await aiomysql.connect(**connect, connect_timeout=timeout_s, autocommit=True,
                                  program_name="sqlx-os catalog")  # fmt: skip
    try:
        async with conn.cursor() as cur:
            rows = await _fetch(cur, _COLUMNS)
            tables = await _fetch(cur, _TABLE_COMMENTS)
            views = await _fetch(cur, _VIEWS)
            routines = await _fetch(cur, _ROUTINES)
            try:
                loadable = await _fetch(cur, _LOADABLE)
            except pymysql.MySQLError:  # not readable by this user: routines only
                loadable = []
    finally:
        conn.close()
    columns: dict[str, list[str]] = {}
    types: dict[str, tuple[str, bool]] = {}
    spelled: dict[str, str] = {}
    for schema, table, column, _comment, column_type, data_type in rows:
        name = f"{schema}.{table}".lower()
        columns.setdefault(name, []).append(column.lower())
        for key, value in ((schema.lower(), schema), (name, table),
                           (f"{name}.{column.lower()}", column)):  # fmt: skip
            if value != key.rpartition(".")[2]:
                spelled[key] = value
        types[f"{name}.{column.lower()}"] = (column_type, data_type.lower() in _STRING_TYPES)
    tags = tags_of((r[:4] for r in rows), tables, prefix)
    return Catalog(
        columns={k: tuple(v) for k, v in columns.items()},
        comment_tags=tags,
        types=types,
        # An empty definition: one the proxy's user may not read (see the module's note).
        views={f"{schema}.{name}".lower(): text or "" for schema, name, text in views},
        user_functions=frozenset(r[0].lower() for r in (*routines, *loadable)),
        spelled=spelled,
        version=version,
        dialect=DIALECT,
        read_ok=True,
    )


async def _fetch(cur: aiomysql.Cursor, sql: str) -> list[tuple[Any, ...]]:
    await cur.execute(sql)
    return list(await cur.fetchall())


def aiomysql_kwargs(user: str | None, password: str | None, host: str, port: int,
                    tls: ssl.SSLContext | None = None) -> dict[str, Any]:  # fmt: skip
    """aiomysql.connect's keyword arguments for the proxy's own connection (over TLS with
    `tls` when the server offers it, as the listener's sessions)."""
    return {"host": host, "port": port, "user": user or "root", "password": password or "",
            "charset": "utf8mb4", "ssl": tls}  # fmt: skip
