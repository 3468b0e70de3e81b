"""The codec, fed bytes: framing at every split point, limits, startup packets, fuzzing."""

from __future__ import annotations

import ast
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sqlx.proxy.pg import codec
from sqlx.proxy.pg.codec import BE, FE, INSPECT, PASS, ProtocolViolation

READY_TABLE = codec.tag_table(codec.FRONTEND_TAGS, (FE.QUERY, FE.SYNC))


def _stream() -> bytes:
    return (
        codec.encode_query("select 1")
        + codec.message(FE.BIND, b"\x00\x00" + b"\x00" * 6)
        + codec.message(FE.COPY_DATA, b"x" * 5000)
        + codec.message(FE.SYNC)
    )


def _scan_in_pieces(data: bytes, cuts: list[int]) -> tuple[bytes, list[bytes]]:
    scanner = codec.MessageScanner(READY_TABLE, 1 << 20)
    out, inspected, prev = b"", [], 0
    for cut in [*cuts, len(data)]:
        consumed, items = scanner.feed(data[prev:cut])
        inspected += [consumed[s:e] for _, s, e in items]
        out += consumed
        prev = cut
    return out, inspected


def test_scanner_returns_every_byte_in_order_and_only_inspected_messages() -> None:
    data = _stream()
    out, inspected = _scan_in_pieces(data, [])
    assert out == data
    assert inspected == [codec.encode_query("select 1"), codec.message(FE.SYNC)]


@pytest.mark.parametrize("cut", range(1, 80))
def test_scanner_gives_the_same_result_at_any_split(cut: int) -> None:
    data = _stream()
    assert _scan_in_pieces(data, [cut]) == _scan_in_pieces(data, [])


def test_scanner_streams_a_large_pass_message_without_holding_it() -> None:
    scanner = codec.MessageScanner(READY_TABLE, 1 << 30)
    header = struct.pack("!cI", b"d", 4 + 100_000_000)
    consumed, items = scanner.feed(header + b"a" * 1000)
    assert consumed == header + b"a" * 1000 and items == []
    assert scanner.buffered == 0 and scanner.mid_message
    consumed, _ = scanner.feed(b"b" * 65536)
    assert len(consumed) == 65536


def test_scanner_holds_an_incomplete_inspected_message() -> None:
    scanner = codec.MessageScanner(READY_TABLE, 1 << 20)
    query = codec.encode_query("select 42")
    consumed, items = scanner.feed(query[:-3])
    assert consumed == b"" and items == []
    consumed, items = scanner.feed(query[-3:])
    assert consumed == query and items == [(FE.QUERY, 0, len(query))]


@pytest.mark.parametrize("length", [0, 3])
def test_length_below_four_is_a_violation(length: int) -> None:
    scanner = codec.MessageScanner(READY_TABLE, 1 << 20)
    with pytest.raises(ProtocolViolation, match="invalid message length"):
        scanner.feed(b"Q" + struct.pack("!I", length))


def test_length_over_the_limit_is_a_violation() -> None:
    scanner = codec.MessageScanner(READY_TABLE, 1024)
    with pytest.raises(ProtocolViolation, match="over the limit of 1024"):
        scanner.feed(b"d" + struct.pack("!I", 2048))


def test_unknown_message_type_is_a_violation() -> None:
    scanner = codec.MessageScanner(READY_TABLE, 1024)
    with pytest.raises(ProtocolViolation, match="invalid message type 'z'"):
        scanner.feed(b"z" + struct.pack("!I", 4))


def test_startup_message_round_trip() -> None:
    params = {"user": "alice", "database": "shop", "application_name": "ä app"}
    packet = codec.encode_startup(params)
    first = codec.parse_first_packet(packet)
    assert first == codec.StartupMessage(codec.PROTOCOL_3_0, params)


def test_startup_special_requests() -> None:
    assert isinstance(codec.parse_first_packet(codec.encode_ssl_request()), codec.SSLRequest)
    gss = struct.pack("!II", 8, codec.GSSENC_REQUEST_CODE)
    assert isinstance(codec.parse_first_packet(gss), codec.GSSENCRequest)
    cancel = codec.parse_first_packet(codec.encode_cancel_request(1234, 99))
    assert cancel == codec.CancelRequest(1234, 99)


def test_unsupported_protocol_version_is_a_violation() -> None:
    packet = struct.pack("!II", 9, 2 << 16) + b"\x00"
    with pytest.raises(ProtocolViolation, match=r"unsupported frontend protocol 2\.0"):
        codec.parse_first_packet(packet)


@pytest.mark.parametrize("length", [0, 7, 10001])
def test_startup_reader_rejects_bad_lengths(length: int) -> None:
    with pytest.raises(ProtocolViolation, match="invalid length of startup packet"):
        codec.StartupReader().feed(struct.pack("!I", length) + b"\x00" * 8)


def test_startup_reader_waits_for_the_whole_packet_and_returns_the_rest() -> None:
    packet = codec.encode_startup({"user": "u"})
    reader = codec.StartupReader()
    assert reader.feed(packet[:3]) == (None, b"")
    assert reader.feed(packet[3:] + b"extra") == (packet, b"extra")


def test_error_response_encoding_reads_back() -> None:
    err = codec.encode_error("08P01", "bad frame", fatal=True, detail="d")
    fields = codec.read_error_fields(err)
    assert fields == {"S": "FATAL", "V": "FATAL", "C": "08P01", "M": "bad frame", "D": "d"}


def test_parse_reencodes_with_new_text() -> None:
    original = codec.message(FE.PARSE, b"s1\x00select $1\x00\x00\x01\x00\x00\x00\x17")
    parse = codec.read_parse(original)
    assert (parse.name, parse.query) == ("s1", "select $1")
    assert codec.encode_parse(parse, "select $1") == original


def test_sasl_mechanism_list_round_trip() -> None:
    msg = codec.encode_sasl_mechanisms(["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"])
    assert codec.read_auth_code(msg) == codec.Auth.SASL
    assert codec.read_sasl_mechanisms(msg) == ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=12))
def test_fuzzed_typed_streams_raise_only_the_codecs_error(chunks: list[bytes]) -> None:
    scanner = codec.MessageScanner(READY_TABLE, 4096)
    try:
        for chunk in chunks:
            scanner.feed(chunk)
    except ProtocolViolation:
        pass


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_fuzzed_startup_packets_raise_only_the_codecs_error(data: bytes) -> None:
    try:
        packet, _ = codec.StartupReader().feed(data)
        if packet is not None:
            codec.parse_first_packet(packet)
    except ProtocolViolation:
        pass


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(sorted(codec.FRONTEND_TAGS)), st.binary(max_size=40)),
                max_size=10), st.integers(min_value=0, max_value=400))  # fmt: skip
def test_well_formed_streams_survive_any_split(msgs: list[tuple[int, bytes]], cut: int) -> None:
    data = b"".join(codec.message(t, b) for t, b in msgs)
    cut = min(cut, len(data))
    assert _scan_in_pieces(data, [cut]) == _scan_in_pieces(data, [])


def test_sans_io_modules_import_no_io() -> None:
    root = Path(__file__).resolve().parents[2] / "proxy" / "pg"
    for name in ("codec.py", "session.py"):
        tree = ast.parse((root / name).read_text())
        imported = {
            alias.name.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.Import | ast.ImportFrom)
            for alias in (node.names if isinstance(node, ast.Import) else [node])  # type: ignore[attr-defined]
            if isinstance(node, ast.Import)
        } | {
            (node.module or "").split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom)
        }
        assert not imported & {"asyncio", "socket", "ssl", "selectors"}, name


def test_tag_tables() -> None:
    table = codec.tag_table([FE.BIND], [FE.QUERY])
    assert table[FE.BIND] == PASS and table[FE.QUERY] == INSPECT and table[ord("z")] == 0
    assert ord("Z") == BE.READY_FOR_QUERY
