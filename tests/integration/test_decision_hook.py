"""The decision hook with real clients and a real server: deny and rewrite stay in sync.

The proxy runs in-process here (its own thread and event loop) so the test can
plug in a decider; the command line always wires the allow-all default.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import psycopg
import pytest

from sqlx.config import load_config
from sqlx.proxy.decision import ALLOW, Decision, Outcome, Statement, Verdict
from sqlx.proxy.pg.server import PgProxy
from sqlx.proxy.pg.upstream import parse_dsn
from tests.fixtures.fix_pg import PgServer


class Rules:
    """Denies statements naming 'secret_table'; rewrites 'v_old' to 'v_new'."""

    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []

    def decide(self, statement: Statement) -> Decision:
        if "secret_table" in statement.sql:
            return Decision(Verdict.DENY, reason="secret_table is off limits")
        if "v_old" in statement.sql:
            return Decision(Verdict.REWRITE, sql=statement.sql.replace("v_old", "v_new"))
        return ALLOW

    def observe(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)


class InProcessProxy:
    def __init__(self, pg: PgServer) -> None:
        self.pg, self.rules = pg, Rules()
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        config = load_config(environ={})
        self.proxy = PgProxy(config, parse_dsn(self.pg.upstream_dsn()), self.rules)
        self.port = self.loop.run_until_complete(self.proxy.start("127.0.0.1", 0))
        self.ready.set()
        self.loop.run_forever()

    def dsn(self) -> str:
        return self.pg.dsn().replace(f":{self.pg.port}/", f":{self.port}/", 1)

    def close(self) -> None:
        fut = asyncio.run_coroutine_threadsafe(self.proxy.drain(1), self.loop)
        fut.result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def hooked(pg: PgServer) -> Iterator[InProcessProxy]:
    p = InProcessProxy(pg)
    yield p
    p.close()


@pytest.mark.parametrize("prepare", [False, True])
def test_denied_statement_gets_42501_and_the_session_goes_on(
    hooked: InProcessProxy, prepare: bool
) -> None:
    with psycopg.connect(hooked.dsn(), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="off limits"):
            conn.execute("select * from secret_table", prepare=prepare)
        assert conn.execute("select 'next'", prepare=prepare).fetchone() == ("next",)


def test_denied_statement_in_a_pipeline_reaches_nothing_upstream(hooked: InProcessProxy) -> None:
    with psycopg.connect(hooked.dsn(), autocommit=True) as conn:
        conn.execute("create temp table audit_marker (v int)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.pipeline():
            conn.execute("insert into audit_marker values (1)")
            conn.execute("select * from secret_table")
        # The batch was denied whole: the insert before the denial never ran.
        assert conn.execute("select count(*) from audit_marker").fetchone() == (0,)


def test_rewrite_on_both_paths(hooked: InProcessProxy) -> None:
    with psycopg.connect(hooked.dsn(), autocommit=True) as conn:
        assert conn.execute("select 'v_old'").fetchone() == ("v_new",)
        assert conn.execute("select %s::text || '-v_old'", ("x",)).fetchone() == ("x-v_new",)


def test_outcomes_are_observed(hooked: InProcessProxy) -> None:
    before = len(hooked.rules.outcomes)
    with psycopg.connect(hooked.dsn(), autocommit=True) as conn:
        conn.execute("select 'v_old'")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("select * from secret_table")
    new = hooked.rules.outcomes[before:]
    assert [o.decision.verdict for o in new] == [Verdict.REWRITE, Verdict.DENY]
    assert new[1].error_sqlstate == "42501"


def test_denial_inside_a_transaction_aborts_it_as_postgres_would(hooked: InProcessProxy) -> None:
    with psycopg.connect(hooked.dsn()) as conn:
        conn.execute("create table if not exists hook_tx (v int)")
        conn.commit()
        conn.execute("insert into hook_tx values (1)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("select * from secret_table")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("select 1")
        conn.rollback()
        assert conn.execute("select count(*) from hook_tx").fetchone() == (0,)
        conn.execute("drop table hook_tx")
        conn.commit()


def test_commit_after_a_denial_rolls_back(hooked: InProcessProxy) -> None:
    with psycopg.connect(hooked.dsn(), autocommit=True) as conn:
        conn.execute("create table if not exists hook_commit (v int)")
        conn.execute("truncate hook_commit")
        conn.execute("begin")
        conn.execute("insert into hook_commit values (1)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("select * from secret_table")
        assert conn.execute("commit").statusmessage == "ROLLBACK"
        assert conn.execute("select count(*) from hook_commit").fetchone() == (0,)
        conn.execute("drop table hook_commit")


def test_denial_after_an_extended_protocol_copy(hooked: InProcessProxy, pg: PgServer) -> None:
    from sqlx.proxy.pg import codec
    from sqlx.proxy.pg.codec import BE, FE
    from tests.fixtures.raw import RawClient, error_codes

    client = RawClient("127.0.0.1", hooked.port)
    client.startup(pg.user, pg.database)
    client.send(codec.encode_query("create temp table hook_copy (v int)"))
    client.read_until(BE.READY_FOR_QUERY)
    # libpq's PQexecParams shape: the Sync after Execute reaches a server in COPY IN.
    bind = codec.message(FE.BIND, b"\x00" * 8)  # unnamed portal and statement, no params
    execute = codec.message(FE.EXECUTE, b"\x00" * 5)
    client.send(codec.encode_unnamed_parse("copy hook_copy from stdin") + bind + execute
                + codec.message(FE.SYNC))  # fmt: skip
    client.read_until(BE.COPY_IN_RESPONSE)
    client.send(codec.message(FE.COPY_DATA, b"7\n") + codec.message(FE.COPY_DONE)
                + codec.message(FE.SYNC))  # fmt: skip
    assert [t for t, _ in client.read_until(BE.READY_FOR_QUERY)][-2:] == [
        BE.COMMAND_COMPLETE, BE.READY_FOR_QUERY]  # fmt: skip
    client.send(codec.encode_query("select * from secret_table"))
    assert error_codes(client.read_until(BE.READY_FOR_QUERY)) == ["42501"]
    client.send(codec.encode_query("select v from hook_copy"))
    rows = [m for t, m in client.read_until(BE.READY_FOR_QUERY) if t == BE.DATA_ROW]
    assert rows and rows[0].endswith(b"7")
    client.close()
