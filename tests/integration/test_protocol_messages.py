"""Asynchronous and rarer messages through the proxy: notices, parameter status, FunctionCall."""

from __future__ import annotations

import hashlib
import struct

import psycopg

from sqlx.proxy.pg import codec
from sqlx.proxy.pg.codec import BE, FE
from tests.fixtures.fix_pg import PgServer
from tests.fixtures.fix_proxy import ProxyProcess
from tests.fixtures.raw import RawClient


def test_notice_response(proxy: ProxyProcess) -> None:
    notices: list[str] = []
    with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
        conn.add_notice_handler(lambda diag: notices.append(diag.message_primary))
        conn.execute("do $$ begin raise notice 'careful: %', 42; end $$")
    assert notices == ["careful: 42"]


def test_parameter_status_follows_set(proxy: ProxyProcess) -> None:
    with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
        conn.execute("set application_name = 'renamed-through-proxy'")
        assert conn.info.parameter_status("application_name") == "renamed-through-proxy"
        conn.execute("set timezone = 'Asia/Tokyo'")
        assert conn.info.parameter_status("TimeZone") == "Asia/Tokyo"


def test_function_call_message(proxy: ProxyProcess, pg: PgServer) -> None:
    client = RawClient(proxy.host, proxy.port)
    client.startup(pg.user, pg.database)
    client.send(codec.encode_query("select 'md5(text)'::regprocedure::oid"))
    (oid,) = [int(m[11:].decode()) for t, m in client.read_until(BE.READY_FOR_QUERY)
              if t == BE.DATA_ROW]  # fmt: skip
    arg = b"through the proxy"
    payload = struct.pack("!IhhhI", oid, 1, 0, 1, len(arg)) + arg + struct.pack("!h", 0)
    client.send(codec.message(FE.FUNCTION_CALL, payload))
    replies = client.read_until(BE.READY_FOR_QUERY)
    (result,) = [m for t, m in replies if t == BE.FUNCTION_CALL_RESPONSE]
    assert result[9:] == hashlib.md5(arg).hexdigest().encode()
    client.close()


def test_empty_query_and_pipelined_simple_queries(proxy: ProxyProcess, pg: PgServer) -> None:
    client = RawClient(proxy.host, proxy.port)
    client.startup(pg.user, pg.database)
    client.send(codec.encode_query("") + codec.encode_query("select 1") + codec.encode_query(";"))
    tags = []
    for _ in range(3):
        tags += [t for t, _ in client.read_until(BE.READY_FOR_QUERY)]
    assert tags == [BE.EMPTY_QUERY_RESPONSE, BE.READY_FOR_QUERY, BE.ROW_DESCRIPTION,
                    BE.DATA_ROW, BE.COMMAND_COMPLETE, BE.READY_FOR_QUERY,
                    BE.EMPTY_QUERY_RESPONSE, BE.READY_FOR_QUERY]  # fmt: skip
    client.close()


def test_gssenc_request_is_declined_and_the_session_continues(
    proxy: ProxyProcess, pg: PgServer
) -> None:
    client = RawClient(proxy.host, proxy.port)
    client.send(struct.pack("!II", 8, 80877104))  # GSSENCRequest
    assert client.sock.recv(1) == b"N"
    client.startup(pg.user, pg.database)
    client.send(codec.encode_query("select 'after gssenc'"))
    rows = [m for t, m in client.read_until(BE.READY_FOR_QUERY) if t == BE.DATA_ROW]
    assert rows and rows[0].endswith(b"after gssenc")
    client.close()
