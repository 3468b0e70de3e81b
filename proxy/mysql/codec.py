"""MySQL client/server protocol: sans-I/O framing and the few packets the proxy reads.

A packet is a 3-byte little-endian payload length, a 1-byte sequence id and
the payload. A payload of 0xFFFFFF bytes continues in the next packet (the
16 MB split); `PacketReader` joins them into one logical packet, checks that
sequence ids follow each other, and refuses a logical packet larger than its
limit. Everything the proxy does not need to read is forwarded as the same
bytes; this module decodes only the handshake, the handshake response, the
command byte and text of a command, and OK/ERR packets.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

MAX_PAYLOAD = 0xFFFFFF  # a payload this long continues in the next packet

# Capability flags (the ones the proxy looks at or changes).
CLIENT_CONNECT_WITH_DB = 0x00000008
CLIENT_COMPRESS = 0x00000020
CLIENT_LOCAL_FILES = 0x00000080
CLIENT_PROTOCOL_41 = 0x00000200
CLIENT_SSL = 0x00000800
CLIENT_SECURE_CONNECTION = 0x00008000
CLIENT_MULTI_STATEMENTS = 0x00010000
CLIENT_PLUGIN_AUTH = 0x00080000
CLIENT_CONNECT_ATTRS = 0x00100000
CLIENT_PLUGIN_AUTH_LENENC_DATA = 0x00200000
CLIENT_SESSION_TRACK = 0x00800000
CLIENT_DEPRECATE_EOF = 0x01000000
CLIENT_ZSTD_COMPRESSION = 0x04000000
CLIENT_QUERY_ATTRIBUTES = 0x08000000
# What the proxy never lets through: it cannot carry compressed packets, reads COM_QUERY
# without query attributes, and answers LOCAL INFILE itself (refused by default).
WITHHELD = (CLIENT_COMPRESS | CLIENT_ZSTD_COMPRESSION | CLIENT_QUERY_ATTRIBUTES
            | CLIENT_LOCAL_FILES)  # fmt: skip

# Commands.
COM_QUIT = 0x01
COM_INIT_DB = 0x02
COM_QUERY = 0x03
COM_FIELD_LIST = 0x04
COM_STATISTICS = 0x09
COM_PING = 0x0E
COM_CHANGE_USER = 0x11
COM_STMT_PREPARE = 0x16
COM_STMT_EXECUTE = 0x17
COM_STMT_SEND_LONG_DATA = 0x18
COM_STMT_CLOSE = 0x19
COM_STMT_RESET = 0x1A
COM_SET_OPTION = 0x1B
COM_STMT_FETCH = 0x1C
COM_RESET_CONNECTION = 0x1F
# Commands the server does not answer.
NO_RESPONSE = frozenset((COM_STMT_SEND_LONG_DATA, COM_STMT_CLOSE, COM_QUIT))

OK, EOF, ERR, AUTH_MORE_DATA, LOCAL_INFILE = 0x00, 0xFE, 0xFF, 0x01, 0xFB


class PacketError(Exception):
    """A client or server broke the framing; `errno` and text go in the ERR packet."""

    def __init__(self, text: str, errno: int = 1153) -> None:
        super().__init__(text)
        self.errno = errno


@dataclass(frozen=True, slots=True)
class Packet:
    seq: int  # the sequence id of its first (or only) wire packet
    last_seq: int  # of its last wire packet (a continued payload spans several)
    payload: bytes
    raw: bytes  # its bytes as they came, header(s) included


class PacketReader:
    """Frames one direction of a MySQL stream into logical packets."""

    __slots__ = ("_buf", "_first_seq", "_parts", "_raw", "commands", "expect_seq", "max_payload")

    def __init__(self, max_payload: int, commands: bool = False) -> None:
        self.max_payload = max_payload
        self.expect_seq: int | None = None  # the next sequence id, when it is known
        # A client between commands: each logical packet is a command of its own, and
        # the next one starts again at 0 (one with no response may be followed at once).
        self.commands = commands
        self._buf = b""
        self._parts: list[bytes] = []
        self._raw: list[bytes] = []
        self._first_seq = 0

    @property
    def mid_packet(self) -> bool:
        return bool(self._buf) or bool(self._parts)

    def feed(self, data: bytes, limit: int = 0) -> list[Packet]:
        """The logical packets complete so far (at most `limit` of them, when set)."""
        buf = self._buf + data if self._buf else data
        out: list[Packet] = []
        pos, n = 0, len(buf)
        while pos + 4 <= n:
            length = buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16
            end = pos + 4 + length
            if end > n:
                break
            seq = buf[pos + 3]
            if self.expect_seq is not None and seq != self.expect_seq:
                raise PacketError(f"packets out of order: sequence id {seq}, expected "
                                  f"{self.expect_seq}", errno=1156)  # fmt: skip
            self.expect_seq = (seq + 1) & 0xFF
            if not self._parts:
                self._first_seq = seq
            self._parts.append(buf[pos + 4 : end])
            self._raw.append(buf[pos:end])
            size = sum(len(p) for p in self._parts)
            if size > self.max_payload:
                raise PacketError(f"packet of more than {self.max_payload} bytes", errno=1153)
            pos = end
            if length < MAX_PAYLOAD:
                payload = self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)
                raw = self._raw[0] if len(self._raw) == 1 else b"".join(self._raw)
                out.append(Packet(self._first_seq, seq, payload, raw))
                self._parts, self._raw = [], []
                if self.commands:
                    self.expect_seq = 0
                if limit and len(out) == limit:
                    break
        self._buf = buf[pos:]
        return out

    def take_rest(self) -> bytes:
        """What was read past the last packet returned (the stream goes on in another
        protocol, e.g. TLS after an SSLRequest), leaving the reader empty."""
        rest = b"".join(self._raw) + self._buf
        self._buf, self._parts, self._raw = b"", [], []
        return rest


def packet(seq: int, payload: bytes) -> bytes:
    """One logical packet as wire packets (split at 16 MB)."""
    seq &= 0xFF
    out = []
    while True:
        chunk, payload = payload[:MAX_PAYLOAD], payload[MAX_PAYLOAD:]
        out.append(struct.pack("<I", len(chunk))[:3] + bytes((seq & 0xFF,)) + chunk)
        seq += 1
        if len(chunk) < MAX_PAYLOAD:
            return b"".join(out)


def err_packet(seq: int, errno: int, sqlstate: str, text: str) -> bytes:
    body = b"\xff" + struct.pack("<H", errno) + b"#" + sqlstate.encode()[:5] + text.encode()
    return packet(seq, body)


def read_err(payload: bytes) -> tuple[int, str, str]:
    """(errno, sqlstate, message) of an ERR packet (4.1 protocol)."""
    errno = struct.unpack_from("<H", payload, 1)[0]
    if payload[3:4] == b"#":
        return errno, payload[4:9].decode(errors="replace"), payload[9:].decode(errors="replace")
    return errno, "HY000", payload[3:].decode(errors="replace")


# --- the connection phase ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Handshake:
    """The server's greeting: where its capability flags sit, so they can be changed."""

    server_version: str
    connection_id: int
    capabilities: int
    caps_low_at: int  # payload offsets of the two halves
    caps_high_at: int


def read_handshake(payload: bytes) -> Handshake:
    if not payload or payload[0] != 10:
        raise PacketError("not a protocol 10 handshake", errno=1043)
    end = payload.index(b"\x00", 1)
    version = payload[1:end].decode(errors="replace")
    pos = end + 1
    connection_id = struct.unpack_from("<I", payload, pos)[0]
    low_at = pos + 4 + 8 + 1
    low = struct.unpack_from("<H", payload, low_at)[0]
    high_at = low_at + 2 + 1 + 2
    high = struct.unpack_from("<H", payload, high_at)[0] if len(payload) >= high_at + 2 else 0
    return Handshake(version, connection_id, low | high << 16, low_at, high_at)


def with_capabilities(payload: bytes, handshake: Handshake, capabilities: int) -> bytes:
    """The greeting with other capability flags."""
    data = bytearray(payload)
    struct.pack_into("<H", data, handshake.caps_low_at, capabilities & 0xFFFF)
    if len(data) >= handshake.caps_high_at + 2:
        struct.pack_into("<H", data, handshake.caps_high_at, capabilities >> 16)
    return bytes(data)


@dataclass(frozen=True, slots=True)
class HandshakeResponse:
    capabilities: int
    user: str
    database: str
    attributes: dict[str, str]
    ssl_request: bool  # only the capability header: the client asks for TLS first


def read_lenenc(payload: bytes, pos: int) -> tuple[int, int]:
    """A length-encoded integer at `pos`: (its value, the position after it)."""
    first = payload[pos]
    if first < 0xFB:
        return first, pos + 1
    if first == 0xFC:
        return struct.unpack_from("<H", payload, pos + 1)[0], pos + 3
    if first == 0xFD:
        return int.from_bytes(payload[pos + 1 : pos + 4], "little"), pos + 4
    return struct.unpack_from("<Q", payload, pos + 1)[0], pos + 9


def _cstring(payload: bytes, pos: int) -> tuple[str, int]:
    end = payload.find(b"\x00", pos)
    if end < 0:
        end = len(payload)
    return payload[pos:end].decode(errors="replace"), end + 1


def read_handshake_response(payload: bytes) -> HandshakeResponse:
    if len(payload) < 32:
        if len(payload) >= 4:
            caps = struct.unpack_from("<I", payload, 0)[0]
            if caps & CLIENT_SSL:
                return HandshakeResponse(caps, "", "", {}, True)
        raise PacketError("handshake response too short", errno=1043)
    caps = struct.unpack_from("<I", payload, 0)[0]
    if not caps & CLIENT_PROTOCOL_41:
        raise PacketError("clients older than the 4.1 protocol are not supported", errno=1043)
    if len(payload) == 32:
        return HandshakeResponse(caps, "", "", {}, True)
    user, pos = _cstring(payload, 32)
    if caps & CLIENT_PLUGIN_AUTH_LENENC_DATA:
        length, pos = read_lenenc(payload, pos)
        pos += length
    elif caps & CLIENT_SECURE_CONNECTION:
        pos += 1 + payload[pos]
    else:
        _, pos = _cstring(payload, pos)
    database = ""
    if caps & CLIENT_CONNECT_WITH_DB and pos < len(payload):
        database, pos = _cstring(payload, pos)
    if caps & CLIENT_PLUGIN_AUTH and pos < len(payload):
        _, pos = _cstring(payload, pos)
    attributes: dict[str, str] = {}
    if caps & CLIENT_CONNECT_ATTRS and pos < len(payload):
        total, pos = read_lenenc(payload, pos)
        end = min(pos + total, len(payload))
        while pos < end:
            klen, pos = read_lenenc(payload, pos)
            key = payload[pos : pos + klen].decode(errors="replace")
            pos += klen
            vlen, pos = read_lenenc(payload, pos)
            attributes[key] = payload[pos : pos + vlen].decode(errors="replace")
            pos += vlen
    return HandshakeResponse(caps, user, database, attributes, False)


def response_with_capabilities(payload: bytes, capabilities: int) -> bytes:
    return struct.pack("<I", capabilities) + payload[4:]


def read_change_user(payload: bytes, capabilities: int) -> tuple[str, str]:
    """(user, database) of a COM_CHANGE_USER."""
    user, pos = _cstring(payload, 1)
    if capabilities & CLIENT_SECURE_CONNECTION:
        pos += 1 + (payload[pos] if pos < len(payload) else 0)
    else:
        _, pos = _cstring(payload, pos)
    database, _ = _cstring(payload, pos) if pos < len(payload) else ("", pos)
    return user, database
