"""psql and pgbench through the proxy, unchanged."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.fixtures.fix_pg import PgServer, run
from tests.fixtures.fix_proxy import ProxyProcess


def psql(proxy: ProxyProcess, *args: str) -> str:
    out = run(["psql", "-X", "-v", "ON_ERROR_STOP=1", "-At", proxy.dsn(), *args])
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_psql_command(proxy: ProxyProcess) -> None:
    assert psql(proxy, "-c", "select 40 + 2").strip() == "42"


def test_psql_script_with_many_statements(proxy: ProxyProcess, tmp_path: Path) -> None:
    script = tmp_path / "script.sql"
    script.write_text(
        "create table t_script (id int primary key, name text);\n"
        "insert into t_script values (1, 'a'), (2, 'b');\n"
        "begin; update t_script set name = 'c' where id = 2; commit;\n"
        "select string_agg(name, ',' order by id) from t_script; select 1; select 2;\n"
        "drop table t_script;\n"
    )
    lines = psql(proxy, "-f", str(script)).splitlines()
    assert lines == ["CREATE TABLE", "INSERT 0 2", "BEGIN", "UPDATE 1", "COMMIT",
                     "a,c", "1", "2", "DROP TABLE"]  # fmt: skip


def test_psql_multi_statement_query_string(proxy: ProxyProcess) -> None:
    # One Query message carrying three statements: three results, one ReadyForQuery.
    out = psql(proxy, "-c", "select 1; select 2; select 3")
    assert out.split() == ["1", "2", "3"]


def test_psql_copy_in_and_out(proxy: ProxyProcess, tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text("".join(f'{i},name {i},"quoted, {i}"\n' for i in range(5000)))
    dst = tmp_path / "out.csv"
    psql(proxy, "-c", "create table t_copy (id int, name text, note text)")
    try:
        psql(proxy, "-c", f"\\copy t_copy from '{src}' with (format csv)")
        assert psql(proxy, "-c", "select count(*) from t_copy").strip() == "5000"
        psql(proxy, "-c", f"\\copy (select * from t_copy order by id) to '{dst}' with (format csv)")
        assert dst.read_text() == src.read_text()
    finally:
        psql(proxy, "-c", "drop table t_copy")


def test_psql_errors_keep_the_session_usable(proxy: ProxyProcess) -> None:
    out = run(["psql", "-X", "-At", proxy.dsn(), "-c", "select 1/0", "-c", "select 'alive'"])
    assert "division by zero" in out.stderr
    assert out.stdout.strip() == "alive"


@pytest.fixture(scope="module")
def pgbench_db(proxy: ProxyProcess) -> ProxyProcess:
    out = run(["pgbench", "-i", "-s", "1", "-q", proxy.dsn()])
    assert out.returncode == 0, out.stderr
    return proxy


@pytest.mark.parametrize("mode", ["simple", "extended", "prepared"])
def test_pgbench_modes_have_no_failed_transactions(pgbench_db: ProxyProcess, mode: str) -> None:
    out = run(["pgbench", "-M", mode, "-c", "4", "-j", "2", "-T", "3", pgbench_db.dsn()])
    assert out.returncode == 0, out.stderr
    processed = int(re.search(r"number of transactions actually processed: (\d+)", out.stdout)[1])
    failed = re.search(r"number of failed transactions: (\d+)", out.stdout)
    assert processed > 100
    assert failed is None or failed[1] == "0"


def test_pgbench_select_only_prepared(pgbench_db: ProxyProcess, pg: PgServer) -> None:
    out = run(["pgbench", "-S", "-M", "prepared", "-c", "8", "-T", "2", pgbench_db.dsn()])
    assert out.returncode == 0, out.stderr
    assert "number of failed transactions: 0" in out.stdout
