"""Masks keep each column's type: a driver decodes a masked result as it decodes the real one.

The proxy reads column types with the catalog. A masked string column shows its
mask in its own type (`varchar(8)`, a domain's base type); `redact` and `null`
of any other type give NULL of that type, never text in an integer column.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
from collections.abc import Iterator

import asyncpg
import psycopg
import pytest
import yaml

from tests.fixtures.fix_pg import PgServer
from tests.fixtures.fix_proxy import ProxyProcess, start_proxy

SUFFIX = secrets.token_hex(3)
APP = f"mt_app_{SUFFIX}"
TABLE = f"staff_{SUFFIX}"
DOMAIN = f"code_{SUFFIX}"
SELECT = f"SELECT id, amount, code, born, tagged, note FROM {TABLE}"


@pytest.fixture(scope="module")
def proxy(pg: PgServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    pg.execute(
        f"create role {APP} login;"
        f"create domain {DOMAIN} as varchar(12) check (value like 'C-%');"
        f"create table {TABLE} (id int, amount numeric(10, 2), code varchar(8), born date,"
        f" tagged {DOMAIN}, note text);"
        f"insert into {TABLE} values (1, 1234.50, 'ABCDEFGH', '1990-05-17', 'C-12345', 'n');"
        f"grant select on {TABLE} to {APP}"
    )
    tmp = tmp_path_factory.mktemp("mask_types")
    pack = tmp / "pack.yaml"
    tags = {f"public.{TABLE}.{c}": {"sensitivity": "pii"}
            for c in ("amount", "code", "born", "tagged")}  # fmt: skip
    tags[f"public.{TABLE}.note"] = {"sensitivity": "hashed"}
    pack.write_text(yaml.safe_dump({"policy": {"tags": tags, "rules": [
        {"name": "redact-pii", "when": {"tags": {"sensitivity": "pii"}}, "action": "mask",
         "mask": "redact"},
        {"name": "hash-notes", "when": {"tags": {"sensitivity": "hashed"}}, "action": "mask",
         "mask": "hash"},
    ]}}))  # fmt: skip
    proc = start_proxy(tmp, pg, {"policy": {"packs": [str(pack)]}})
    yield proc
    proc.stop()
    pg.execute(f"drop table {TABLE}; drop domain {DOMAIN}; drop owned by {APP}; drop role {APP}")


def test_masked_columns_keep_their_types(proxy: ProxyProcess, pg: PgServer) -> None:
    with psycopg.connect(proxy.dsn(user=APP), autocommit=True) as conn:
        cur = conn.execute(SELECT)
        row = cur.fetchone()
        masked_types = [d.type_code for d in cur.description]
        cur = conn.execute(f"SELECT * FROM {TABLE}")
        assert cur.fetchone() == row
    with psycopg.connect(pg.dsn(), autocommit=True) as direct:
        cur = direct.execute(SELECT)
        real_types = [d.type_code for d in cur.description]
    assert row is not None
    assert row[:5] == (1, None, "****", None, "****")
    assert len(row[5]) == 64 and row[5] != "n"  # a sha-256 in hex, as text
    # The domain column is sent as its base type; every other column as it is.
    varchar = real_types[2]
    assert masked_types == [*real_types[:4], varchar, real_types[5]]


def test_asyncpg_decodes_masked_rows(proxy: ProxyProcess) -> None:
    async def fetch() -> asyncpg.Record:
        conn = await asyncpg.connect(proxy.dsn(user=APP))
        try:
            stmt = await conn.prepare(f"{SELECT} WHERE id = $1")
            return await stmt.fetchrow(1)
        finally:
            await conn.close()

    row = asyncio.run(fetch())
    assert (row["id"], row["amount"], row["code"], row["born"]) == (1, None, "****", None)
    assert not isinstance(row["born"], dt.date)
