"""Authentication relayed without the proxy knowing passwords; TLS to the proxy; cancel routing."""

from __future__ import annotations

import socket
import struct
import threading
import time

import psycopg
import pytest

from tests.fixtures.fix_pg import PASSWORDS, PgServer, make_cert
from tests.fixtures.fix_proxy import ProxyProcess, start_proxy


def _dsn(proxy: ProxyProcess, user: str, password: str, **params: str) -> str:
    extra = "&".join(f"{k}={v}" for k, v in {"sslmode": "disable", **params}.items())
    return f"postgresql://{user}:{password}@{proxy.host}:{proxy.port}/postgres?{extra}"


@pytest.mark.parametrize("user", ["md5_user", "scram_user", "clear_user"])
def test_correct_password_works(owned_proxy: ProxyProcess, user: str) -> None:
    with psycopg.connect(_dsn(owned_proxy, user, PASSWORDS[user])) as conn:
        assert conn.execute("select current_user").fetchone() == (user,)


@pytest.mark.parametrize("user", ["md5_user", "scram_user", "clear_user"])
async def test_wrong_password_fails_with_28p01_from_the_server(
    owned_proxy: ProxyProcess, user: str
) -> None:
    import asyncpg

    with pytest.raises(asyncpg.InvalidPasswordError) as err:
        await asyncpg.connect(_dsn(owned_proxy, user, "wrong"))
    assert err.value.sqlstate == "28P01"
    assert f'password authentication failed for user "{user}"' in str(err.value)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(_dsn(owned_proxy, user, "wrong"))


async def test_asyncpg_scram(owned_proxy: ProxyProcess) -> None:
    import asyncpg

    conn = await asyncpg.connect(_dsn(owned_proxy, "scram_user", PASSWORDS["scram_user"]))
    assert await conn.fetchval("select current_user") == "scram_user"
    await conn.close()


@pytest.fixture(scope="module")
def tls_proxy(owned_pg: PgServer, tmp_path_factory: pytest.TempPathFactory) -> ProxyProcess:
    tmp = tmp_path_factory.mktemp("tls")
    cert, key = make_cert(tmp)
    config = {"proxy": {"tls": {"cert_file": str(cert), "key_file": str(key)}}}
    p = start_proxy(tmp, owned_pg, config)
    yield p
    p.stop()


def test_tls_from_client_to_proxy(tls_proxy: ProxyProcess) -> None:
    dsn = _dsn(tls_proxy, "scram_user", PASSWORDS["scram_user"], sslmode="require")
    with psycopg.connect(dsn) as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("select current_user").fetchone() == ("scram_user",)


def test_tls_md5_and_large_result(tls_proxy: ProxyProcess) -> None:
    dsn = _dsn(tls_proxy, "md5_user", PASSWORDS["md5_user"], sslmode="require")
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("select repeat('x', 1000) from generate_series(1, 20000)").fetchall()
        assert len(rows) == 20000


def test_proxy_without_tls_answers_n(owned_proxy: ProxyProcess) -> None:
    with pytest.raises(psycopg.OperationalError, match=r"SSL"):
        psycopg.connect(_dsn(owned_proxy, "scram_user", PASSWORDS["scram_user"],
                             sslmode="require"))  # fmt: skip


def test_plaintext_after_ssl_request_is_refused(tls_proxy: ProxyProcess) -> None:
    with socket.create_connection((tls_proxy.host, tls_proxy.port), timeout=5) as s:
        startup = struct.pack("!II", 8, 80877103)
        s.sendall(startup + b"\x00\x00\x00\x08\x00\x03\x00\x00")
        data = s.recv(4096)
    assert b"08P01" in data and b"unencrypted data after SSL request" in data


def test_cancel_returns_57014_fast(owned_proxy: ProxyProcess) -> None:
    with psycopg.connect(_dsn(owned_proxy, "scram_user", PASSWORDS["scram_user"])) as conn:
        timer = threading.Timer(0.5, conn.cancel)
        timer.start()
        start = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled) as err:
            conn.execute("select pg_sleep(30)")
        assert time.monotonic() - start < 5
        assert err.value.sqlstate == "57014"
        conn.rollback()
        assert conn.execute("select 1").fetchone() == (1,)


def test_cancel_with_wrong_key_cancels_nothing(owned_proxy: ProxyProcess) -> None:
    with psycopg.connect(_dsn(owned_proxy, "scram_user", PASSWORDS["scram_user"])) as conn:
        pid = conn.pgconn.backend_pid  # the proxy's own key, not the server's

        def wrong_cancel() -> None:
            time.sleep(0.3)
            with socket.create_connection((owned_proxy.host, owned_proxy.port)) as s:
                secret = 12345
                s.sendall(struct.pack("!IIII", 16, 80877102, pid, secret))
                s.recv(10)

        t = threading.Thread(target=wrong_cancel)
        t.start()
        assert conn.execute("select pg_sleep(1.5), 'finished'").fetchone()[1] == "finished"
        t.join()


def test_backend_pid_seen_by_client_is_the_proxys(owned_proxy: ProxyProcess) -> None:
    with psycopg.connect(_dsn(owned_proxy, "scram_user", PASSWORDS["scram_user"])) as conn:
        server_pid = conn.execute("select pg_backend_pid()").fetchone()[0]
        assert conn.pgconn.backend_pid != server_pid


def _upstream_tls_proxy(owned_pg: PgServer, tmp_path, **params: str) -> ProxyProcess:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    dsn = f"postgresql://postgres@127.0.0.1:{owned_pg.port}/postgres?{query}"
    return start_proxy(tmp_path, owned_pg, upstream_dsn=dsn)


@pytest.mark.parametrize("user", ["md5_user", "scram_user"])
def test_upstream_tls_with_sslmode_require(owned_pg: PgServer, tmp_path, user: str) -> None:
    p = _upstream_tls_proxy(owned_pg, tmp_path, sslmode="require")
    try:
        with psycopg.connect(_dsn(p, user, PASSWORDS[user])) as conn:
            row = conn.execute("select ssl from pg_stat_ssl where pid = pg_backend_pid()")
            assert row.fetchone() == (True,)
    finally:
        p.stop()


def test_upstream_tls_verify_full(owned_pg: PgServer, tmp_path) -> None:
    p = _upstream_tls_proxy(owned_pg, tmp_path / "good", sslmode="verify-full",
                            sslrootcert=owned_pg.extra["cert"])  # fmt: skip
    try:
        with psycopg.connect(_dsn(p, "md5_user", PASSWORDS["md5_user"])) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
    finally:
        p.stop()


async def test_upstream_tls_with_an_unknown_ca_is_refused(owned_pg: PgServer, tmp_path) -> None:
    import asyncpg

    other_ca, _ = make_cert(tmp_path, "other")
    p = _upstream_tls_proxy(owned_pg, tmp_path / "bad", sslmode="verify-ca",
                            sslrootcert=str(other_ca))  # fmt: skip
    try:
        with pytest.raises(asyncpg.PostgresError) as err:
            await asyncpg.connect(_dsn(p, "md5_user", PASSWORDS["md5_user"]))
        assert err.value.sqlstate == "08001"
        assert "TLS handshake failed" in str(err.value)
    finally:
        p.stop()
