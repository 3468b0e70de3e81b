"""asyncpg through the proxy: prepared statements, COPY, notifications, cancel, binary types."""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import uuid

import asyncpg
import pytest

from tests.fixtures.fix_proxy import ProxyProcess


@pytest.fixture
async def conn(proxy: ProxyProcess):
    c = await asyncpg.connect(proxy.dsn())
    yield c
    await c.close()


async def test_prepared_statement_reused(conn: asyncpg.Connection) -> None:
    stmt = await conn.prepare("select $1::int * 2 as doubled")
    assert [await stmt.fetchval(i) for i in range(5)] == [0, 2, 4, 6, 8]
    assert stmt.get_attributes()[0].name == "doubled"


async def test_binary_types_round_trip(conn: asyncpg.Connection) -> None:
    values = (
        uuid.uuid4(), decimal.Decimal("12345.678901"), dt.datetime(2024, 2, 29, 12, 0,
        tzinfo=dt.UTC), b"\x00\xffbytes", [1, 2, 3], {"k": [1, None]}.__repr__(), 2**62,
    )  # fmt: skip
    row = await conn.fetchrow(
        "select $1::uuid, $2::numeric, $3::timestamptz, $4::bytea, $5::int[], $6::text, $7::int8",
        *values,
    )
    assert tuple(row) == values


async def test_copy_records_to_table(conn: asyncpg.Connection) -> None:
    await conn.execute("create temp table t_records (id int, name text, at timestamptz)")
    now = dt.datetime.now(dt.UTC)
    records = [(i, f"n{i}", now) for i in range(20000)]
    result = await conn.copy_records_to_table("t_records", records=records)
    assert result == "COPY 20000"
    assert await conn.fetchval("select count(distinct name) from t_records") == 20000


async def test_listen_notify(proxy: ProxyProcess, conn: asyncpg.Connection) -> None:
    got: asyncio.Queue[str] = asyncio.Queue()
    await conn.add_listener("sqlx_events", lambda *args: got.put_nowait(args[3]))
    other = await asyncpg.connect(proxy.dsn())
    try:
        await other.execute("select pg_notify('sqlx_events', 'hello through the proxy')")
        assert await asyncio.wait_for(got.get(), 5) == "hello through the proxy"
    finally:
        await other.close()


async def test_cancellation_through_timeout(conn: asyncpg.Connection) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(asyncio.TimeoutError):
        await conn.execute("select pg_sleep(30)", timeout=0.5)
    assert loop.time() - start < 5
    # The cancel reached the right backend and the connection is usable again.
    assert await conn.fetchval("select 'still here'") == "still here"


async def test_million_row_result(conn: asyncpg.Connection) -> None:
    rows = await conn.fetch("select g, md5(g::text) from generate_series(1, 1000000) g")
    assert len(rows) == 1_000_000
    assert rows[-1][0] == 1_000_000


async def test_transaction_rollback(conn: asyncpg.Connection) -> None:
    await conn.execute("create temp table t_tx (v int)")
    with pytest.raises(asyncpg.UniqueViolationError):
        async with conn.transaction():
            await conn.execute("insert into t_tx values (1)")
            await conn.execute("create unique index on t_tx (v)")
            await conn.execute("insert into t_tx values (1)")
    assert await conn.fetchval("select count(*) from t_tx") == 0
