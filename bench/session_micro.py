"""Cost of the session's own work per pgbench -S transaction, without sockets.

Feeds the bytes of one prepared select-only transaction (Bind/Execute/Sync in,
BindComplete/DataRow/CommandComplete/ReadyForQuery out) and of one simple
Query through `PgSession` and reports nanoseconds per transaction: the part
of the proxy's per-statement cost that is Python logic rather than I/O.

    .venv/bin/python -m sqlx.bench.session_micro
"""

from __future__ import annotations

import time

from sqlx.proxy.decision import AllowAll
from sqlx.proxy.pg import codec
from sqlx.proxy.pg.codec import BE, FE
from sqlx.proxy.pg.session import PgSession


def _ready_session() -> PgSession:
    s = PgSession(AllowAll(), key=(1, 2), client_addr="127.0.0.1", tls_available=False,
                  max_message_bytes=1 << 30, max_held_batch_bytes=1 << 24)  # fmt: skip
    s.receive_client(codec.encode_startup({"user": "bench"}))
    s.upstream_connected()
    s.receive_server(codec.message(BE.AUTHENTICATION, b"\x00" * 4)
                     + codec.encode_ready_for_query(codec.TxStatus.IDLE))  # fmt: skip
    s.out_client.clear()
    s.actions.clear()
    return s


def _measure(client: bytes, server: bytes, n: int) -> float:
    s = _ready_session()
    out_s, out_c = s.out_server, s.out_client
    rc, rs = s.receive_client, s.receive_server
    start = time.perf_counter_ns()
    for _ in range(n):
        rc(client)
        out_s.clear()
        rs(server)
        out_c.clear()
    return (time.perf_counter_ns() - start) / n


BIND = b"\x00P0_1\x00\x00\x01\x00\x01\x00\x01\x00\x00\x00\x04\x00\x00\x00\x07\x00\x01\x00\x01"
ROW = b"\x00\x01\x00\x00\x00\x04\x00\x00\x00\x07"
SQL = "SELECT abalance FROM pgbench_accounts WHERE aid = 4711;"


def main(n: int = 300_000) -> None:
    prepared_in = b"".join(
        [codec.message(FE.BIND, BIND), codec.message(FE.EXECUTE, b"\x00" * 5),
         codec.message(FE.SYNC)]
    )  # fmt: skip
    tail = codec.message(BE.DATA_ROW, ROW) + codec.message(BE.COMMAND_COMPLETE, b"SELECT 1\x00")
    tail += codec.encode_ready_for_query(codec.TxStatus.IDLE)
    reply = codec.message(BE.BIND_COMPLETE) + tail
    simple_in = codec.encode_query(SQL)
    simple_reply = codec.message(BE.ROW_DESCRIPTION, b"\x00\x01abalance\x00" + b"\x00" * 18) + tail
    for name, cin, sout in (("prepared", prepared_in, reply), ("simple", simple_in, simple_reply)):
        per = min(_measure(cin, sout, n) for _ in range(3))
        print(f"{name:9} {per:7.0f} ns per transaction (session logic, both directions)")


if __name__ == "__main__":
    main()
