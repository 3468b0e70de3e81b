"""The PostgreSQL policy cases that make sense in MySQL, through the MySQL listener.

The pack is the PostgreSQL suite's (mask PII, deny payroll to one user, no
unbounded writes, audit payroll) written for one MariaDB/MySQL database, plus
a row filter. Every case runs over COM_QUERY (PyMySQL) and over server-side
prepared statements (mysql-connector's COM_STMT_PREPARE): the same verdicts,
and no masked value ever reaches a client in clear.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator

import mysql.connector
import pymysql
import pymysql.constants
import pytest
import yaml

from sqlx.proxy.embedded import free_port
from tests.fixtures.fix_mysql import MySqlServer
from tests.fixtures.fix_pg import PgServer
from tests.fixtures.fix_proxy import ProxyProcess, start_proxy

SUFFIX = secrets.token_hex(3)
APP, US, ADMIN = f"app_{SUFFIX}", f"us_{SUFFIX}", f"adm_{SUFFIX}"
PASSWORD = "pw-" + SUFFIX
SECRET = "zz-clear-value-zz"
PHONE = "555-0199-zz"


def _pack(database: str) -> dict:
    return {"policy": {
        "fail_closed": True,
        "tags": {f"{database}.customers.email": {"sensitivity": "pii"}},
        "rules": [
            {"name": "mask-pii", "when": {"tags": {"sensitivity": "pii"},
                                          "except_users": [ADMIN]}, "action": "mask"},
            {"name": "payroll-eu-only", "when": {"tables": ["payroll"], "users": [US]},
             "action": "deny", "reason": "payroll stays with EU staff"},
            {"name": "no-unbounded-delete",
             "when": {"statements": ["DELETE", "UPDATE"], "has_where": False,
                      "except_users": [ADMIN]},
             "action": "deny"},
            {"name": "audit-payroll", "when": {"tables": ["payroll"]}, "action": "audit"},
            {"name": "small-orders", "action": "filter", "predicate": "total < 6",
             "when": {"tables": ["orders"], "users": [APP]}},
        ],
    }}  # fmt: skip


Guarded = tuple[ProxyProcess, int, MySqlServer]


@pytest.fixture(scope="module")
def guarded(pg: PgServer, mysql_server: MySqlServer,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guarded]:  # fmt: skip
    db = mysql_server.database
    for user in (APP, US, ADMIN):
        mysql_server.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{PASSWORD}'")
        mysql_server.execute(f"GRANT ALL ON {db}.* TO '{user}'@'%'")
    for sql in (
        # The phone column is tagged by its comment, read from the server's catalog.
        f"CREATE TABLE {db}.customers (id INT PRIMARY KEY, name VARCHAR(20), Email TEXT, "
        "phone VARCHAR(20) COMMENT 'sqlx: sensitivity=pii')",
        f"INSERT INTO {db}.customers VALUES (1, 'Ann', '{SECRET}', '{PHONE}')",
        f"CREATE TABLE {db}.payroll (id INT, amount DECIMAL(10, 2))",
        f"INSERT INTO {db}.payroll VALUES (1, 10)",
        f"CREATE TABLE {db}.orders (id INT PRIMARY KEY, total DECIMAL(10, 2))",
        f"INSERT INTO {db}.orders VALUES (1, 5), (2, 6)",
        f"CREATE VIEW {db}.contacts AS SELECT id, Email AS address FROM {db}.customers",
        f"CREATE FUNCTION {db}.leak() RETURNS TEXT READS SQL DATA "
        f"RETURN (SELECT MAX(Email) FROM {db}.customers)",
    ):
        mysql_server.execute(sql)
    tmp = tmp_path_factory.mktemp("mysql-policy")
    pack = tmp / "pack.yaml"
    pack.write_text(yaml.safe_dump(_pack(db)))
    port = free_port()
    proxy = start_proxy(tmp, pg, {
        "mysql": {"listen": f"127.0.0.1:{port}",
                  "upstream_dsn": f"mysql://root@{mysql_server.host}:{mysql_server.port}"},
        "policy": {"packs": [str(pack)]},
        "telemetry": {"sampling_ratio": 1.0},
    })  # fmt: skip
    yield proxy, port, mysql_server
    proxy.stop()
    for sql in (
        "DROP VIEW contacts",
        "DROP FUNCTION leak",
        "DROP TABLE customers, payroll, orders",
    ):
        mysql_server.execute(sql)
    for user in (APP, US, ADMIN):
        mysql_server.execute(f"DROP USER '{user}'@'%'")


def _query(g: Guarded, user: str, sql: str, args: tuple = ()) -> tuple[list[tuple], list[str]]:
    """Rows and column names of `sql` over COM_QUERY (PyMySQL)."""
    _, port, server = g
    conn = pymysql.connect(host="127.0.0.1", port=port, user=user, password=PASSWORD,
                           database=server.database, autocommit=True)  # fmt: skip
    with conn, conn.cursor() as cur:
        cur.execute(sql, args or None)
        rows = [tuple(r) for r in cur.fetchall()]
        return rows, [d[0] for d in cur.description or ()]


def _prepared(g: Guarded, user: str, sql: str, args: tuple = ()) -> list[tuple]:
    """Rows of `sql` as a server-side prepared statement (mysql-connector)."""
    _, port, server = g
    conn = mysql.connector.connect(host="127.0.0.1", port=port, user=user, password=PASSWORD,
                                   database=server.database, autocommit=True)  # fmt: skip
    try:
        cur = conn.cursor(prepared=True)
        cur.execute(sql, args)
        return [tuple(r) for r in cur.fetchall()] if cur.with_rows else []
    finally:
        conn.close()


def _both(g: Guarded, user: str, sql: str) -> list[list[tuple]]:
    return [_query(g, user, sql)[0], _prepared(g, user, sql)]


def _denied(g: Guarded, user: str, sql: str) -> list[str]:
    """The ERR 1142 text `sql` gets, over COM_QUERY and as a prepared statement."""
    messages = []
    with pytest.raises(pymysql.err.OperationalError) as err:
        _query(g, user, sql)
    assert err.value.args[0] == 1142, err.value
    messages.append(str(err.value.args[1]))
    with pytest.raises(mysql.connector.Error) as err2:
        _prepared(g, user, sql)
    assert err2.value.errno == 1142 and err2.value.sqlstate == "42000", err2.value
    messages.append(str(err2.value.msg))
    return messages


MASKED_FORMS = [
    "SELECT Email FROM customers",
    "SELECT email FROM customers WHERE id = 1",
    "SELECT * FROM customers",
    "SELECT c.* FROM customers c",
    "SELECT c.email FROM customers AS c USE INDEX (PRIMARY)",
    "SELECT CONCAT(email, '') FROM customers",
    "SELECT JSON_OBJECT('e', email) FROM customers",
    "SELECT /*!32302 email */ FROM customers",
    "WITH x AS (SELECT email AS m FROM customers) SELECT m FROM x",
    "SELECT s.e FROM (SELECT email AS e FROM customers) s",
    "SELECT name FROM customers UNION ALL SELECT email FROM customers",
    "SELECT (SELECT MAX(email) FROM customers)",
    "SELECT address FROM contacts",
    "SELECT o.id, c.email FROM orders o JOIN customers c ON c.id = o.id",
]


@pytest.mark.parametrize("sql", MASKED_FORMS)
def test_a_masked_column_never_leaves_the_server_in_clear(guarded: Guarded, sql: str) -> None:
    db = guarded[2].database
    for rows in _both(guarded, APP, sql):
        assert SECRET not in repr(rows) and "****" in repr(rows), (sql, rows)
    qualified = sql.replace("FROM customers", f"FROM {db}.customers")
    assert SECRET not in repr(_query(guarded, APP, qualified)[0])
    assert SECRET in repr(_query(guarded, ADMIN, sql)[0])


def test_tags_written_in_column_comments_mask_too(guarded: Guarded) -> None:
    for rows in _both(guarded, APP, "SELECT phone, name FROM customers"):
        assert rows == [("****", "Ann")]
    assert _query(guarded, ADMIN, "SELECT phone FROM customers")[0] == [(PHONE,)]


def test_a_rewrite_keeps_column_names_and_types(guarded: Guarded) -> None:
    sql = "SELECT id, CONCAT(name, '!'), email, 1+1 FROM customers"
    rows, names = _query(guarded, APP, sql)
    admin_rows, admin_names = _query(guarded, ADMIN, sql)
    assert names == admin_names == ["id", "CONCAT(name, '!')", "email", "1+1"]
    assert rows == [(1, "Ann!", "****", 2)] and admin_rows[0][2] == SECRET
    assert _prepared(guarded, APP, "SELECT id, email FROM customers WHERE id = ?", (1,)) == [
        (1, "****")]  # fmt: skip


def test_a_masked_column_used_to_filter_or_copied_is_denied(guarded: Guarded) -> None:
    for sql in (f"SELECT id FROM customers WHERE email = '{SECRET}'",
                "SELECT id FROM customers ORDER BY email",
                "SELECT COUNT(*) FROM customers GROUP BY email",
                "UPDATE customers SET name = email WHERE id = 1",
                "INSERT INTO customers (id, name) VALUES (1, 'x') "
                "ON DUPLICATE KEY UPDATE name = email"):  # fmt: skip
        assert all("mask-pii" in m for m in _denied(guarded, APP, sql)), sql
    # Writes that do not read the masked column are untouched.
    _query(guarded, APP, "UPDATE customers SET name = 'Ann' WHERE id = 1")
    _query(guarded, APP, "UPDATE customers SET email = 'new' WHERE id = 99")
    assert guarded[2].execute("SELECT name, Email FROM customers") == [("Ann", SECRET)]


def test_a_denied_table_on_every_path(guarded: Guarded) -> None:
    for sql in ("SELECT amount FROM payroll", "SELECT 1; SELECT amount FROM payroll",
                "SELECT * FROM (SELECT amount FROM payroll) p",
                "INSERT INTO orders SELECT id, amount FROM payroll",
                "SELECT /*! amount FROM payroll */"):  # fmt: skip
        if ";" in sql:
            with pytest.raises(pymysql.err.OperationalError, match="payroll stays"):
                _query(guarded, US, sql)
            continue
        assert all("payroll stays" in m and "ex_" in m for m in _denied(guarded, US, sql)), sql
    assert guarded[2].execute("SELECT COUNT(*) FROM orders") == [(2,)]
    assert _query(guarded, APP, "SELECT amount FROM payroll")[0] == [(10,)]


def test_unbounded_writes_are_denied(guarded: Guarded) -> None:
    for sql in ("DELETE FROM orders", "UPDATE customers SET name = 'x'"):
        assert all("no-unbounded-delete" in m for m in _denied(guarded, US, sql))
    assert guarded[2].execute("SELECT COUNT(*) FROM orders") == [(2,)]


def test_row_filters_reach_every_read_and_write(guarded: Guarded) -> None:
    for rows in _both(guarded, APP, "SELECT COUNT(*) FROM orders"):
        assert rows == [(1,)]
    assert _query(guarded, APP, "SELECT o.id FROM orders o JOIN orders p USING (id)")[0] == [
        (1,)]  # fmt: skip
    assert _prepared(guarded, APP, "SELECT * FROM orders WHERE id > ?", (0,)) == [
        (1, pytest.approx(5))]  # fmt: skip
    _, port, server = guarded
    conn = pymysql.connect(host="127.0.0.1", port=port, user=APP, password=PASSWORD,
                           database=server.database, autocommit=True,
                           client_flag=pymysql.constants.CLIENT.FOUND_ROWS)  # fmt: skip
    with conn, conn.cursor() as cur:  # rows matched, not changed
        assert cur.execute("UPDATE orders SET total = total + 0 WHERE id > 0") == 1
        assert cur.execute("DELETE FROM orders WHERE id = 2") == 0
    assert _query(guarded, US, "SELECT COUNT(*) FROM orders")[0] == [(2,)]
    upsert = "INSERT INTO orders VALUES (2, 1) ON DUPLICATE KEY UPDATE total = 1"
    assert all("small-orders" in m for m in _denied(guarded, APP, upsert))


LEAK_ATTEMPTS = [
    "SELECT leak()",
    "SELECT {db}.leak()",
    "PREPARE s FROM 'SELECT email FROM customers'",
    "HANDLER customers OPEN",
    "CREATE FUNCTION leak2() RETURNS TEXT RETURN (SELECT MAX(email) FROM customers)",
    "SELECT * FROM mysql.column_stats",
    "ALTER TABLE customers MODIFY phone VARCHAR(20) COMMENT ''",
    "SELECT LOAD_FILE(CONCAT(@@datadir, '{db}/customers.ibd'))",  # the table's own file
]


@pytest.mark.parametrize("sql", LEAK_ATTEMPTS)
def test_leak_attempts_through_code_and_metadata_are_denied(guarded: Guarded, sql: str) -> None:
    sql = sql.replace("{db}", guarded[2].database)
    with pytest.raises(pymysql.err.OperationalError) as err:
        _query(guarded, APP, sql)
    assert err.value.args[0] == 1142, err.value
    assert guarded[2].execute("SELECT COUNT(*) FROM information_schema.ROUTINES WHERE "
                              "ROUTINE_NAME = 'leak2'") == [(0,)]  # fmt: skip


def test_backslashes_cannot_hide_sql_from_the_proxy(guarded: Guarded) -> None:
    """With NO_BACKSLASH_ESCAPES the server ends `'x\\'` at the backslash: text the
    proxy reads as one string would run."""
    _, port, server = guarded
    sneaky = r"SELECT 'x\', email FROM customers -- '"
    conn = pymysql.connect(host="127.0.0.1", port=port, user=APP, password=PASSWORD,
                           database=server.database, autocommit=True)  # fmt: skip
    with conn, conn.cursor() as cur:
        cur.execute(sneaky)  # default sql_mode: one harmless string, to both
        assert SECRET not in repr(cur.fetchall())
        cur.execute("SET SESSION sql_mode = CONCAT(@@sql_mode, ',NO_BACKSLASH_ESCAPES')")
        with pytest.raises(pymysql.err.OperationalError, match="NO_BACKSLASH_ESCAPES"):
            cur.execute(sneaky)
        cur.execute("SELECT email FROM customers")
        assert cur.fetchall() == (("****",),)
        cur.execute("SET SESSION sql_mode = ''")
        with pytest.raises(pymysql.err.OperationalError, match="NO_BACKSLASH_ESCAPES"):
            cur.execute("SET SESSION sql_mode = 'NO_BACKSLASH_ESCAPES'; " + sneaky)


def test_double_quotes_are_read_both_ways(guarded: Guarded) -> None:
    """With ANSI_QUOTES (which no status flag reports) `"email"` is the column."""
    _, port, server = guarded
    conn = pymysql.connect(host="127.0.0.1", port=port, user=APP, password=PASSWORD,
                           database=server.database, autocommit=True)  # fmt: skip
    with conn, conn.cursor() as cur:
        for mode in ("", "ANSI_QUOTES"):
            cur.execute(f"SET SESSION sql_mode = '{mode}'")
            cur.execute("SELECT \"email\", 'x' FROM customers")
            rows = cur.fetchall()
            assert SECRET not in repr(rows), (mode, rows)
        assert rows == (("****", "x"),)


def test_the_catalog_is_read_again_after_ddl(guarded: Guarded) -> None:
    """A column tagged by DDL through the proxy is masked once the catalog is read again."""
    comment = "sqlx: sensitivity=pii"
    _query(guarded, ADMIN, f"ALTER TABLE orders ADD COLUMN note VARCHAR(20) COMMENT '{comment}'")
    try:
        _query(guarded, ADMIN, "UPDATE orders SET note = 'zz-note' WHERE id = 1")
        deadline = time.monotonic() + 10
        while True:
            rows, names = _query(guarded, APP, "SELECT * FROM orders")
            assert "zz-note" not in repr(rows)
            if names == ["id", "total", "note"]:
                assert [r[2] for r in rows] == ["****"]
                break
            assert time.monotonic() < deadline, "the catalog was never read again"
            time.sleep(0.2)
    finally:
        _query(guarded, ADMIN, "ALTER TABLE orders DROP COLUMN note")


def test_explanations_and_spans_hold_no_literal(guarded: Guarded) -> None:
    proxy = guarded[0]
    messages = _denied(guarded, US, "SELECT amount FROM payroll WHERE amount > 424242")
    assert all("ex_" in m for m in messages)
    _query(guarded, APP, f"SELECT email FROM customers WHERE name <> '{SECRET}x'")
    var = proxy.logfile.parent / "var"
    deadline = time.monotonic() + 10
    text = spans = ""
    while "mask-pii" not in text or "payroll-eu-only" not in text or "name <> ?" not in spans:
        assert time.monotonic() < deadline, (text[-2000:], spans[-2000:])
        time.sleep(0.1)
        text = (var / "explanations.jsonl").read_text()
        spans = (var / "spans.jsonl").read_text() if (var / "spans.jsonl").exists() else ""
    assert "424242" not in text and SECRET not in text
    said = [json.loads(line) for line in spans.splitlines() if '"mysql"' in line]
    assert said and SECRET not in json.dumps([s["attributes"] for s in said])


def _decision_cache_hits(g: Guarded) -> float:
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{g[0].http_port}/metrics").read().decode()
    return float(next(line.split()[1] for line in text.splitlines()
                      if line.startswith("sqlx_decision_cache_hits")))  # fmt: skip


def test_new_literals_in_a_guarded_session_reuse_the_shapes_verdict(guarded: Guarded) -> None:
    """A point query with a new id each time is decided once per shape, and each answer is
    still the right one: rows for the allowed shape, ERR 1142 for the denied one."""
    _, port, server = guarded
    before = _decision_cache_hits(guarded)
    conn = pymysql.connect(host="127.0.0.1", port=port, user=US, password=PASSWORD,
                           database=server.database, autocommit=True)  # fmt: skip
    with conn, conn.cursor() as cur:
        for i in range(1, 21):
            cur.execute(f"SELECT name, {i} FROM customers WHERE id = {i % 2}")
            assert cur.fetchall() == ((("Ann", i),) if i % 2 else ())
            with pytest.raises(pymysql.err.OperationalError) as err:
                cur.execute(f"SELECT amount FROM payroll WHERE id = {i}")
            assert err.value.args[0] == 1142 and "payroll-eu-only" in err.value.args[1]
    assert _decision_cache_hits(guarded) - before >= 38  # 40 statements, 2 shapes


def test_new_literals_in_a_masked_read_fill_its_rewrite(guarded: Guarded) -> None:
    """A masked point query with a new id (and a new string) each time is rewritten once,
    then filled: every answer is masked and is the answer to its own literals."""
    _, port, server = guarded
    before = _decision_cache_hits(guarded)
    conn = pymysql.connect(host="127.0.0.1", port=port, user=APP, password=PASSWORD,
                           database=server.database, autocommit=True)  # fmt: skip
    with conn, conn.cursor() as cur:
        for i in range(20):
            cur.execute(f"SELECT id, Email, name, 'tag-{i}' FROM customers WHERE id = {i % 2}"
                        f" AND name <> 'x{i}'")  # fmt: skip
            assert cur.fetchall() == (((1, "****", "Ann", f"tag-{i}"),) if i % 2 else ())
            cur.execute(f"SELECT total FROM orders WHERE id <= {i}")  # filtered: total < 6
            assert cur.fetchall() == (((5,),) if i else ())
    assert _decision_cache_hits(guarded) - before >= 36  # 40 statements, 2 templates
