"""PostgreSQL v3 wire codec: framing, and the few messages the proxy reads or writes.

Sans-I/O: bytes in, values and bytes out; no asyncio, socket or ssl here.
Framing follows the protocol docs ("Message Formats"): a typed message is one
tag byte and an Int32 length that counts itself but not the tag; the first
packet of a connection has no tag. The scanner reads headers only and decodes
a message body only for the tags a caller asked to inspect, so everything
else is forwarded as the bytes that arrived (PgBouncer, PgDog).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# --- Message tags, named as in the protocol documentation -------------------


class FE:
    """Frontend (client → server) message tags."""

    BIND = ord("B")
    CLOSE = ord("C")
    COPY_DATA = ord("d")
    COPY_DONE = ord("c")
    COPY_FAIL = ord("f")
    DESCRIBE = ord("D")
    EXECUTE = ord("E")
    FLUSH = ord("H")
    FUNCTION_CALL = ord("F")
    PARSE = ord("P")
    # PasswordMessage, SASLInitialResponse, SASLResponse, GSSResponse share 'p'.
    PASSWORD_MESSAGE = ord("p")
    QUERY = ord("Q")
    SYNC = ord("S")
    TERMINATE = ord("X")


class BE:
    """Backend (server → client) message tags."""

    AUTHENTICATION = ord("R")
    BACKEND_KEY_DATA = ord("K")
    BIND_COMPLETE = ord("2")
    CLOSE_COMPLETE = ord("3")
    COMMAND_COMPLETE = ord("C")
    COPY_DATA = ord("d")
    COPY_DONE = ord("c")
    COPY_IN_RESPONSE = ord("G")
    COPY_OUT_RESPONSE = ord("H")
    COPY_BOTH_RESPONSE = ord("W")
    DATA_ROW = ord("D")
    EMPTY_QUERY_RESPONSE = ord("I")
    ERROR_RESPONSE = ord("E")
    FUNCTION_CALL_RESPONSE = ord("V")
    NEGOTIATE_PROTOCOL_VERSION = ord("v")
    NO_DATA = ord("n")
    NOTICE_RESPONSE = ord("N")
    NOTIFICATION_RESPONSE = ord("A")
    PARAMETER_DESCRIPTION = ord("t")
    PARAMETER_STATUS = ord("S")
    PARSE_COMPLETE = ord("1")
    PORTAL_SUSPENDED = ord("s")
    READY_FOR_QUERY = ord("Z")
    ROW_DESCRIPTION = ord("T")


FRONTEND_TAGS = frozenset(v for k, v in vars(FE).items() if k.isupper())
BACKEND_TAGS = frozenset(v for k, v in vars(BE).items() if k.isupper())

# Request codes carried in the protocol-version field of an untagged packet.
PROTOCOL_3_0 = 3 << 16
CANCEL_REQUEST_CODE = 80877102
SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104

# The server refuses startup packets above this size (MAX_STARTUP_PACKET_LENGTH).
MAX_STARTUP_PACKET = 10000


class Auth:
    """Authentication request codes inside an 'R' message."""

    OK = 0
    KERBEROS_V5 = 2
    CLEARTEXT_PASSWORD = 3
    MD5_PASSWORD = 5
    GSS = 7
    GSS_CONTINUE = 8
    SSPI = 9
    SASL = 10
    SASL_CONTINUE = 11
    SASL_FINAL = 12


class TxStatus:
    """ReadyForQuery transaction status indicator bytes."""

    IDLE = ord("I")
    IN_TRANSACTION = ord("T")
    FAILED = ord("E")


_HEADER = struct.Struct("!cI")
_INT32 = struct.Struct("!I")
_UNPACK_LENGTH = _INT32.unpack_from
_TWO_INT32 = struct.Struct("!II")
_UINT16 = struct.Struct("!H")
_THREE_INT32 = struct.Struct("!III")


# --- Errors -----------------------------------------------------------------


class ProtocolViolation(Exception):
    """The peer broke the framing rules: answer 08P01 and close that client."""

    sqlstate = "08P01"
    fatal = True


# --- Framing ----------------------------------------------------------------

PASS = 1
INSPECT = 2


def tag_table(allowed: Iterable[int], inspect: Iterable[int], unknown: int = 0) -> bytes:
    """A 256-entry lookup: 0 unknown (a violation), PASS, or INSPECT, per tag byte."""
    table = bytearray([unknown]) * 256
    for tag in allowed:
        table[tag] = PASS
    for tag in inspect:
        table[tag] = INSPECT
    return bytes(table)


class MessageScanner:
    """Splits a stream of typed messages, reading headers only.

    `feed(data)` returns `(consumed, inspected)`: `consumed` is every byte the
    caller may act on now, in order; `inspected` lists `(tag, start, end)` of the
    whole messages inside it whose tag the table marks INSPECT. A message of a
    PASS tag that has not fully arrived is still released as it streams in
    (a 100 MB CopyData is never held whole); an incomplete header or an
    incomplete inspected message is kept until more bytes come. `last_tag` is
    the tag of the last message whose header has been read.
    """

    __slots__ = ("_buf", "_need", "_parts", "_size", "_skip", "last_tag", "max_length", "table")

    def __init__(self, table: bytes, max_length: int) -> None:
        self.table = table
        self.max_length = max_length
        self._buf = b""
        self._skip = 0
        # A large inspected message arriving in pieces is collected in a list and
        # joined once: re-concatenating per chunk would cost quadratic copying.
        self._parts: list[bytes] = []
        self._size = 0
        self._need = 0
        self.last_tag = 0

    @property
    def buffered(self) -> int:
        return len(self._buf) + self._size

    @property
    def mid_message(self) -> bool:
        """Part of a message has been seen or released but not all of it."""
        return bool(self._buf) or self._skip > 0 or self._size > 0

    def take_buffer(self) -> bytes:
        """Hand back the unconsumed bytes (for re-scanning under another table)."""
        rest = b"".join([self._buf, *self._parts])
        self._buf, self._parts, self._size, self._need = b"", [], 0, 0
        return rest

    def feed(self, data: bytes) -> tuple[bytes, list[tuple[int, int, int]]]:
        if self._need:
            self._parts.append(data)
            self._size += len(data)
            if self._size < self._need:
                return b"", []
            data = b"".join(self._parts)
            self._parts, self._size, self._need = [], 0, 0
        elif self._buf:
            data = self._buf + data
            self._buf = b""
        n = len(data)
        pos = 0
        if self._skip:
            if self._skip >= n:
                self._skip -= n
                return data, []
            pos = self._skip
            self._skip = 0
        inspected: list[tuple[int, int, int]] = []
        table = self.table
        limit = self.max_length
        unpack = _UNPACK_LENGTH
        tag = self.last_tag
        while pos + 5 <= n:
            tag = data[pos]
            length = unpack(data, pos + 1)[0]
            if length < 4 or length > limit:
                raise _bad_length(tag, length, limit)
            end = pos + 1 + length
            kind = table[tag]
            if kind == INSPECT:
                if end > n:
                    self._parts, self._size, self._need = [data[pos:]], n - pos, end - pos
                    self.last_tag = tag
                    return data[:pos], inspected
                inspected.append((tag, pos, end))
            elif kind != PASS:
                raise ProtocolViolation(f"invalid message type {_show_tag(tag)}")
            elif end > n:
                self._skip = end - n
                pos = n
                break
            pos = end
        self.last_tag = tag
        if pos < n:
            self._buf = data[pos:]
            return data[:pos], inspected
        return data, inspected


def _show_tag(tag: int) -> str:
    return repr(chr(tag)) if 32 <= tag < 127 else f"0x{tag:02x}"


def _bad_length(tag: int, length: int, limit: int) -> ProtocolViolation:
    if length < 4:
        return ProtocolViolation(f"invalid message length {length} for type {_show_tag(tag)}")
    return ProtocolViolation(
        f"message of type {_show_tag(tag)} is {length} bytes, over the limit of {limit}"
    )


class StartupReader:
    """Collects the untagged first packet of a connection (or of a renegotiation)."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> tuple[bytes | None, bytes]:
        """Return `(packet, rest)`; `packet` is None until it is whole."""
        buf = self._buf + data
        if len(buf) < 4:
            self._buf = buf
            return None, b""
        (length,) = _INT32.unpack_from(buf)
        if length < 8 or length > MAX_STARTUP_PACKET:
            raise ProtocolViolation(f"invalid length of startup packet: {length}")
        if len(buf) < length:
            self._buf = buf
            return None, b""
        self._buf = b""
        return buf[:length], buf[length:]


# --- Untagged packets ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartupMessage:
    protocol: int
    params: dict[str, str]

    @property
    def major(self) -> int:
        return self.protocol >> 16

    @property
    def minor(self) -> int:
        return self.protocol & 0xFFFF


@dataclass(frozen=True, slots=True)
class CancelRequest:
    pid: int
    secret: int


@dataclass(frozen=True, slots=True)
class SSLRequest:
    pass


@dataclass(frozen=True, slots=True)
class GSSENCRequest:
    pass


FirstPacket = StartupMessage | CancelRequest | SSLRequest | GSSENCRequest


def parse_first_packet(packet: bytes) -> FirstPacket:
    """Decode the untagged first packet; unknown codes and bad layouts are violations."""
    (code,) = _INT32.unpack_from(packet, 4)
    if code == SSL_REQUEST_CODE and len(packet) == 8:
        return SSLRequest()
    if code == GSSENC_REQUEST_CODE and len(packet) == 8:
        return GSSENCRequest()
    if code == CANCEL_REQUEST_CODE:
        # Protocol 3.2 allows longer secret keys; the proxy issues 4-byte ones.
        if len(packet) != 16:
            raise ProtocolViolation("invalid length of cancel request packet")
        pid, secret = _TWO_INT32.unpack_from(packet, 8)
        return CancelRequest(pid, secret)
    if code >> 16 != 3:
        raise ProtocolViolation(
            f"unsupported frontend protocol {code >> 16}.{code & 0xFFFF}: "
            "server supports 3.0 to 3.0"
        )
    body = packet[8:]
    if not body.endswith(b"\x00"):
        raise ProtocolViolation("invalid startup packet layout: expected terminator as last byte")
    # name\0value\0 ... \0: drop the final terminator, then split the strings.
    strings = body[:-1]
    if strings and not strings.endswith(b"\x00"):
        raise ProtocolViolation("invalid startup packet layout: unterminated string")
    parts = strings.split(b"\x00")[:-1]
    if len(parts) % 2:
        raise ProtocolViolation("invalid startup packet layout: odd number of strings")
    try:
        decoded = [p.decode("utf-8") for p in parts]
    except UnicodeDecodeError as exc:
        raise ProtocolViolation("invalid byte sequence in startup packet") from exc
    params = dict(zip(decoded[::2], decoded[1::2], strict=True))
    return StartupMessage(code, params)


def encode_startup(params: Mapping[str, str], protocol: int = PROTOCOL_3_0) -> bytes:
    body = b"".join(k.encode() + b"\x00" + v.encode() + b"\x00" for k, v in params.items())
    body += b"\x00"
    return _TWO_INT32.pack(8 + len(body), protocol) + body


def encode_ssl_request() -> bytes:
    return _TWO_INT32.pack(8, SSL_REQUEST_CODE)


def encode_cancel_request(pid: int, secret: int) -> bytes:
    return _THREE_INT32.pack(16, CANCEL_REQUEST_CODE, pid) + _INT32.pack(secret)


# --- Typed messages the proxy reads -------------------------------------------


def body(message: bytes) -> bytes:
    """The payload of one whole typed message."""
    return message[5:]


def _cstring(buf: bytes, pos: int) -> tuple[str, int]:
    end = buf.find(b"\x00", pos)
    if end < 0:
        raise ProtocolViolation("unterminated string in message")
    return buf[pos:end].decode("utf-8", "replace"), end + 1


def read_query(message: bytes) -> str:
    """The SQL text of a Query message."""
    text, _ = _cstring(message, 5)
    return text


@dataclass(frozen=True, slots=True)
class Parse:
    name: str
    query: str
    param_types: bytes  # Int16 count + Int32 OIDs, kept raw for re-encoding


def read_parse(message: bytes) -> Parse:
    name, pos = _cstring(message, 5)
    query, pos = _cstring(message, pos)
    return Parse(name, query, message[pos:])


def read_bind_statement(message: bytes) -> str:
    """The prepared statement a Bind message binds (after its portal name)."""
    _portal, pos = _cstring(message, 5)
    name, _ = _cstring(message, pos)
    return name


def read_parameter_status(message: bytes) -> tuple[str, str]:
    name, pos = _cstring(message, 5)
    value, _ = _cstring(message, pos)
    return name, value


def read_ready_status(message: bytes) -> int:
    return message[5]


def read_command_rows(message: bytes) -> int | None:
    """The row count of a CommandComplete (`SELECT 5`, `INSERT 0 1`), None if it has none."""
    tag = message[5:].split(b"\0", 1)[0]
    last = tag.rsplit(b" ", 1)[-1]
    return int(last) if last.isdigit() and b" " in tag else None


def read_auth_code(message: bytes) -> int:
    (code,) = _INT32.unpack_from(message, 5)
    return code


def read_backend_key(message: bytes) -> tuple[int, int]:
    # 3.0 keys are 4 bytes; 3.2 servers may send up to 256 (the proxy asks for 3.0).
    return _TWO_INT32.unpack_from(message, 5)


def read_sasl_mechanisms(message: bytes) -> list[str]:
    return [m.decode() for m in message[9:].split(b"\x00") if m]


def read_error_fields(message: bytes) -> dict[str, str]:
    """ErrorResponse/NoticeResponse fields keyed by their one-letter codes."""
    fields: dict[str, str] = {}
    pos = 5
    while pos < len(message) and message[pos] != 0:
        code = chr(message[pos])
        value, pos = _cstring(message, pos + 1)
        fields[code] = value
    return fields


# --- Typed messages the proxy writes ------------------------------------------


def message(tag: int, payload: bytes = b"") -> bytes:
    return _HEADER.pack(bytes((tag,)), len(payload) + 4) + payload


def _cstr(text: str) -> bytes:
    return text.encode("utf-8").replace(b"\x00", b"") + b"\x00"


def encode_error(
    sqlstate: str, text: str, *, fatal: bool = False, detail: str | None = None
) -> bytes:
    severity = "FATAL" if fatal else "ERROR"
    fields = {"S": severity, "V": severity, "C": sqlstate, "M": text}
    if detail:
        fields["D"] = detail
    return encode_error_fields(fields)


def encode_error_fields(fields: Mapping[str, str]) -> bytes:
    """An ErrorResponse from decoded fields (to amend a server's error)."""
    payload = b"".join(code.encode() + _cstr(value) for code, value in fields.items())
    return message(BE.ERROR_RESPONSE, payload + b"\x00")


def encode_ready_for_query(status: int) -> bytes:
    return message(BE.READY_FOR_QUERY, bytes((status,)))


_TEXT_OID = 25


def encode_result(columns: Iterable[str], rows: Iterable[Iterable[object]], tag: str) -> bytes:
    """A text-format result: RowDescription, DataRows, CommandComplete (what a SHOW returns)."""
    names = list(columns)
    desc = struct.pack("!H", len(names)) + b"".join(
        _cstr(n) + struct.pack("!IhIhih", 0, 0, _TEXT_OID, -1, -1, 0) for n in names
    )
    out = [message(BE.ROW_DESCRIPTION, desc)]
    for row in rows:
        cells = []
        for value in row:
            if value is None:
                cells.append(struct.pack("!i", -1))
            else:
                text = ("t" if value else "f") if isinstance(value, bool) else str(value)
                data = text.encode("utf-8")
                cells.append(struct.pack("!i", len(data)) + data)
        out.append(message(BE.DATA_ROW, struct.pack("!H", len(cells)) + b"".join(cells)))
    out.append(encode_command_complete(tag))
    return b"".join(out)


def encode_command_complete(tag: str) -> bytes:
    return message(BE.COMMAND_COMPLETE, _cstr(tag))


def encode_backend_key(pid: int, secret: int) -> bytes:
    return message(BE.BACKEND_KEY_DATA, _TWO_INT32.pack(pid, secret))


def encode_query(sql: str) -> bytes:
    return message(FE.QUERY, _cstr(sql))


def encode_parse(parse: Parse, query: str) -> bytes:
    return message(FE.PARSE, _cstr(parse.name) + _cstr(query) + parse.param_types)


def encode_unnamed_parse(query: str) -> bytes:
    return message(FE.PARSE, b"\x00" + _cstr(query) + b"\x00\x00")


def encode_prepare(name: str, query: str, types: tuple[int, ...]) -> bytes:
    """Parse a named statement with typed parameters."""
    oids = struct.pack(f"!H{len(types)}I", len(types), *types)
    return message(FE.PARSE, _cstr(name) + _cstr(query) + oids)


def encode_bind(name: str, values: tuple[str, ...]) -> bytes:
    """Bind text-format values to the unnamed portal, with text-format results."""
    parts = [b"\x00", _cstr(name), _UINT16.pack(0), _UINT16.pack(len(values))]
    for value in values:
        data = value.encode("utf-8")
        parts.append(_INT32.pack(len(data)))
        parts.append(data)
    parts.append(_UINT16.pack(0))
    return message(FE.BIND, b"".join(parts))


def encode_describe(kind: bytes, name: str) -> bytes:
    return message(FE.DESCRIBE, kind + _cstr(name))


def encode_close(kind: bytes, name: str) -> bytes:
    return message(FE.CLOSE, kind + _cstr(name))


# Describe the unnamed portal, run it to the end, and close the implicit transaction.
EXECUTE_PORTAL = (message(FE.DESCRIBE, b"P\x00") + message(FE.EXECUTE, b"\x00" + bytes(4))
                  + message(FE.SYNC))  # fmt: skip
SYNC = message(FE.SYNC)


def encode_sasl_mechanisms(mechanisms: Iterable[str]) -> bytes:
    payload = _INT32.pack(Auth.SASL) + b"".join(_cstr(m) for m in mechanisms) + b"\x00"
    return message(BE.AUTHENTICATION, payload)


def encode_negotiate_protocol_version(newest_minor: int, unsupported: Iterable[str]) -> bytes:
    names = list(unsupported)
    payload = _TWO_INT32.pack(PROTOCOL_3_0 | newest_minor, len(names))
    return message(BE.NEGOTIATE_PROTOCOL_VERSION, payload + b"".join(_cstr(n) for n in names))


TERMINATE = message(FE.TERMINATE)
