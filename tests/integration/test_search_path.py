"""Unqualified names are policed as the table the server reads: the session's search path.

Two schemas hold a table of the same name; only one has a masked column. Whatever
sets the session's path (its role's default, the startup packet, SET), a read
through the proxy never shows the masked column in clear, and a session reading
the other table gets that table's rows, unchanged.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import psycopg
import pytest
import yaml

from tests.fixtures.fix_pg import PgServer
from tests.fixtures.fix_proxy import ProxyProcess, start_proxy

SUFFIX = secrets.token_hex(3)
APP, CRM_USER = f"sp_app_{SUFFIX}", f"sp_crm_{SUFFIX}"
SCHEMA, TABLE = f"crm_{SUFFIX}", f"people_{SUFFIX}"
SECRET = "zz-ssn-in-clear-zz"


@pytest.fixture(scope="module")
def proxy(pg: PgServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    for role in (APP, CRM_USER):
        pg.execute(f"create role {role} login")
    pg.execute(
        f"create schema {SCHEMA};"
        f"create table public.{TABLE} (id int, name text);"
        f"insert into public.{TABLE} values (1, 'public row');"
        f"create table {SCHEMA}.{TABLE} (id int, name text, ssn text);"
        f"insert into {SCHEMA}.{TABLE} values (7, 'crm row', '{SECRET}');"
        f"grant usage on schema {SCHEMA} to {APP}, {CRM_USER};"
        f"grant select on public.{TABLE}, {SCHEMA}.{TABLE} to {APP}, {CRM_USER};"
        f"alter role {CRM_USER} set search_path = {SCHEMA}, public"
    )
    tmp = tmp_path_factory.mktemp("search_path")
    pack = tmp / "pack.yaml"
    pack.write_text(yaml.safe_dump({"policy": {
        "tags": {f"{SCHEMA}.{TABLE}.ssn": {"sensitivity": "pii"}},
        "rules": [{"name": "mask-pii", "when": {"tags": {"sensitivity": "pii"}},
                   "action": "mask", "mask": "redact"}],
    }}))  # fmt: skip
    proc = start_proxy(tmp, pg, {"policy": {"packs": [str(pack)]}})
    yield proc
    proc.stop()
    pg.execute(f"drop schema {SCHEMA} cascade; drop table public.{TABLE}")
    for role in (APP, CRM_USER):
        pg.execute(f"drop owned by {role}; drop role {role}")


def _rows(conn: psycopg.Connection, sql: str) -> list[tuple]:
    return conn.execute(sql).fetchall()


def _no_clear(rows: list[tuple]) -> None:
    assert rows, "expected rows"
    assert all(SECRET not in str(value) for row in rows for value in row), rows


def test_the_default_path_reads_the_public_table_unchanged(proxy: ProxyProcess) -> None:
    with psycopg.connect(proxy.dsn(user=APP), autocommit=True) as conn:
        assert _rows(conn, f"SELECT * FROM {TABLE}") == [(1, "public row")]


def test_set_search_path_masks_the_table_it_now_names(proxy: ProxyProcess) -> None:
    with psycopg.connect(proxy.dsn(user=APP), autocommit=True) as conn:
        conn.execute(f"SET search_path TO {SCHEMA}, public")
        rows = _rows(conn, f"SELECT * FROM {TABLE}")
        _no_clear(rows)
        assert rows[0][:2] == (7, "crm row")
        _no_clear(_rows(conn, f"SELECT ssn FROM {TABLE}"))
        conn.execute("RESET search_path")
        assert _rows(conn, f"SELECT * FROM {TABLE}") == [(1, "public row")]


def test_a_role_default_path_is_read_with_the_catalog(proxy: ProxyProcess) -> None:
    with psycopg.connect(proxy.dsn(user=CRM_USER), autocommit=True) as conn:
        rows = _rows(conn, f"SELECT * FROM {TABLE}")
        _no_clear(rows)
        assert rows[0][:2] == (7, "crm row")


def test_a_startup_option_sets_the_path(proxy: ProxyProcess) -> None:
    dsn = proxy.dsn(user=APP)
    with psycopg.connect(dsn, autocommit=True, options=f"-c search_path={SCHEMA}") as conn:
        _no_clear(_rows(conn, f"SELECT * FROM {TABLE}"))


def _never_clear(conn: psycopg.Connection, sql: str) -> None:
    """`sql` is either refused by policy or answered without the clear value."""
    try:
        rows = _rows(conn, sql)
    except psycopg.errors.InsufficientPrivilege as exc:
        assert "search_path" in str(exc)
        return
    _no_clear(rows)


def test_a_path_the_proxy_cannot_follow_never_shows_clear_values(proxy: ProxyProcess) -> None:
    with psycopg.connect(proxy.dsn(user=APP)) as conn:  # a transaction block: may roll back
        conn.execute(f"SET search_path TO {SCHEMA}")
        _never_clear(conn, f"SELECT * FROM {TABLE}")
        conn.rollback()
    with psycopg.connect(proxy.dsn(user=APP), autocommit=True) as conn:
        _never_clear(conn, f"SET search_path TO {SCHEMA}; SELECT * FROM {TABLE}")
        conn.execute(f"SELECT set_config('search_path', '{SCHEMA}', false)")
        _never_clear(conn, f"SELECT * FROM {TABLE}")
        # A change the proxy can follow makes the path known again.
        conn.execute(f"SET search_path = {SCHEMA}")
        rows = _rows(conn, f"SELECT * FROM {TABLE}")
        _no_clear(rows)
        assert rows[0][:2] == (7, "crm row")


def test_a_rolled_back_change_is_not_taken(proxy: ProxyProcess) -> None:
    with psycopg.connect(proxy.dsn(user=APP)) as conn:
        conn.execute(f"SET search_path TO {SCHEMA}")
        conn.rollback()
        conn.autocommit = True
        _never_clear(conn, f"SELECT * FROM {TABLE}")
        assert _rows(conn, "SHOW search_path")[0][0] == '"$user", public'
