"""The proxy process: config errors, SIGHUP reload, SIGTERM drain, embedded server, health."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import psycopg
import pytest
import yaml

from sqlx.proxy.embedded import free_port
from tests.fixtures.fix_pg import PgServer
from tests.fixtures.fix_proxy import ProxyProcess, start_proxy, wait_listening


def _wait_log(p: ProxyProcess, text: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in p.log():
            return
        time.sleep(0.05)
    pytest.fail(f"{text!r} not in the proxy log:\n{p.log()}")


def test_unknown_config_key_is_an_error_naming_its_path(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("proxy:\n  lisen: 127.0.0.1:1\n")
    out = subprocess.run([sys.executable, "-m", "sqlx.cli.main", "proxy", "--config", str(bad)],
                         capture_output=True, text=True, timeout=30)  # fmt: skip
    assert out.returncode == 2
    assert "proxy.lisen: Extra inputs are not permitted" in out.stderr


def test_env_overrides_config(pg: PgServer, tmp_path) -> None:
    port = free_port()
    env_proc = subprocess.Popen(
        [sys.executable, "-m", "sqlx.cli.main", "proxy", "--upstream", pg.upstream_dsn(),
         "--data-dir", str(tmp_path), "--http-listen", f"127.0.0.1:{free_port()}"],
        env={"PATH": "/usr/bin:/bin", "SQLX_PROXY__LISTEN": f"127.0.0.1:{port}"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        line = ""
        while '"listening"' not in line:  # start-up lines (the model served) come first
            line = env_proc.stdout.readline()
            assert line, "the proxy exited"
        assert f"127.0.0.1:{port}" in line
    finally:
        env_proc.terminate()
        assert env_proc.wait(20) == 0


def test_sighup_rejects_a_bad_config_and_keeps_serving(pg: PgServer, tmp_path) -> None:
    p = start_proxy(tmp_path, pg)
    try:
        with psycopg.connect(p.dsn(), autocommit=True) as conn:
            p.config_path.write_text("proxy:\n  max_message_bytes: -5\n")
            p.signal(signal.SIGHUP)
            _wait_log(p, "config reload rejected")
            assert "proxy.max_message_bytes" in p.log()
            assert conn.execute("select 'same connection'").fetchone() == ("same connection",)
            p.config_path.write_text(yaml.safe_dump({"proxy": {"max_message_bytes": 2048}}))
            p.signal(signal.SIGHUP)
            _wait_log(p, "config reloaded")
            assert conn.execute("select 'still'").fetchone() == ("still",)
        # The new limit holds for connections made after the reload.
        with (
            psycopg.connect(p.dsn(), autocommit=True) as conn,
            pytest.raises(psycopg.OperationalError, match="over the limit of 2048"),
        ):
            conn.execute("select %s::text", ("x" * 5000,))
    finally:
        p.stop()


def test_sigterm_lets_in_flight_statements_finish(pg: PgServer, tmp_path) -> None:
    p = start_proxy(tmp_path, pg)
    result: list[object] = []
    with psycopg.connect(p.dsn(), autocommit=True) as conn:

        def slow() -> None:
            try:
                result.append(conn.execute("select pg_sleep(1.5), 'done'").fetchone()[1])
            except psycopg.Error as exc:
                result.append(exc)

        t = threading.Thread(target=slow)
        t.start()
        time.sleep(0.4)
        p.signal(signal.SIGTERM)
        time.sleep(0.3)
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(p.dsn(), connect_timeout=2)
        t.join()
        assert result == ["done"]
        assert p.proc.wait(timeout=15) == 0


def test_sigterm_drain_timeout_ends_open_transactions(pg: PgServer, tmp_path) -> None:
    p = start_proxy(tmp_path, pg, {"proxy": {"drain_timeout_s": 0.5}})
    conn = psycopg.connect(p.dsn())
    conn.execute("select 1")  # a transaction is now open
    p.signal(signal.SIGTERM)
    assert p.proc.wait(timeout=15) == 0
    with pytest.raises(psycopg.OperationalError):
        conn.execute("select 1")
    conn.close()


def test_health_endpoint(proxy: ProxyProcess) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{proxy.http_port}/healthz", timeout=5) as r:
        body = json.load(r)
    assert r.status == 200 and body["upstream_reachable"] is True


def test_embedded_postgres_when_no_upstream(tmp_path) -> None:
    p = start_proxy(tmp_path, None, wait=False)
    try:
        wait_listening(p, timeout=120)
        dsn = f"postgresql://postgres@{p.host}:{p.port}/postgres?sslmode=disable"
        with psycopg.connect(dsn) as conn:
            assert conn.execute("select current_setting('data_directory')").fetchone()[0] \
                == str(tmp_path / "var" / "pg")  # fmt: skip
        assert "connect: psql -h 127.0.0.1" in p.log()
    finally:
        assert p.stop() == 0
    assert not (tmp_path / "var" / "pg" / "postmaster.pid").exists()
