"""The MySQL codec and session, fed bytes (no sockets)."""

from __future__ import annotations

import struct

import pytest

from sqlx.proxy.decision import ALLOW, Decision, Outcome, Statement, Verdict
from sqlx.proxy.mysql import codec
from sqlx.proxy.mysql.codec import PacketError, PacketReader
from sqlx.proxy.mysql.session import MySqlSession, StartTls, State

CAPS = (codec.CLIENT_PROTOCOL_41 | codec.CLIENT_SECURE_CONNECTION | codec.CLIENT_PLUGIN_AUTH
        | codec.CLIENT_CONNECT_WITH_DB | codec.CLIENT_COMPRESS | codec.CLIENT_SSL
        | codec.CLIENT_LOCAL_FILES | codec.CLIENT_CONNECT_ATTRS)  # fmt: skip


def _greeting(caps: int = CAPS) -> bytes:
    body = (b"\x0a" + b"10.11.0-MariaDB\x00" + struct.pack("<I", 42) + b"abcdefgh\x00"
            + struct.pack("<H", caps & 0xFFFF) + b"\x21" + struct.pack("<H", 2)
            + struct.pack("<H", caps >> 16) + b"\x15" + b"\x00" * 10 + b"ijklmnopqrst\x00"
            + b"mysql_native_password\x00")  # fmt: skip
    return codec.packet(0, body)


def _response(user: str = "app", db: str = "shop", caps: int = CAPS) -> bytes:
    attrs = b"\x0cprogram_name\x03cli"
    body = (struct.pack("<IIB", caps, 1 << 24, 33) + b"\x00" * 23 + user.encode() + b"\x00"
            + b"\x14" + b"x" * 20 + db.encode() + b"\x00" + b"mysql_native_password\x00"
            + bytes((len(attrs),)) + attrs)  # fmt: skip
    return codec.packet(1, body)


def test_a_long_payload_is_split_and_joined_at_16_mb() -> None:
    payload = bytes(range(256)) * (codec.MAX_PAYLOAD // 256 + 10)
    wire = codec.packet(0, payload)
    assert wire[:3] == b"\xff\xff\xff" and wire[3] == 0
    reader = PacketReader(len(payload))
    out = []
    for i in range(0, len(wire), 1 << 20):
        out += reader.feed(wire[i : i + (1 << 20)])
    (p,) = out
    assert p.payload == payload and p.raw == wire and (p.seq, p.last_seq) == (0, 1)


def test_sequence_ids_out_of_order_and_oversized_packets_are_refused() -> None:
    reader = PacketReader(100)
    reader.expect_seq = 0
    with pytest.raises(PacketError) as err:
        reader.feed(codec.packet(3, b"x"))
    assert err.value.errno == 1156
    with pytest.raises(PacketError) as err:
        PacketReader(100).feed(codec.packet(0, b"x" * 101))
    assert err.value.errno == 1153


def test_the_greeting_loses_what_the_proxy_cannot_carry() -> None:
    s = MySqlSession(_Recorder(), client_addr="10.0.0.1", max_packet_bytes=1 << 20)
    s.receive_server(_greeting())
    (out,) = s.out_client
    caps = codec.read_handshake(out[4:]).capabilities
    assert not caps & (codec.CLIENT_COMPRESS | codec.CLIENT_SSL | codec.CLIENT_LOCAL_FILES)
    assert caps & codec.CLIENT_PLUGIN_AUTH and s.state is State.HANDSHAKE


class _Recorder:
    def __init__(self) -> None:
        self.seen: list[Statement] = []

    def decide(self, statement: Statement) -> Decision:
        self.seen.append(statement)
        if "secret" in statement.sql:
            return Decision(Verdict.DENY, reason='permission denied by policy "x" (ex_1)')
        if "masked" in statement.sql:
            return Decision(Verdict.REWRITE, sql="SELECT '****' FROM masked")
        return ALLOW

    def observe(self, outcome: Outcome) -> None:
        pass


def _ready() -> tuple[MySqlSession, _Recorder]:
    decider = _Recorder()
    s = MySqlSession(decider, client_addr="10.0.0.1", max_packet_bytes=1 << 20)
    s.receive_server(_greeting())
    s.receive_client(_response())
    sent = codec.read_handshake_response(s.out_server[0][4:])
    assert not sent.capabilities & codec.CLIENT_COMPRESS
    assert (sent.user, sent.database, sent.attributes) == ("app", "shop", {"program_name": "cli"})
    s.receive_server(codec.packet(2, b"\x00\x00\x00\x02\x00\x00\x00"))  # OK
    assert s.state is State.READY
    s.out_client.clear()
    s.out_server.clear()
    return s, decider


def test_a_denied_query_is_answered_by_the_proxy_and_never_sent() -> None:
    s, decider = _ready()
    s.receive_client(codec.packet(0, b"\x03SELECT * FROM secret"))
    assert s.out_server == []
    errno, sqlstate, text = codec.read_err(s.out_client[0][4:])
    assert (errno, sqlstate) == (1142, "42000") and "ex_1" in text
    assert s.out_client[0][3] == 1  # the response's sequence id
    assert decider.seen[0].dialect == "mysql"
    s.receive_client(codec.packet(0, b"\x03SELECT 1"))
    assert s.out_server == [codec.packet(0, b"\x03SELECT 1")]


def test_a_rewritten_statement_replaces_the_clients_and_escapes_follow_the_server() -> None:
    s, decider = _ready()
    assert decider is not None and s.backslash_escapes
    s.receive_client(codec.packet(0, b"\x16SELECT m FROM masked WHERE id = ?"))  # PREPARE
    assert s.out_server == [codec.packet(0, b"\x16SELECT '****' FROM masked")]
    s.out_server.clear()
    s.receive_server(codec.packet(1, b"\xff\x28\x04#42000no"))  # its ERR ends it
    # An OK whose status flags say NO_BACKSLASH_ESCAPES: the next statement knows.
    s.receive_client(codec.packet(0, b"\x03SET sql_mode = 'NO_BACKSLASH_ESCAPES'"))
    s.receive_server(codec.packet(1, b"\x00\x00\x00\x02\x02\x00\x00"))
    s.receive_client(codec.packet(0, b"\x03SELECT 1"))
    assert decider.seen[-1].escapes is False and decider.seen[0].escapes is True


def test_a_command_with_no_response_may_be_followed_at_once() -> None:
    s, _ = _ready()
    long_data = codec.packet(0, b"\x18\x01\x00\x00\x00\x01\x00" + b"x" * 10)
    execute = codec.packet(0, b"\x17\x01\x00\x00\x00\x00\x01\x00\x00\x00")
    s.receive_client(long_data + execute)  # one read: both at sequence id 0
    assert s.out_server == [long_data, execute] and s.state is State.READY


def test_a_command_not_at_sequence_zero_closes_the_client() -> None:
    s, _ = _ready()
    s.receive_client(codec.packet(4, b"\x0e"))
    assert codec.read_err(s.out_client[0][4:])[0] == 1156
    assert s.state is State.CLOSED and s.out_server == []


def _row(*values: bytes) -> bytes:
    return b"".join(bytes((len(v),)) + v for v in values)


def test_a_response_is_followed_to_its_end_by_headers_alone() -> None:
    from sqlx.proxy.mysql.responses import Response

    column = b"\x03def" + b"\x00" * 20
    eof_more = b"\xfe\x00\x00\x09\x00"  # status: in transaction, more results
    wire = (codec.packet(1, b"\x01") + codec.packet(2, column) + codec.packet(3, eof_more[:3]
            + b"\x00\x00") + codec.packet(4, _row(b"1")) + codec.packet(5, _row(b"2"))
            + codec.packet(6, eof_more) + codec.packet(7, b"\x00\x01\x00\x01\x00\x00\x00")
            )  # fmt: skip
    r = Response(codec.COM_QUERY, deprecate_eof=False, in_transaction=False)
    for i in range(len(wire)):  # a byte at a time: headers split anywhere
        r.feed(wire[i : i + 1])
    assert r.done and r.rows == 2 and r.error is None and r.in_transaction
    failed = Response(codec.COM_QUERY, deprecate_eof=False, in_transaction=True)
    failed.feed(codec.err_packet(1, 1146, "42S02", "no such table"))
    assert failed.done and (failed.error, failed.sqlstate) == (1146, "42S02")


def test_what_follows_an_ssl_request_in_the_same_read_goes_to_tls() -> None:
    s = MySqlSession(_Recorder(), client_addr="10.0.0.1", max_packet_bytes=1 << 20,
                     tls_available=True)  # fmt: skip
    s.receive_server(_greeting())
    s.out_client.clear()
    ssl_request = codec.packet(1, struct.pack("<IIB23x", CAPS, 1 << 24, 33))
    client_hello = b"\x16\x03\x01\x00\xc8" + b"\x01" * 200  # a TLS record, not a packet
    s.receive_client(ssl_request + client_hello)
    (action,) = s.actions
    assert isinstance(action, StartTls) and action.early == client_hello
    assert s.state is State.HANDSHAKE and s.out_client == [] and s.out_server == []
    s.receive_client(_response()[:3] + b"\x02" + _response()[4:])  # decrypted: the response
    assert codec.read_handshake_response(s.out_server[0][4:]).user == "app"
    assert s.out_server[0][3] == 1  # the server never saw the SSLRequest


def _authenticating(plugin_reply: bytes) -> MySqlSession:
    s = MySqlSession(_Recorder(), client_addr="10.0.0.1", max_packet_bytes=1 << 20)
    s.receive_server(_greeting())
    s.receive_client(_response())
    s.out_server.clear()
    s.out_client.clear()
    s.receive_server(codec.packet(2, plugin_reply))
    return s


@pytest.mark.parametrize("path", ["fast", "full-rsa"])
def test_caching_sha2_exchanges_are_relayed_packet_by_packet(path: str) -> None:
    # caching_sha2_password (MySQL 8): after the scramble the server says 0x01 0x03 (fast
    # path: a cached hash matched, OK follows) or 0x01 0x04 (full: the client sends the
    # password over TLS, or asks for the RSA key with 0x02 and sends it encrypted).
    s = _authenticating(b"\x01\x03" if path == "fast" else b"\x01\x04")
    assert s.out_client == [codec.packet(2, b"\x01\x03" if path == "fast" else b"\x01\x04")]
    seq = 3
    if path == "full-rsa":
        s.receive_client(codec.packet(3, b"\x02"))  # request the public key
        s.receive_server(codec.packet(4, b"\x01-----BEGIN PUBLIC KEY-----\n...\n"))
        s.receive_client(codec.packet(5, b"\xaa" * 256))  # the password, RSA-encrypted
        assert s.out_server == [codec.packet(3, b"\x02"), codec.packet(5, b"\xaa" * 256)]
        seq = 6
    assert s.state is State.AUTHENTICATING
    s.receive_server(codec.packet(seq, b"\x00\x00\x00\x02\x00\x00\x00"))
    assert s.state is State.READY and s.out_client[-1][3] == seq
    s.receive_client(codec.packet(0, b"\x03SELECT 1"))
    assert s.out_server[-1] == codec.packet(0, b"\x03SELECT 1")


def test_an_eof_alone_ends_a_response_and_a_long_rows_tail_is_not_an_eof() -> None:
    from sqlx.proxy.mysql.responses import Response

    set_option = Response(codec.COM_SET_OPTION, deprecate_eof=False, in_transaction=False)
    set_option.feed(codec.packet(1, b"\xfe\x00\x00\x02\x00"))  # COM_SET_OPTION's answer
    assert set_option.done
    # A row of 16 MB and more is sent in parts; the last part may start with 0xFE and
    # is short, as the OK that ends rows under CLIENT_DEPRECATE_EOF is.
    value = b"v" * (codec.MAX_PAYLOAD - 4) + b"\xfe" + b"www"  # its last 4 bytes: a part
    row = b"\xfd" + len(value).to_bytes(3, "little") + value
    r = Response(codec.COM_QUERY, deprecate_eof=True, in_transaction=False)
    column = b"\x03def" + b"\x00" * 20
    r.feed(codec.packet(1, b"\x01") + codec.packet(2, column) + codec.packet(3, row))
    assert not r.done and r.rows == 1
    r.feed(codec.packet(5, b"\xfe\x00\x00\x02\x00\x00\x00"))  # the OK that ends the rows
    assert r.done and r.rows == 1
