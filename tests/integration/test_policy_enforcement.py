"""Policy packs enforced by a real proxy process on a real server, with real clients.

The pack here is the example pack's shape with this run's role names. Every
protocol path gets the same verdict; denials leave client and server agreeing;
the explanation log names each action and never a literal.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import select
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import psycopg
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.fix_pg import PgServer, run
from tests.fixtures.fix_proxy import ProxyProcess, start_proxy

SUFFIX = secrets.token_hex(3)
APP, US, ADMIN = f"app_{SUFFIX}", f"us_{SUFFIX}", f"adm_{SUFFIX}"
SECRET = "zz-clear-value-zz"


def _pack(extra_rules: list[dict] | None = None, extra_tags: dict | None = None) -> dict:
    return {"policy": {
        "fail_closed": True,
        "tags": {"public.customers.email": {"sensitivity": "pii"},
                 "public.payroll": {"region": "eu"}, **(extra_tags or {})},
        "rules": [
            {"name": "mask-pii", "when": {"tags": {"sensitivity": "pii"},
                                          "except_users": [ADMIN]}, "action": "mask"},
            {"name": "payroll-eu-only", "when": {"tables": ["public.payroll"], "users": [US]},
             "action": "deny", "reason": "payroll stays with EU staff"},
            {"name": "no-unbounded-delete",
             "when": {"statements": ["DELETE", "UPDATE"], "has_where": False,
                      "except_users": [ADMIN]},
             "action": "deny"},
            {"name": "audit-payroll", "when": {"tables": ["public.payroll"]}, "action": "audit"},
            *(extra_rules or []),
        ],
    }}  # fmt: skip


@pytest.fixture(scope="module")
def guarded(pg: PgServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    for role in (APP, US, ADMIN):
        pg.execute(f"create role {role} login")
    pg.execute(
        "create table customers (id int primary key, name text, email text, phone text);"
        f"insert into customers values (1, 'Ann', '{SECRET}', '555');"
        "create table payroll (id int, amount numeric); insert into payroll values (1, 10);"
        "create table orders (id int, total numeric); insert into orders values (1, 5), (2, 6);"
        "create view contacts as select id, email as address from customers;"
        "create view contacts_again as select * from contacts;"
        "create view pay as select amount from payroll;"
        f"grant all on all tables in schema public to {APP}, {US}, {ADMIN};"
        f"grant all on schema public to {APP}, {US}, {ADMIN};"
        f"alter table orders owner to {ADMIN}"
    )
    tmp = tmp_path_factory.mktemp("policy")
    pack = tmp / "pack.yaml"
    pack.write_text(yaml.safe_dump(_pack()))
    proxy = start_proxy(tmp, pg, {"policy": {"packs": [str(pack)]},
                                  "telemetry": {"sampling_ratio": 1.0},
                                  "admin": {"users": [ADMIN]}})  # fmt: skip
    proxy.pack = pack  # type: ignore[attr-defined]
    yield proxy
    proxy.stop()
    pg.execute("drop view contacts_again, contacts, pay; drop table customers, payroll, orders")
    for role in (APP, US, ADMIN):
        pg.execute(f"drop owned by {role}; drop role {role}")


def _explanations(proxy: ProxyProcess, until: str | Callable[[dict], bool] = "") -> list[dict]:
    """The records on disk, once one exists (with id `until`, or for which `until` holds):
    a writer thread appends them shortly after the statement."""
    path = Path(proxy.config_path).parent / "var" / "explanations.jsonl"
    deadline = time.monotonic() + 10
    while True:
        text = path.read_text() if path.exists() else ""
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
        wanted = until if callable(until) else (lambda r: not until or r["id"] == until)
        if any(wanted(r) for r in records):
            return records
        assert time.monotonic() < deadline, f"no explanation {until}"
        time.sleep(0.05)


def _denied(proxy: ProxyProcess, user: str, sql: str) -> str:
    """The message of the 42501 the proxy answers `sql` with, for `user`."""
    conn = psycopg.connect(proxy.dsn(user=user), autocommit=True)
    with conn, pytest.raises(psycopg.errors.InsufficientPrivilege) as err:
        conn.execute(sql)
    return str(err.value)


def _explanation_id(message: str) -> str:
    found = re.search(r"\((ex_[0-9a-f]+)\)", message)
    assert found, message
    return found.group(1)


def _reload(proxy: ProxyProcess, pack: dict | str) -> None:
    """Write the pack and SIGHUP; return once the proxy logged the outcome."""
    path: Path = proxy.pack  # type: ignore[attr-defined]
    before = proxy.log().count("policy loaded") + proxy.log().count("config reload rejected")
    path.write_text(pack if isinstance(pack, str) else yaml.safe_dump(pack))
    proxy.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while proxy.log().count("policy loaded") + proxy.log().count("config reload rejected") == (
        before
    ):
        assert time.monotonic() < deadline, "the reload was never logged"
        time.sleep(0.05)


def _until_denied(conn: psycopg.Connection, sql: str, rule: str) -> None:
    """Run `sql` until `rule` denies it (a change applies in the background)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            conn.execute(sql)
        except psycopg.errors.InsufficientPrivilege as exc:
            assert rule in str(exc)
            return
        assert time.monotonic() < deadline, f"{rule} never applied to {sql}"
        time.sleep(0.1)


SQL = "SELECT email FROM customers WHERE id = 1"


MASKED_FORMS = [
    "SELECT email FROM customers WHERE id = 1",
    "SELECT c.email AS e FROM customers c",
    "SELECT public.customers.email FROM public.customers",
    "SELECT * FROM customers",
    "SELECT c.* FROM customers c",
    "SELECT c FROM customers c",
    "SELECT row_to_json(c) FROM customers c",
    "SELECT to_jsonb(customers) FROM customers",
    "SELECT c::text FROM customers c",
    "WITH x AS (SELECT email AS m FROM customers) SELECT m FROM x",
    "SELECT s.e FROM (SELECT email AS e FROM customers) s",
    "SELECT name FROM customers UNION ALL SELECT email FROM customers",
    "SELECT (SELECT max(email) FROM customers)",
    "UPDATE customers SET name = name WHERE id = 1 RETURNING email",
    "UPDATE customers SET name = name WHERE id = 1 RETURNING *",
]


def _rows_text(rows: list) -> str:
    return repr(rows)


@pytest.mark.parametrize("sql", MASKED_FORMS)
def test_masked_column_never_leaves_the_server_in_clear(guarded: ProxyProcess, sql: str) -> None:
    with psycopg.connect(guarded.dsn(user=APP), autocommit=True) as conn:
        for prepare in (False, True):
            rows = conn.execute(sql, prepare=prepare).fetchall()
            assert SECRET not in _rows_text(rows) and "****" in _rows_text(rows), rows
    with psycopg.connect(guarded.dsn(user=ADMIN), autocommit=True) as conn:
        assert SECRET in _rows_text(conn.execute(sql).fetchall())


def test_masking_holds_on_every_protocol_path(guarded: ProxyProcess) -> None:
    dsn = guarded.dsn(user=APP)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"PREPARE p AS {SQL}")
        assert conn.execute("EXECUTE p").fetchall() == [("****",)]
        conn.execute("BEGIN")
        conn.execute(f"DECLARE c CURSOR FOR {SQL}")
        assert conn.execute("FETCH ALL FROM c").fetchall() == [("****",)]
        conn.execute("COMMIT")
        with conn.cursor().copy("COPY customers TO STDOUT") as copy:
            data = b"".join(bytes(chunk) for chunk in copy)
        assert SECRET.encode() not in data and b"****" in data
        with conn.cursor().copy("COPY (SELECT email FROM customers) TO STDOUT") as copy:
            assert b"".join(bytes(chunk) for chunk in copy) == b"****\n"
        rows = conn.execute(f"EXPLAIN (ANALYZE, COSTS OFF) {SQL}").fetchall()
        assert SECRET not in _rows_text(rows)

    async def with_asyncpg() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            assert await conn.fetchval(SQL) == "****"
            stmt = await conn.prepare("SELECT email FROM customers WHERE id = $1")
            assert await stmt.fetchval(1) == "****"
        finally:
            await conn.close()

    asyncio.run(with_asyncpg())
    psql = run(["psql", dsn, "-Atc", SQL])
    assert psql.stdout.strip() == "****"


def test_a_masked_column_used_to_filter_is_denied(guarded: ProxyProcess) -> None:
    with psycopg.connect(guarded.dsn(user=APP), autocommit=True) as conn:
        for sql in (f"SELECT id FROM customers WHERE email = '{SECRET}'",
                    "SELECT id FROM customers ORDER BY email",
                    "SELECT count(*) FROM customers GROUP BY email",
                    "UPDATE customers SET name = email WHERE id = 1"):  # fmt: skip
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="mask-pii"):
                conn.execute(sql)
        # Writes that do not read the masked column are untouched.
        conn.execute("UPDATE customers SET name = 'Ann' WHERE id = 1")
        assert conn.execute("SELECT name FROM customers").fetchall() == [("Ann",)]


def test_deny_in_a_transaction_aborts_it_on_both_sides(guarded: ProxyProcess) -> None:
    with psycopg.connect(guarded.dsn(user=US)) as conn:
        conn.execute("insert into orders values (3, 7)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="payroll stays"):
            conn.execute("select amount from payroll")
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("select 1")
        conn.rollback()
        assert conn.execute("select count(*) from orders").fetchone() == (2,)
        pid = conn.execute("select pg_backend_pid()").fetchone()[0]
        conn.commit()
        state = guarded.upstream.execute(  # type: ignore[union-attr]
            f"select state from pg_stat_activity where pid = {pid}")  # fmt: skip
        assert state == [("idle",)]


def test_unbounded_writes_and_audit(guarded: ProxyProcess) -> None:
    with psycopg.connect(guarded.dsn(user=APP), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="no-unbounded-delete"):
            conn.execute("delete from orders")
        assert conn.execute("delete from orders where id = 99").rowcount == 0
        assert conn.execute("select amount from payroll").fetchall() == [(10,)]
    assert guarded.upstream.execute("select count(*) from orders") == [(2,)]  # type: ignore[union-attr]
    audits = [e for e in _explanations(guarded, lambda e: e["decision"] == "audit")
              if e["decision"] == "audit"]  # fmt: skip
    assert audits and audits[-1]["evidence"]["rule"] == "audit-payroll"
    assert audits[-1]["summary"] == "SELECT payroll" and audits[-1]["user"] == APP


def test_explanations_name_the_action_and_never_a_literal(guarded: ProxyProcess) -> None:
    denied = _denied(guarded, US, "select amount from payroll where amount > 424242")
    ex_id = _explanation_id(denied)
    (record,) = [e for e in _explanations(guarded, ex_id) if e["id"] == ex_id]
    assert record["decision"] == "deny" and record["reason"] == "payroll stays with EU staff"
    assert record["evidence"]["rule"] == "payroll-eu-only"
    assert record["evidence"]["tables"] == ["payroll"] and record["fingerprint"]
    assert {"time", "confidence", "policy_impact", "air_id", "database"} <= record.keys()
    text = (Path(guarded.config_path).parent / "var" / "explanations.jsonl").read_text()
    assert "424242" not in text and SECRET not in text


def test_fail_closed_for_guarded_sessions_only(guarded: ProxyProcess) -> None:
    with psycopg.connect(guarded.dsn(user=APP), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="cannot parse"):
            conn.execute("selec email from customers")
        for sql in ("SET ROLE " + ADMIN, "SELECT set_config('role', 'x', false)",
                    "SELECT * FROM pg_stats", "DO $$ BEGIN END $$"):  # fmt: skip
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(sql)
    conn = psycopg.connect(guarded.dsn(user=ADMIN), autocommit=True)
    with conn, pytest.raises(psycopg.errors.SyntaxError):  # no guarding rule applies to admins
        conn.execute("selec email from customers")


def test_comment_tags_apply_after_ddl_through_the_proxy(guarded: ProxyProcess) -> None:
    with psycopg.connect(guarded.dsn(user=ADMIN), autocommit=True) as conn:  # the owner
        conn.execute("comment on column orders.total is 'sqlx: sensitivity=pii'")
    deadline = time.monotonic() + 10
    with psycopg.connect(guarded.dsn(user=APP), autocommit=True) as conn:
        # A numeric column: redacted to NULL of its type, so drivers still decode it.
        while conn.execute("select total from orders").fetchall() != [(None,), (None,)]:
            assert time.monotonic() < deadline, "the comment's tag never applied"
            time.sleep(0.1)
    with psycopg.connect(guarded.dsn(user=ADMIN), autocommit=True) as conn:
        conn.execute("comment on column orders.total is null")


def test_reload_applies_to_new_statements_without_dropping_connections(
    guarded: ProxyProcess,
) -> None:
    with psycopg.connect(guarded.dsn(user=APP), autocommit=True) as conn:
        assert conn.execute("select id from orders where id = 1").fetchall() == [(1,)]
        _reload(guarded, _pack([{"name": "no-orders", "action": "deny",
                                 "when": {"tables": ["orders"]}}]))  # fmt: skip
        _until_denied(conn, "select id from orders where id = 1", "no-orders")
        _reload(guarded, "policy: {rules: [{name: broken, action: nonsense}]}")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="no-orders"):
            conn.execute("select id from orders where id = 2")
    assert "config reload rejected" in guarded.log()
    _reload(guarded, _pack())


@pytest.mark.parametrize("params", [{"options": f"-c role={ADMIN}"}, {"options": "--role=x"}])
def test_a_guarded_session_cannot_take_another_identity_at_startup(
    guarded: ProxyProcess, params: dict[str, str]
) -> None:
    with pytest.raises(psycopg.OperationalError, match="identity"):
        psycopg.connect(guarded.dsn(user=APP), **params)
    # An unguarded session may (the server still checks role membership).
    with psycopg.connect(guarded.dsn(user=ADMIN), options=f"-c role={ADMIN}") as conn:
        assert conn.execute("select current_user").fetchone() == (ADMIN,)


def test_explain_tail_and_show(guarded: ProxyProcess) -> None:
    ex_id = _explanation_id(_denied(guarded, US, "select * from payroll"))
    _explanations(guarded, ex_id)  # written
    data_dir = str(Path(guarded.config_path).parent / "var")
    sqlxos = [sys.executable, "-m", "sqlx.cli.main", "explain", "--data-dir", data_dir]
    tail = run([*sqlxos, "tail", "-n", "50"])
    (shown,) = [ln for ln in tail.stdout.splitlines() if ex_id in ln]
    assert "DENY" in shown and f"{US}@" in shown and "rule=payroll-eu-only" in shown
    as_json = run([*sqlxos, "tail", "--json"]).stdout.splitlines()
    assert all(json.loads(ln)["id"] for ln in as_json)
    show = run([*sqlxos, "show", ex_id])
    record, _, trace_line = show.stdout.rpartition("}\n")
    assert json.loads(record + "}")["evidence"]["rule"] == "payroll-eu-only"
    trace_id = trace_line.strip().removeprefix("trace: ")
    (span,) = _spans(guarded, trace_id)  # an explained statement is always traced
    assert span["attributes"]["sqlx.policy.verdict"] == "deny"
    assert span["status"]["status_code"] == "ERROR"
    assert run([*sqlxos, "show", "ex_nope"], check=False).returncode == 1
    follow = subprocess.Popen([*sqlxos, "tail", "-n", "0", "-f"], stdout=subprocess.PIPE, text=True)
    try:
        # The follower may start after a first denial is written: deny until it shows one.
        ids: list[str] = []
        followed = ""
        deadline = time.monotonic() + 30
        while not any(i in followed for i in ids):
            assert time.monotonic() < deadline, "tail -f showed no new explanation"
            ids.append(_explanation_id(_denied(guarded, US, "select id from payroll")))
            ready, _, _ = select.select([follow.stdout], [], [], 1.0)
            if ready:
                followed = follow.stdout.readline()  # type: ignore[union-attr]
    finally:
        follow.terminate()
        follow.wait(10)


def _spans(proxy: ProxyProcess, match: str) -> list[dict]:
    path = Path(proxy.config_path).parent / "var" / "spans.jsonl"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if path.exists():
            found = [json.loads(ln) for ln in path.read_text().splitlines() if match in ln]
            if found:
                return found
        time.sleep(0.2)
    raise AssertionError(f"no span with {match!r}")


def test_spans_and_metrics(guarded: ProxyProcess) -> None:
    trace_id = secrets.token_hex(16)
    traceparent = f"00-{trace_id}-{secrets.token_hex(8)}-01"
    with psycopg.connect(guarded.dsn(user=APP), autocommit=True) as conn:
        rows = conn.execute(f"/*traceparent='{traceparent}'*/ SELECT id, name FROM customers "
                            "WHERE id = 987654").fetchall()  # fmt: skip
        assert rows == []
        conn.execute("SELECT name FROM customers WHERE name = 'Ann'").fetchall()
        assert conn.execute(SQL).fetchall() == [("****",)]
    (span,) = _spans(guarded, trace_id)
    assert span["name"] == "SELECT customers" and span["context"]["trace_id"] == f"0x{trace_id}"
    attrs = span["attributes"]
    assert (
        attrs["db.system.name"] == "postgresql"
        and attrs["db.namespace"] == guarded.upstream.database
    )  # type: ignore[union-attr]
    assert attrs["db.query.summary"] == "SELECT customers"
    assert attrs["db.query.text"] == "SELECT id, name FROM customers WHERE id = $1"
    assert attrs["sqlx.policy.verdict"] == "allow" and attrs["db.response.returned_rows"] == 0
    assert {"sqlx.air.id", "sqlx.air.hash", "sqlx.fingerprint"} <= attrs.keys()
    assert [e["name"] for e in span["events"]] == ["air.parse", "air.normalize", "air.plan"]
    masked = _spans(guarded, '"sqlx.policy.rule": "mask-pii"')
    lines = (Path(guarded.config_path).parent / "var" / "spans.jsonl").read_text().splitlines()
    # What spans say, ids and times aside: random hex may hold any run of digits.
    said = json.dumps([[s["name"], s["attributes"], s["events"]] for s in map(json.loads, lines)])
    assert masked and SECRET not in said and "987654" not in said and "'Ann'" not in said
    _denied(guarded, US, "select * from payroll")
    body = urllib.request.urlopen(f"http://127.0.0.1:{guarded.http_port}/metrics").read().decode()
    families = {f.name: f for f in text_string_to_metric_families(body)}
    latency = families["sqlx_exec_latency_ms"]
    assert any(s.labels.get("kind") == "SELECT" and s.labels.get("verdict") == "rewrite"
               for s in latency.samples)  # fmt: skip
    denials = [s for s in families["sqlx_denials"].samples if s.name == "sqlx_denials_total"]
    assert any(s.labels["rule"] == "payroll-eu-only" and s.value >= 1 for s in denials)
    for gauge in ("sqlx_client_connections", "sqlx_upstream_connections",
                  "sqlx_decision_cache_hits", "sqlx_decision_cache_misses"):  # fmt: skip
        assert gauge in families
    assert "987654" not in body and SECRET not in body


def test_admin_console(guarded: ProxyProcess) -> None:
    _denied(guarded, US, "select * from payroll")
    with psycopg.connect(guarded.dsn(user=APP), autocommit=True) as conn:
        conn.execute("select name from customers where id = 1").fetchall()
        console = guarded.dsn(user=ADMIN, database="sqlx")

        def show(command: str) -> list[list[str]]:
            out = run(["psql", console, "-AtF", "|", "-c", command])
            assert out.returncode == 0, out.stderr
            return [line.split("|") for line in out.stdout.splitlines()]

        stats = dict(row[:2] for row in show("SHOW STATS"))
        assert int(stats["clients"]) >= 1 and int(stats["policy_rules"]) == 4
        clients = show("show clients;")
        assert any(r[1] == APP and r[6] == "I" and r[7] == "t" for r in clients)
        assert [r[0] for r in show("SHOW POLICIES")][:2] == ["mask-pii", "payroll-eu-only"]
        shapes = show("SHOW FINGERPRINTS")
        assert any(r[1] == "select name from customers where id = $1" for r in shapes)
        assert all("987654" not in "|".join(r) for r in shapes)
        assert any(r[2] == "deny" and r[6] == "payroll-eu-only" for r in show("SHOW EXPLANATIONS"))
        assert show("RELOAD") == [["RELOAD"]]
    bad = run(["psql", console, "-c", "SHOW NONSENSE"])
    assert bad.returncode != 0 and "SHOW HELP" in bad.stderr
    refused = run(["psql", guarded.dsn(user=APP, database="sqlx"), "-c", "SHOW STATS"])
    assert refused.returncode != 0 and "admin.users" in refused.stderr


def test_views_carry_the_policy_of_what_they_show(guarded: ProxyProcess) -> None:
    with psycopg.connect(guarded.dsn(user=APP), autocommit=True) as conn:
        for sql in ("select address from contacts", "select * from contacts_again",
                    "select c from contacts c"):  # fmt: skip
            rows = conn.execute(sql).fetchall()
            assert SECRET not in repr(rows) and "****" in repr(rows), (sql, rows)
    assert "payroll stays" in _denied(guarded, US, "select * from pay")
    with psycopg.connect(guarded.dsn(user=ADMIN), autocommit=True) as conn:
        assert conn.execute("select address from contacts_again").fetchall() == [(SECRET,)]


def _statements_counted(proxy: ProxyProcess) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{proxy.http_port}/metrics").read().decode()
    family = next(f for f in text_string_to_metric_families(body) if f.name == "sqlx_statements")
    return sum(s.value for s in family.samples
               if s.labels == {"kind": "SELECT", "verdict": "allow"})  # fmt: skip


def test_statements_prepared_earlier_are_counted_when_executed_again(
    guarded: ProxyProcess,
) -> None:
    before = _statements_counted(guarded)
    with psycopg.connect(guarded.dsn(user=ADMIN), autocommit=True) as conn:
        for i in range(10):  # one Parse, then Bind/Execute only
            conn.execute("select id from orders where id = %s", (i,), prepare=True).fetchall()
    deadline = time.monotonic() + 5
    while _statements_counted(guarded) < before + 10:
        assert time.monotonic() < deadline, (before, _statements_counted(guarded))
        time.sleep(0.1)


def test_a_column_added_behind_the_proxys_back_is_never_read_in_clear(
    guarded: ProxyProcess,
) -> None:
    """orders has no policed column the catalog knows: without care, `*` would return a
    new, tagged column in clear until the catalog is read again."""
    pg = guarded.upstream
    assert pg is not None
    with psycopg.connect(guarded.dsn(user=APP), autocommit=True) as conn:
        conn.execute("select 1")  # the proxy has read the catalog by now
    pg.execute("alter table orders add column note text; update orders set note = 'zz-note'")
    denied = 0
    try:
        _reload(guarded, _pack(extra_tags={"public.orders.note": {"sensitivity": "pii"}}))
        deadline = time.monotonic() + 10
        with psycopg.connect(guarded.dsn(user=APP), autocommit=True) as conn:
            while True:
                try:
                    cur = conn.execute("select * from orders order by id")
                except psycopg.errors.InsufficientPrivilege as exc:
                    assert "catalog" in str(exc)  # stale: refused, and read again
                    denied += 1
                else:
                    rows = cur.fetchall()
                    assert "zz-note" not in repr(rows)
                    if [d.name for d in cur.description or []] == ["id", "total", "note"]:
                        assert {r[2] for r in rows} == {"****"}
                        break
                assert time.monotonic() < deadline, "the catalog was never read again"
                time.sleep(0.2)
        assert denied >= 1
    finally:
        _reload(guarded, _pack())
        with psycopg.connect(guarded.dsn(), autocommit=True) as conn:  # DDL the proxy sees
            conn.execute("alter table orders drop column note")
        time.sleep(0.5)  # the catalog is read again in the background, after the DDL


def test_row_filters_reach_every_read_and_write(guarded: ProxyProcess) -> None:
    rule = {"name": "small-orders", "action": "filter", "predicate": "total < 6",
            "when": {"tables": ["public.orders"], "users": [APP]}}  # fmt: skip
    try:
        _reload(guarded, _pack([rule]))
        deadline = time.monotonic() + 10
        with psycopg.connect(guarded.dsn(user=APP), autocommit=True) as conn:
            while conn.execute("select count(*) from orders").fetchone() != (1,):
                assert time.monotonic() < deadline, "the filter never applied"
                time.sleep(0.1)
            assert conn.execute("select id from orders o join orders p using (id)").fetchall() == [
                (1,)]  # fmt: skip
            assert conn.execute("select * from orders", prepare=True).fetchall() == [(1, 5)]
            assert conn.execute("update orders set total = total where id > 0").rowcount == 1
        with psycopg.connect(guarded.dsn(user=ADMIN), autocommit=True) as conn:
            assert conn.execute("select count(*) from orders").fetchone() == (2,)
    finally:
        _reload(guarded, _pack())


def test_the_same_verdict_on_every_path_of_a_denied_table(guarded: ProxyProcess) -> None:
    for sql in ("EXPLAIN ANALYZE SELECT * FROM payroll", "PREPARE q AS SELECT * FROM payroll",
                "DECLARE c CURSOR WITH HOLD FOR SELECT amount FROM payroll",
                "COPY (SELECT * FROM payroll) TO STDOUT", "COPY payroll TO STDOUT",
                "SELECT 1; SELECT amount FROM payroll"):  # fmt: skip
        assert "payroll stays" in _denied(guarded, US, sql), sql
    conn = psycopg.connect(guarded.dsn(user=US), autocommit=True)
    denied = pytest.raises(psycopg.errors.InsufficientPrivilege, match="payroll stays")
    with conn, denied, conn.cursor().copy("COPY payroll FROM STDIN") as copy:
        copy.write_row((2, 20))
    assert guarded.upstream.execute("select count(*) from payroll") == [(1,)]  # type: ignore[union-attr]

    async def prepared() -> None:
        aconn = await asyncpg.connect(guarded.dsn(user=US))
        try:
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="payroll stays"):
                await aconn.prepare("SELECT amount FROM payroll WHERE id = $1")
            assert await aconn.fetchval("SELECT 1") == 1
        finally:
            await aconn.close()

    asyncio.run(prepared())


def test_partitions_and_inheritance_share_their_tables_policy(guarded: ProxyProcess) -> None:
    with psycopg.connect(guarded.dsn(), autocommit=True) as owner:  # DDL the proxy sees
        owner.execute(
            "create table ledger (id int, email text) partition by range (id);"
            "create table ledger_low partition of ledger for values from (0) to (100);"
            f"insert into ledger values (1, '{SECRET}');"
            f"grant select on ledger, ledger_low to {APP}"
        )
    try:
        pack: dict = _pack(extra_tags={"public.ledger.email": {"sensitivity": "pii"}})
        _reload(guarded, pack)
        time.sleep(0.5)  # the catalog is read again in the background, after the DDL
        with psycopg.connect(guarded.dsn(user=APP), autocommit=True) as conn:
            for sql in ("select email from ledger_low", "select * from only ledger_low",
                        "select l from ledger_low l", "select email from ledger"):  # fmt: skip
                rows = conn.execute(sql).fetchall()
                assert SECRET not in repr(rows) and "****" in repr(rows), (sql, rows)
    finally:
        _reload(guarded, _pack())
        with psycopg.connect(guarded.dsn(), autocommit=True) as owner:
            owner.execute("drop table ledger")


LEAK_ATTEMPTS_MASKED = [
    "SELECT e FROM customers AS c(i, n, e, p)",
    "SELECT j.email FROM (customers c JOIN orders o ON o.id = c.id) AS j",
    "SELECT email FROM customers NATURAL FULL JOIN (SELECT NULL::text AS email WHERE false) t",
    "WITH customers AS (SELECT * FROM customers) SELECT * FROM customers",
]
LEAK_ATTEMPTS_DENIED = [
    "UPDATE customers c SET name = (c).email",
    "UPDATE customers SET name = customers::text",
    "INSERT INTO customers (id, name) VALUES (1, 'x') ON CONFLICT (id) DO UPDATE "
    "SET name = customers.email",
    "UPDATE customers c SET name = name WHERE id = 1 RETURNING c",
    "DELETE FROM customers c WHERE id = 0 RETURNING row_to_json(c)",
    "MERGE INTO customers c USING (SELECT 1) s ON c.email LIKE 'z%' "
    "WHEN MATCHED THEN UPDATE SET name = name",
    "SELECT word FROM ts_stat('SELECT to_tsvector(''simple'', email) FROM customers')",
    "CREATE FUNCTION leak() RETURNS text LANGUAGE sql AS $$SELECT email FROM customers$$",
    "CREATE INDEX ON customers ((email::int))",
]


@pytest.mark.parametrize("sql", LEAK_ATTEMPTS_MASKED)
def test_leak_attempts_through_aliases_joins_and_ctes_are_masked(
    guarded: ProxyProcess, sql: str
) -> None:
    with psycopg.connect(guarded.dsn(user=APP), autocommit=True) as conn:
        rows = conn.execute(sql).fetchall()
    assert SECRET not in repr(rows) and "****" in repr(rows), rows


@pytest.mark.parametrize("sql", LEAK_ATTEMPTS_DENIED)
def test_leak_attempts_through_writes_and_code_are_denied(guarded: ProxyProcess, sql: str) -> None:
    _denied(guarded, APP, sql)
    assert guarded.upstream.execute("select name from customers") == [("Ann",)]  # type: ignore[union-attr]


def test_an_error_detail_cannot_show_a_masked_row(guarded: ProxyProcess) -> None:
    def detail(user: str) -> str:
        conn = psycopg.connect(guarded.dsn(user=user), autocommit=True)
        with conn, pytest.raises(psycopg.errors.NotNullViolation) as err:
            conn.execute("UPDATE customers SET id = NULL WHERE id = 1")
        return str(err.value.diag.message_detail) + str(err.value)

    assert SECRET not in detail(APP)
    assert SECRET in detail(ADMIN)  # unmasked sessions keep details


def _no_clear_or_denied(conn: psycopg.Connection, sql: str) -> None:
    try:
        rows = conn.execute(sql).fetchall()
    except psycopg.errors.InsufficientPrivilege as exc:
        assert "standard_conforming_strings" in str(exc)
        return
    assert SECRET not in repr(rows), rows


def test_backslashes_cannot_hide_sql_from_the_proxy(guarded: ProxyProcess) -> None:
    """With standard_conforming_strings off the server reads `\\'` inside a string as a
    quote: text the proxy's parser takes for a comment would run."""
    sneaky = r"SELECT 'x\' --', email FROM customers"
    with psycopg.connect(guarded.dsn(user=APP), autocommit=True) as conn:
        conn.execute("SET standard_conforming_strings = off")
        _no_clear_or_denied(conn, sneaky)
        assert conn.execute("SELECT email FROM customers").fetchall() == [("****",)]
        # Sent in one string with the SET, and with the setting from the startup packet.
        conn.execute("SET standard_conforming_strings = on")
        _no_clear_or_denied(conn, "SET standard_conforming_strings = off; " + sneaky)
    dsn = guarded.dsn(user=APP)
    options = "-c standard_conforming_strings=off"
    with psycopg.connect(dsn, autocommit=True, options=options) as conn:
        _no_clear_or_denied(conn, sneaky)
    denied = pytest.raises(psycopg.errors.InsufficientPrivilege)
    # Pipelined: the second statement is decided before the server has run the first.
    with psycopg.connect(dsn, autocommit=True) as conn, denied, conn.pipeline():
        conn.execute("SET standard_conforming_strings = off", prepare=False)
        conn.execute(sneaky, prepare=False).fetchall()
    # Backslashes stay usable where the server reads them as the proxy does.
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute(r"SELECT 'a\b', E'c\\d'").fetchone() == ("a\\b", "c\\d")


def _decision_cache_hits(proxy: ProxyProcess) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{proxy.http_port}/metrics").read().decode()
    family = next(f for f in text_string_to_metric_families(body)
                  if f.name == "sqlx_decision_cache_hits")  # fmt: skip
    return sum(s.value for s in family.samples)


def test_new_literals_in_a_masked_read_fill_its_rewrite(guarded: ProxyProcess) -> None:
    """A masked point query with new literals each time is rewritten once, then filled:
    every answer is masked and answers its own literals (simple and extended protocol)."""
    before = _decision_cache_hits(guarded)
    with psycopg.connect(guarded.dsn(user=APP), autocommit=True) as conn:
        for i in range(20):
            sql = f"SELECT id, email, name, 'tag-{i}' FROM customers WHERE id = {i % 2}"
            for prepare in (False, True):
                rows = conn.execute(sql + f" AND name <> 'x{i}'", prepare=prepare).fetchall()
                assert rows == ([(1, "****", "Ann", f"tag-{i}")] if i % 2 else [])
    assert _decision_cache_hits(guarded) - before >= 36  # 40 statements, one template
