"""Auto-prepare against a real server: the same answers as direct, byte for byte.

Each statement of the fixture runs once, then 50 times, on one connection
through the proxy and on one connection straight to the server; what the
client library sees of every execution (command tag, column names, types,
type modifiers, source table and column, values, and for errors the
SQLSTATE, message, position and context) must be the same. The server's own
catalog (`pg_prepared_statements`) shows the proxy really ran them prepared.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator

import pytest
from psycopg import pq

from tests.fixtures.fix_pg import PgServer
from tests.fixtures.fix_proxy import ProxyProcess, start_proxy

SETUP = """
DROP TABLE IF EXISTS ap_items;
CREATE TABLE ap_items (id int PRIMARY KEY, big bigint, price numeric(10,2), name text,
                       code varchar(8), born date, "Odd Name" text, flag boolean);
"""
ROWS = """
TRUNCATE ap_items;
INSERT INTO ap_items VALUES
  (1, 9000000000, 10.50, 'alpha', 'A1', '2020-01-01', 'o''ne', true),
  (2, -5, -0.25, 'it''s', 'B2', '1999-12-31', NULL, false),
  (3, NULL, NULL, 'back\\slash', NULL, NULL, 'three', NULL);
"""

# Statements a simple-protocol client sends, with every literal form the proxy
# turns into a parameter (and some it must leave alone).
FIXTURE = [
    "SELECT * FROM ap_items WHERE id = 1",
    "SELECT id, big FROM ap_items WHERE big = 9000000000",
    "SELECT id FROM ap_items WHERE big > -6 ORDER BY 1",
    "SELECT price * 2, price + 1.5, 1e3 FROM ap_items WHERE price >= -0.25 ORDER BY id",
    "SELECT name || 'x', length('héllo') FROM ap_items WHERE name = 'it''s'",
    "SELECT name FROM ap_items WHERE name = 'back\\slash'",
    "SELECT E'tab\\there', name FROM ap_items WHERE id = 3",
    "SELECT born + 1, date '2021-02-03' FROM ap_items WHERE born > '2000-01-01'",
    "SELECT id FROM ap_items WHERE born = '2020-02-30'",
    "SELECT NULL, id FROM ap_items WHERE big IS NULL",
    "SELECT \"Odd Name\" FROM ap_items WHERE \"Odd Name\" = 'o''ne'",
    "SELECT id FROM ap_items WHERE id IN (1, 2, 3) ORDER BY id DESC",
    "SELECT id::text, '42'::int + 1, CAST('7' AS bigint), 'abc'::varchar(2) FROM ap_items "
    "WHERE id = 2",
    "SELECT -2147483648, 2147483648, -9223372036854775808, 00012",
    "SELECT 'abc'::int",
    "SELECT 1 / 0 FROM ap_items WHERE id = 1",
    "SELECT count(*), code FROM ap_items WHERE price < 100 GROUP BY 2 ORDER BY 2",
    "SELECT id FROM ap_items LIMIT 2 OFFSET 1",
    "SELECT nosuch FROM ap_items WHERE id = 1",
    "INSERT INTO ap_items (id, name) VALUES (100, 'new') ON CONFLICT (id) DO NOTHING",
    "UPDATE ap_items SET price = price + 0.01 WHERE id = 1 RETURNING price",
    "UPDATE ap_items SET code = 'toolongvalue' WHERE id = 2",
    "DELETE FROM ap_items WHERE id = 100 RETURNING name",
    "INSERT INTO ap_items (id) VALUES (1)",
]

FIELDS = (pq.DiagnosticField.SQLSTATE, pq.DiagnosticField.MESSAGE_PRIMARY,
          pq.DiagnosticField.MESSAGE_DETAIL, pq.DiagnosticField.STATEMENT_POSITION,
          pq.DiagnosticField.CONTEXT)  # fmt: skip


def _seen(result: pq.PGresult) -> tuple:
    """What a client library sees of one result."""
    if result.status == pq.ExecStatus.FATAL_ERROR:
        return ("error", *(result.error_field(f) for f in FIELDS))
    columns = [(result.fname(i), result.ftype(i), result.fmod(i), result.ftable(i),
                result.ftablecol(i), result.fformat(i)) for i in range(result.nfields)]  # fmt: skip
    rows = [[result.get_value(r, c) for c in range(result.nfields)]
            for r in range(result.ntuples)]  # fmt: skip
    return (result.command_status, columns, rows)


def _connect(dsn: str) -> pq.PGconn:
    conn = pq.PGconn.connect(dsn.encode())
    assert conn.status == pq.ConnStatus.OK, conn.error_message
    return conn


def _run_all(conn: pq.PGconn, times: int, in_transaction: bool) -> list[tuple]:
    seen = []
    for sql in FIXTURE:
        for _ in range(times):
            if in_transaction:
                conn.exec_(b"BEGIN")
            seen.append((sql, _seen(conn.exec_(sql.encode()))))
            if in_transaction:
                conn.exec_(b"ROLLBACK")
    return seen


@pytest.fixture(scope="module")
def ap_proxy(pg: PgServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    pg.execute(SETUP + ROWS)
    proxy = start_proxy(tmp_path_factory.mktemp("autoprepare"), pg,
                        {"aif": {"auto_prepare": {"threshold": 2}}})  # fmt: skip
    yield proxy
    proxy.stop()


@pytest.mark.parametrize("in_transaction", [False, True], ids=["autocommit", "transaction"])
@pytest.mark.parametrize("times", [1, 50])
def test_prepared_executions_answer_as_direct(ap_proxy: ProxyProcess, pg: PgServer, times: int,
                                              in_transaction: bool) -> None:  # fmt: skip
    pg.execute(ROWS)  # each run starts from the same rows
    direct = _run_all(_connect(pg.dsn()), times, in_transaction)
    pg.execute(ROWS)
    proxied_conn = _connect(ap_proxy.dsn())
    proxied = _run_all(proxied_conn, times, in_transaction)
    for (sql, want), (_, got) in zip(direct, proxied, strict=True):
        assert got == want, sql
    if times > 1:
        names = proxied_conn.exec_(b"SELECT name, statement FROM pg_prepared_statements")
        prepared = {names.get_value(r, 1).decode() for r in range(names.ntuples)}
        assert "SELECT * FROM ap_items WHERE id = $1" in prepared
        assert "SELECT id FROM ap_items WHERE id IN ($1, $2, $3) ORDER BY id DESC" in prepared
        # A statement of a type-name literal keeps it; a backslash string is not cut.
        assert not any("back" in text or "E'" in text for text in prepared)


@pytest.mark.parametrize("in_transaction", [False, True], ids=["autocommit", "transaction"])
def test_a_bad_value_for_a_prepared_statement_fails_as_the_literal_does(
        ap_proxy: ProxyProcess, pg: PgServer, in_transaction: bool) -> None:  # fmt: skip
    sequence = [b"BEGIN"] if in_transaction else []
    sequence += [f"SELECT id FROM ap_items WHERE born = '2020-02-0{d}'".encode() for d in (1, 2, 3)]
    sequence += [b"SELECT id FROM ap_items WHERE born = '2020-02-30'",
                 b"SELECT id FROM ap_items WHERE id = 1 AND name = 'x' AND big = 'many'",
                 b"SELECT id FROM ap_items WHERE born = '2020-02-04'"]  # fmt: skip
    if in_transaction:
        sequence.append(b"ROLLBACK")
    answers = []
    for dsn in (pg.dsn(), ap_proxy.dsn()):
        conn = _connect(dsn)
        # The second statement is prepared (with good values) before its bad one runs.
        for good in (1, 2, 3):
            conn.exec_(f"SELECT id FROM ap_items WHERE id = {good} AND name = 'x' AND big = {good}"
                       .encode())  # fmt: skip
        answers.append([_seen(conn.exec_(sql)) for sql in sequence])
    assert answers[1] == answers[0]
    errors = [a for a in answers[1] if a[0] == "error"]
    assert errors[0][1] == b"22008" and errors[0][4] is not None  # with the literal's position


def test_a_stale_statement_is_run_again_as_it_came(ap_proxy: ProxyProcess, pg: PgServer) -> None:
    conn = _connect(ap_proxy.dsn())
    sql = b"SELECT * FROM ap_items WHERE id = 2"
    for _ in range(3):
        assert conn.exec_(sql).nfields == 8
    pg.execute("ALTER TABLE ap_items ADD COLUMN extra int")
    try:
        result = conn.exec_(sql)  # the prepared statement's result type changed
        assert result.status == pq.ExecStatus.TUPLES_OK, result.error_message
        assert result.nfields == 9
        assert conn.exec_(sql).nfields == 9
    finally:
        pg.execute("ALTER TABLE ap_items DROP COLUMN extra")


def test_discard_all_drops_the_proxys_statements_too(ap_proxy: ProxyProcess) -> None:
    conn = _connect(ap_proxy.dsn())
    sql = b"SELECT name FROM ap_items WHERE id = 1"
    for _ in range(3):
        assert conn.exec_(sql).get_value(0, 0) == b"alpha"
    assert conn.exec_(b"DISCARD ALL").status == pq.ExecStatus.COMMAND_OK
    for _ in range(3):
        result = conn.exec_(sql)
        assert result.status == pq.ExecStatus.TUPLES_OK, result.error_message
        assert result.get_value(0, 0) == b"alpha"


def test_each_template_is_explained_once_without_literals(ap_proxy: ProxyProcess) -> None:
    conn = _connect(ap_proxy.dsn())
    for i in range(5):
        conn.exec_(f"SELECT code FROM ap_items WHERE name = 'secret-{i}-zz'".encode())
    log = ap_proxy.logfile.parent / "var" / "explanations.jsonl"
    text = "SELECT code FROM ap_items WHERE name = $1"

    def mine() -> list[dict]:
        records = [json.loads(line) for line in log.read_text().splitlines()]
        return [r for r in records if r["decision"] == "auto-prepare"
                and r["evidence"]["text"] == text]  # fmt: skip

    deadline = time.monotonic() + 10
    while not mine() and time.monotonic() < deadline:  # a writer thread appends records
        time.sleep(0.1)
    time.sleep(0.3)  # a second record, were there one, would be there by now
    found = mine()
    assert len(found) == 1
    assert "secret" not in log.read_text()
    assert found[0]["agent"] == "optimizer"


@pytest.mark.parametrize("script", ["-S", "-N"])
def test_pgbench_simple_protocol_has_no_failed_transactions(ap_proxy: ProxyProcess,
                                                            script: str) -> None:  # fmt: skip
    init = subprocess.run(["pgbench", "-i", "-s", "1", "-q", ap_proxy.dsn()],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert init.returncode == 0, init.stderr
    out = subprocess.run(["pgbench", script, "-M", "simple", "-c", "4", "-j", "2", "-T", "3",
                          ap_proxy.dsn()], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "number of failed transactions: 0" in out.stdout
    processed = int(out.stdout.split("number of transactions actually processed: ")[1].split()[0])
    assert processed > 100
    conn = _connect(ap_proxy.dsn())
    for _ in range(3):
        conn.exec_(b"SELECT abalance FROM pgbench_accounts WHERE aid = 17")
    names = conn.exec_(b"SELECT statement FROM pg_prepared_statements")
    texts = {names.get_value(r, 0).decode() for r in range(names.ntuples)}
    assert "SELECT abalance FROM pgbench_accounts WHERE aid = $1" in texts


def test_a_session_reading_backslash_escapes_is_never_cut(ap_proxy: ProxyProcess,
                                                          pg: PgServer) -> None:  # fmt: skip
    answers = []
    for dsn in (pg.dsn(), ap_proxy.dsn()):
        conn = _connect(dsn)
        conn.exec_(b"SET standard_conforming_strings = off")
        answers.append([_seen(conn.exec_(b"SELECT 'a\\'b', 'tab\\there', 5")) for _ in range(5)])
    assert answers[1] == answers[0]
    assert answers[0][0][2] == [[b"a'b", b"tab\there", b"5"]]
