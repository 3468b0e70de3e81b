"""psycopg 3 through the proxy: pipeline mode, COPY, server-side cursors, notifies, transactions."""

from __future__ import annotations

import psycopg
import pytest

from tests.fixtures.fix_proxy import ProxyProcess


@pytest.fixture
def conn(proxy: ProxyProcess):
    with psycopg.connect(proxy.dsn()) as c:
        yield c


def test_pipeline_mode(conn: psycopg.Connection) -> None:
    conn.autocommit = True
    conn.execute("create temp table t_pipe (id int primary key, v text)")
    with conn.pipeline():
        cur = conn.cursor()
        for i in range(500):
            cur.execute("insert into t_pipe values (%s, %s)", (i, f"v{i}"))
        results = [conn.execute("select count(*) from t_pipe where id < %s", (n,))
                   for n in (10, 100)]  # fmt: skip
    assert [r.fetchone()[0] for r in results] == [10, 100]


def test_pipeline_error_aborts_only_its_batch(conn: psycopg.Connection) -> None:
    conn.autocommit = True
    with pytest.raises(psycopg.errors.DivisionByZero), conn.pipeline():
        conn.execute("select 1")
        conn.execute("select 1/0")
    assert conn.execute("select 'ok'").fetchone() == ("ok",)


def test_copy_both_directions(conn: psycopg.Connection) -> None:
    conn.execute("create temp table t_copy (id int, payload text)")
    with conn.cursor().copy("copy t_copy from stdin") as copy:
        for i in range(10000):
            copy.write_row((i, f"row {i}\twith tab"))
    with conn.cursor().copy("copy (select * from t_copy order by id) to stdout") as copy:
        rows = list(copy.rows())
    assert len(rows) == 10000 and rows[9999] == ("9999", "row 9999\twith tab")


def test_binary_copy(conn: psycopg.Connection) -> None:
    conn.execute("create temp table t_bin (id int8, data bytea)")
    with conn.cursor().copy("copy t_bin from stdin (format binary)") as copy:
        copy.set_types(["int8", "bytea"])
        for i in range(1000):
            copy.write_row((i, bytes([i % 256]) * 100))
    assert conn.execute("select sum(length(data)) from t_bin").fetchone() == (100000,)


def test_server_side_cursor(conn: psycopg.Connection) -> None:
    with conn.transaction(), conn.cursor(name="big") as cur:
        cur.itersize = 1000
        cur.execute("select g from generate_series(1, 50000) g")
        total = sum(row[0] for row in cur)
    assert total == 50000 * 50001 // 2


def test_notifies(proxy: ProxyProcess) -> None:
    with psycopg.connect(proxy.dsn(), autocommit=True) as listener, \
            psycopg.connect(proxy.dsn(), autocommit=True) as sender:  # fmt: skip
        listener.execute("listen sqlx_chan")
        sender.execute("notify sqlx_chan, 'payload-1'")
        got = next(listener.notifies(timeout=5))
        assert (got.channel, got.payload) == ("sqlx_chan", "payload-1")


def test_autocommit_and_transactions(proxy: ProxyProcess, conn: psycopg.Connection) -> None:
    conn.execute("create table if not exists t_tx_ps (v int)")
    conn.commit()
    try:
        with conn.transaction():
            conn.execute("insert into t_tx_ps values (1)")
        with pytest.raises(psycopg.errors.UniqueViolation), conn.transaction():
            conn.execute("insert into t_tx_ps values (2)")
            conn.execute("create unique index t_tx_ps_u on t_tx_ps (v)")
            conn.execute("insert into t_tx_ps values (2)")
        with psycopg.connect(proxy.dsn(), autocommit=True) as other:
            assert other.execute("select array_agg(v) from t_tx_ps").fetchone() == ([1],)
    finally:
        conn.rollback()
        conn.execute("drop table t_tx_ps")
        conn.commit()


def test_prepared_statements_server_side(conn: psycopg.Connection) -> None:
    conn.prepare_threshold = 0
    for i in range(5):
        assert conn.execute("select %s::int + 1", (i,), prepare=True).fetchone() == (i + 1,)
