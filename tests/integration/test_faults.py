"""Bad input and broken peers: the right SQLSTATE, nothing lost, everyone else served."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import threading
import time

import asyncpg
import psycopg
import pytest

from sqlx.proxy.embedded import client_binary, free_port
from sqlx.proxy.pg import codec
from tests.fixtures.fix_pg import PgServer
from tests.fixtures.fix_proxy import ProxyProcess, start_proxy
from tests.fixtures.raw import RawClient, error_codes


@pytest.fixture
def raw(proxy: ProxyProcess, pg: PgServer):
    client = RawClient(proxy.host, proxy.port)
    client.startup(pg.user, pg.database)
    yield client
    client.close()


def _still_serving(proxy: ProxyProcess) -> None:
    with psycopg.connect(proxy.dsn()) as conn:
        assert conn.execute("select 'served'").fetchone() == ("served",)


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (b"Q\x00\x00\x00\x02", "invalid message length 2"),
        (b"z\x00\x00\x00\x04", "invalid message type 'z'"),
        (b"\x01\x00\x00\x00\x04", "invalid message type 0x01"),
    ],
)
def test_malformed_frame_gets_08p01_and_others_are_unaffected(
    proxy: ProxyProcess, raw: RawClient, frame: bytes, message: str
) -> None:
    with psycopg.connect(proxy.dsn()) as bystander:
        bystander.execute("select 1")
        raw.send(frame)
        replies = raw.read_all()  # the proxy closes this client after the error
        assert error_codes(replies) == ["08P01"]
        assert message.encode() in replies[-1][1]
        assert bystander.execute("select 'unaffected'").fetchone() == ("unaffected",)


def test_unsupported_protocol_version_gets_08p01(proxy: ProxyProcess) -> None:
    client = RawClient(proxy.host, proxy.port)
    client.send(struct.pack("!II", 9, 2 << 16) + b"\x00")
    replies = client.read_all()
    assert error_codes(replies) == ["08P01"]
    assert b"unsupported frontend protocol 2.0" in replies[0][1]
    _still_serving(proxy)


def test_oversized_frame_gets_08p01(pg: PgServer, tmp_path) -> None:
    p = start_proxy(tmp_path, pg, {"proxy": {"max_message_bytes": 65536}})
    try:
        client = RawClient(p.host, p.port)
        client.startup(pg.user, pg.database)
        client.send(b"Q" + struct.pack("!I", 1 << 20) + b"select ")
        replies = client.read_all()
        assert error_codes(replies) == ["08P01"]
        assert b"over the limit of 65536" in replies[-1][1]
        _still_serving(p)
    finally:
        p.stop()


async def test_upstream_unreachable_gets_08001_naming_it(tmp_path) -> None:
    dead = free_port()
    p = start_proxy(tmp_path, None, upstream_dsn=f"postgresql://x@127.0.0.1:{dead}/db")
    try:
        with pytest.raises(asyncpg.PostgresError) as err:
            await asyncpg.connect(f"postgresql://app@{p.host}:{p.port}/db", ssl=False)
        assert err.value.sqlstate == "08001"
        assert f"127.0.0.1:{dead}" in str(err.value)
    finally:
        assert p.stop() == 0


def test_upstream_dies_mid_session_then_comes_back(owned_pg: PgServer, tmp_path) -> None:
    p = start_proxy(tmp_path, owned_pg)
    try:
        conn = psycopg.connect(p.dsn(), autocommit=True)
        backend = conn.execute("select pg_backend_pid()").fetchone()[0]
        killer = threading.Timer(0.5, os.kill, (backend, signal.SIGKILL))
        killer.start()
        with pytest.raises(psycopg.OperationalError) as err:
            conn.execute("select pg_sleep(10)")
        assert err.value.sqlstate == "08006"
        conn.close()
        owned_pg.cluster.restart()
        _still_serving(p)
        owned_pg.cluster.stop()
        with pytest.raises(psycopg.OperationalError, match="could not connect to upstream"):
            psycopg.connect(p.dsn())
        owned_pg.cluster.start()
        _still_serving(p)
        assert p.proc.poll() is None
    finally:
        if not (owned_pg.cluster.datadir / "postmaster.pid").exists():
            owned_pg.cluster.start()
        p.stop()


def test_client_killed_mid_transaction_leaves_no_lock(proxy: ProxyProcess) -> None:
    with psycopg.connect(proxy.dsn(), autocommit=True) as admin:
        admin.execute("create table if not exists t_lock (id int primary key, v int)")
        admin.execute("insert into t_lock values (1, 0) on conflict do nothing")
        victim = subprocess.Popen(
            [client_binary("psql"), "-X", proxy.dsn(application_name="victim")],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        victim.stdin.write(b"begin;\nupdate t_lock set v = 1 where id = 1;\n")
        victim.stdin.flush()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            state = admin.execute(
                "select state from pg_stat_activity where application_name = 'victim'"
            ).fetchone()
            if state and state[0] == "idle in transaction":
                break
            time.sleep(0.05)
        else:
            pytest.fail("the victim never held its lock")
        victim.kill()
        victim.wait()
        admin.execute("set lock_timeout = '5s'")
        admin.execute("update t_lock set v = 2 where id = 1")
        assert admin.execute("select v from t_lock").fetchone() == (2,)
        admin.execute("drop table t_lock")


def test_terminate_closes_cleanly(proxy: ProxyProcess, raw: RawClient) -> None:
    raw.send(codec.message(codec.FE.TERMINATE))
    assert raw.read_all() == []
    _still_serving(proxy)
