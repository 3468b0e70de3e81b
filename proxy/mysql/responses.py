"""Following a MySQL server's response to one command, reading packet headers only.

The client sends a command only once the previous response is complete, so
a tracker starts afresh with each command and never holds bytes: it reads
each packet's length and first byte (and the status flags of OK/EOF
packets) as the bytes stream through to the client. It knows when the
response ends, whether it failed (errno, SQLSTATE), how many rows it had, and
whether a transaction is open after it; result sets of multi-statements
(SERVER_MORE_RESULTS_EXISTS) are followed to the last one.
"""

from __future__ import annotations

import struct

from sqlx.proxy.mysql import codec

SERVER_STATUS_IN_TRANS = 0x0001
SERVER_MORE_RESULTS_EXISTS = 0x0008
SERVER_STATUS_CURSOR_EXISTS = 0x0040
SERVER_STATUS_NO_BACKSLASH_ESCAPES = 0x0200

_FIRST, _COLUMNS, _COLUMNS_EOF, _ROWS, _PREPARE, _DONE, _SKIP = range(7)
_HEADER = 4
_PEEK = 32  # bytes of a packet's payload kept to read an OK/EOF/ERR packet


def status_of(payload: bytes, ok: bool) -> int:
    """The status flags of an OK (after two length-encoded numbers) or EOF packet."""
    try:
        if ok:
            _, pos = codec.read_lenenc(payload, 1)
            _, pos = codec.read_lenenc(payload, pos)
            return int(struct.unpack_from("<H", payload, pos)[0])
        return int(struct.unpack_from("<H", payload, 3)[0])
    except (IndexError, struct.error):
        return 0


class Response:
    """One command's response, followed as its bytes go by."""

    __slots__ = ("_continued", "_eof_below", "_head", "_left", "_length", "_payload",
                 "_remaining", "_state", "deprecate_eof", "error", "in_transaction", "rows",
                 "sqlstate", "statement_id", "status")  # fmt: skip

    def __init__(self, command: int, deprecate_eof: bool, in_transaction: bool) -> None:
        self.deprecate_eof = deprecate_eof
        # What tells the end of rows from a row that starts with 0xFE (a string of 2**24
        # bytes or more, so a packet of full length): a classic EOF is under 9 bytes; the
        # OK that replaces it under CLIENT_DEPRECATE_EOF may carry session state, so any
        # packet short of full length is the end.
        self._eof_below = codec.MAX_PAYLOAD if deprecate_eof else 9
        self.in_transaction = in_transaction
        self.rows = 0
        self.error: int | None = None
        self.sqlstate: str | None = None
        self.status: int | None = None  # the last status flags the server sent
        self.statement_id: int | None = None  # of a COM_STMT_PREPARE that succeeded
        self._state = _PREPARE if command == codec.COM_STMT_PREPARE else _FIRST
        if command == codec.COM_STATISTICS:  # one packet of text
            self._state = _SKIP
        elif command in (codec.COM_FIELD_LIST, codec.COM_STMT_FETCH):  # packets up to an EOF
            self._state = _ROWS
        self._left = 0  # packets left in the current run (column or parameter definitions)
        self._head = b""  # a header not yet whole
        self._payload = b""  # the start of the current packet's payload
        self._remaining = 0  # payload bytes of the current packet not yet seen
        self._length = 0
        # The current packet goes on from one of full length (a payload of 16 MB or
        # more): its first byte is data, not a packet type.
        self._continued = False

    @property
    def done(self) -> bool:
        return self._state == _DONE

    def feed(self, data: bytes) -> None:
        pos, n = 0, len(data)
        while pos < n and self._state != _DONE:
            if self._remaining:
                take = min(self._remaining, n - pos)
                if len(self._payload) < _PEEK:
                    self._payload += data[pos : pos + min(take, _PEEK - len(self._payload))]
                self._remaining -= take
                pos += take
                if not self._remaining:
                    self._complete()
                continue
            need = _HEADER - len(self._head)
            self._head += data[pos : pos + need]
            pos += min(need, n - pos)
            if len(self._head) < _HEADER:
                return
            self._length = int.from_bytes(self._head[:3], "little")
            self._head = b""
            self._payload = b""
            self._remaining = self._length
            if not self._length:
                self._complete()

    def _complete(self) -> None:
        continued, self._continued = self._continued, self._length == codec.MAX_PAYLOAD
        if not continued:
            self._packet(self._payload, self._length)

    def _status(self, payload: bytes, ok: bool) -> int:
        self.status = status_of(payload, ok)
        return self.status

    def _end(self, status: int) -> None:
        self.in_transaction = bool(status & SERVER_STATUS_IN_TRANS)
        self._state = _FIRST if status & SERVER_MORE_RESULTS_EXISTS else _DONE

    def _packet(self, payload: bytes, length: int) -> None:
        first = payload[0] if payload else -1
        state = self._state
        if first == codec.ERR and state != _COLUMNS:
            self.error = int.from_bytes(payload[1:3], "little") if len(payload) >= 3 else 0
            self.sqlstate = payload[4:9].decode(errors="replace") if payload[3:4] == b"#" else (
                "HY000")  # fmt: skip
            self._state = _DONE
        elif state == _FIRST:
            if first == codec.OK:
                self._end(self._status(payload, ok=True))
            elif first == codec.EOF:
                # COM_SET_OPTION (and COM_DEBUG) answer with an EOF alone; a result set's
                # column count never starts with 0xFE (it would be 2**24 columns or more).
                self._end(self._status(payload, ok=self.deprecate_eof))
            elif first == codec.LOCAL_INFILE:
                self._state = _DONE  # never requested: LOCAL INFILE is withheld
            else:
                self._left = codec.read_lenenc(payload, 0)[0] if payload else 0
                self._state = _COLUMNS
        elif state == _COLUMNS:
            self._left -= 1
            if self._left <= 0:
                self._state = _ROWS if self.deprecate_eof else _COLUMNS_EOF
        elif state == _COLUMNS_EOF:
            # An execution that opened a cursor sends its rows on COM_STMT_FETCH.
            status = self._status(payload, ok=False)
            self._state = _DONE if status & SERVER_STATUS_CURSOR_EXISTS else _ROWS
            self.in_transaction = bool(status & SERVER_STATUS_IN_TRANS)
        elif state == _ROWS:
            if first == codec.EOF and length < self._eof_below:
                self._end(self._status(payload, ok=self.deprecate_eof))
            else:
                self.rows += 1
        elif state == _PREPARE:
            # OK: statement id, columns, parameters; then their definitions (and EOFs).
            if len(payload) >= 9:
                self.statement_id = int.from_bytes(payload[1:5], "little")
                columns, params = struct.unpack_from("<HH", payload, 5)
                runs = (params + (not self.deprecate_eof and params > 0)
                        + columns + (not self.deprecate_eof and columns > 0))  # fmt: skip
                self._left = runs
                self._state = _SKIP if runs else _DONE
            else:
                self._state = _DONE
        elif state == _SKIP:
            self._left -= 1
            if self._left <= 0:
                self._state = _DONE
