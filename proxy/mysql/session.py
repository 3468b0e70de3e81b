"""One MySQL client's session: the state machine between client and server bytes.

Sans-I/O, as `pg.session`: the glue in `mysql.server` feeds bytes from
either side and carries out `out_client`, `out_server` and `actions`.

- **Greeting.** The server speaks first. Its capability flags lose what the
  proxy cannot carry (compression, query attributes, LOCAL INFILE, and TLS
  unless the proxy has a certificate) before the client sees them.
- **Authentication** is relayed packet by packet, whatever the plugin
  (mysql_native_password, caching_sha2_password's fast and full paths, an
  auth switch): the proxy reads only the user, database and connection
  attributes of the handshake response, and the first byte of the server's
  packets to see the exchange end (OK or ERR). COM_CHANGE_USER starts
  another exchange.
- **Commands.** MySQL's protocol is one command, one response: a client
  sends a command only when the previous response is complete. COM_QUERY
  and COM_STMT_PREPARE are decided (`decider.decide`); a denied one is
  answered by the proxy with ERR 1142 (SQLSTATE 42000) naming the policy and
  the explanation id, and nothing of it reaches the server; one with masks
  or filters goes to the server rewritten. Every other command, and every
  server response, is forwarded as the same bytes. The status flags of OK
  and EOF packets tell whether the server reads backslashes as escapes.
- **TLS to the server** (the DSN's ssl-mode): the proxy sends the SSLRequest
  itself before the client's handshake response, and renumbers sequence ids
  through authentication, independently of the client's own TLS.
- **Bad input**: a malformed or oversized packet, or a sequence id out of
  order, gets an ERR and closes that client only.
"""

from __future__ import annotations

import dataclasses
import enum
import re
import time
from dataclasses import dataclass
from struct import error as StructError

from sqlx.proxy.decision import (
    ALLOW,
    Decider,
    Decision,
    Outcome,
    Path,
    SessionFacts,
    Statement,
    Verdict,
)
from sqlx.proxy.mysql import codec
from sqlx.proxy.mysql.codec import Packet, PacketError, PacketReader
from sqlx.proxy.mysql.responses import SERVER_STATUS_NO_BACKSLASH_ESCAPES, Response, status_of

DIALECT = "mysql"
# Authentication packets never come close to this (the server's RSA key is the largest).
_AUTH_LIMIT = 1 << 16
_SERVER_MAX = 1 << 30
ER_TABLEACCESS_DENIED = 1142
ER_NOT_SUPPORTED = 1235
# `USE db` changes the default database as COM_INIT_DB does.
_USE = re.compile(r"\s*use\s+(`[^`]+`|\w+)\s*;?\s*$", re.IGNORECASE)


class State(enum.Enum):
    CONNECTING = "connecting"  # waiting for the server's greeting
    HANDSHAKE = "handshake"  # waiting for the client's handshake response
    AUTHENTICATING = "authenticating"
    READY = "ready"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Close:
    reason: str


@dataclass(frozen=True, slots=True)
class StartTls:
    """The client asked for TLS (SSLRequest): upgrade its socket before reading on.

    `early` is what the client sent after the SSLRequest in the same read: the start
    of its TLS handshake (a MySQL client does not wait for an answer to the request)."""

    early: bytes = b""


@dataclass(frozen=True, slots=True)
class StartUpstreamTls:
    """The proxy's SSLRequest is written: upgrade the server socket, then call
    `upstream_secured` (the handshake response waits until then)."""


class MySqlSession:
    def __init__(self, decider: Decider, *, client_addr: str, max_packet_bytes: int,
                 tls_available: bool = False, upstream_tls: str = "disable") -> None:  # fmt: skip
        self.decider = decider
        self.client_addr = client_addr
        self.tls_available = tls_available
        # The DSN's ssl-mode, in libpq's names (prefer: TLS if the server offers it).
        self.upstream_tls = upstream_tls
        self._held_for_tls = b""  # the handshake response, until the server speaks TLS
        # Statements prepared on the server (id -> as prepared, and its decision).
        self._prepared: dict[int, tuple[Statement, Decision]] = {}
        self.state = State.CONNECTING
        self.facts: SessionFacts | None = None
        self.server_version = ""
        self.out_client: list[bytes] = []
        self.out_server: list[bytes] = []
        self.actions: list[Close | StartTls | StartUpstreamTls] = []
        self.tls = False
        # The server never sees a client's SSLRequest: during authentication the client's
        # sequence ids run one ahead of the server's.
        self._seq_shift = 0
        self._max = max_packet_bytes
        self._client = PacketReader(_AUTH_LIMIT)
        self._server = PacketReader(_AUTH_LIMIT)
        self._capabilities = 0  # what the client and the proxy agreed on
        self._server_capabilities = 0
        self.in_transaction = False
        # The server reads `\` in strings as an escape (sql_mode without NO_BACKSLASH_ESCAPES).
        self.backslash_escapes = True
        # The command whose response is streaming through, and what to report of it.
        self._response: Response | None = None
        self._statement: Statement | None = None
        self._decision: Decision = ALLOW
        self._started = 0.0
        # A default database or identity that takes effect once the server says OK.
        self._pending_database: str | None = None
        self._pending_identity: tuple[str, str] | None = None

    # --- lifecycle ----------------------------------------------------------------------

    def _close(self, reason: str) -> None:
        if self.state is not State.CLOSED:
            self.state = State.CLOSED
            self.actions.append(Close(reason))

    def fail(self, errno: int, sqlstate: str, text: str, seq: int = 0) -> None:
        """An ERR for the client, then close it."""
        if self.state is State.CLOSED:
            return
        self.out_client.append(codec.err_packet(seq, errno, sqlstate, text))
        self._close(text)

    def upstream_failed(self, where: str, why: str) -> None:
        # The client waits for a greeting: an ERR in its place, as a refusing server sends.
        self.fail(2003, "HY000", f"Can't connect to MySQL server on '{where}' ({why})")

    def server_lost(self) -> None:
        if self.state is State.READY or self.state is State.AUTHENTICATING:
            self.fail(2013, "HY000", "Lost connection to MySQL server during query", seq=1)
        else:
            self._close("server closed the connection")

    @property
    def idle(self) -> bool:
        """Between commands, no transaction open: safe to close for a drain."""
        return self.state is State.READY and not self.in_transaction and self._response is None

    # --- client -> server ------------------------------------------------------------------

    def receive_client(self, data: bytes) -> None:
        # The first packet may be an SSLRequest, after which the bytes are TLS: it is
        # read alone, and what came after it goes to the TLS layer (`StartTls.early`).
        handshake = self.state is State.HANDSHAKE
        try:
            packets = self._client.feed(data, limit=1 if handshake else 0)
        except PacketError as exc:
            self.fail(exc.errno, "08S01", f"sqlx-os: {exc}", seq=self._client_error_seq())
            return
        for p in packets:
            if self.state is State.CLOSED:
                return
            if self.state is State.READY:
                self._command(p)
            elif self.state is State.HANDSHAKE:
                self._handshake_response(p)
            elif self.state is State.AUTHENTICATING:
                self.out_server.append(self._shifted(p, -self._seq_shift))
                self._server.expect_seq = (p.last_seq - self._seq_shift + 1) & 0xFF
            else:  # a client that talks before the greeting
                self.fail(1043, "08S01", "sqlx-os: bad handshake")
        if handshake and self.state is State.AUTHENTICATING and self._client.mid_packet:
            self.receive_client(b"")  # what followed the handshake response

    def _client_error_seq(self) -> int:
        expected = self._client.expect_seq
        return expected if expected is not None else 1

    def _handshake_response(self, p: Packet) -> None:
        try:
            response = codec.read_handshake_response(p.payload)
        except (PacketError, IndexError, UnicodeError) as exc:
            self.fail(1043, "08S01", f"sqlx-os: bad handshake ({exc})", seq=p.last_seq + 1)
            return
        if response.ssl_request:
            if not self.tls_available or self.tls:
                self.fail(ER_NOT_SUPPORTED, "08S01", "sqlx-os: TLS to the proxy is not "
                          "configured", seq=p.last_seq + 1)  # fmt: skip
                return
            self.tls = True
            self._seq_shift = 1
            self.actions.append(StartTls(self._client.take_rest()))
            return
        self._capabilities = response.capabilities & ~codec.WITHHELD
        self.facts = SessionFacts(
            user=response.user, database=response.database,
            application_name=response.attributes.get("program_name", ""),
            client_addr=self.client_addr, tls=self.tls,
            settings=tuple(sorted(response.attributes.items())),
        )  # fmt: skip
        if self.tls:  # the server was told nothing of the client's TLS: it is the proxy's
            self._capabilities &= ~codec.CLIENT_SSL
        seq = p.seq - self._seq_shift
        wants_tls = self._upstream_wants_tls(p.last_seq + 1)
        if self.state is State.CLOSED:
            return
        if wants_tls:
            caps = self._capabilities | codec.CLIENT_SSL
            payload = codec.response_with_capabilities(p.payload, caps)
            # An SSLRequest is the response's first 32 bytes; the server then counts one
            # packet more than the client has sent.
            self.out_server.append(codec.packet(seq, payload[:32]))
            self._held_for_tls = codec.packet(seq + 1, payload)
            self.actions.append(StartUpstreamTls())
            self._seq_shift -= 1
        else:
            payload = codec.response_with_capabilities(p.payload, self._capabilities)
            self.out_server.append(codec.packet(seq, payload))
        self._server.expect_seq = (p.last_seq - self._seq_shift + 1) & 0xFF
        self.state = State.AUTHENTICATING

    def _upstream_wants_tls(self, seq: int) -> bool:
        """Whether to speak TLS to the server (closing the client if it must and cannot)."""
        mode = self.upstream_tls
        if mode == "disable":
            return False
        if self._server_capabilities & codec.CLIENT_SSL:
            return True
        if mode != "prefer":
            self.fail(2026, "HY000", "sqlx-os: SSL connection error: the server does not "
                      "offer TLS and the upstream DSN requires it", seq=seq)  # fmt: skip
        return False

    def upstream_secured(self) -> None:
        """The server socket speaks TLS now: the held handshake response goes out."""
        self.out_server.append(self._held_for_tls)
        self._held_for_tls = b""

    def _command(self, p: Packet) -> None:
        if p.seq != 0:
            self.fail(1156, "08S01", f"sqlx-os: a command must start at sequence id 0, not "
                      f"{p.seq}", seq=(p.last_seq + 1) & 0xFF)  # fmt: skip
            return
        self._statement, self._decision = None, ALLOW
        command = p.payload[0] if p.payload else -1
        if command == codec.COM_QUERY or command == codec.COM_STMT_PREPARE:
            sql = p.payload[1:].decode("utf-8", "replace")
            statement = Statement(sql, Path.SIMPLE if command == codec.COM_QUERY else
                                  Path.EXTENDED, self.facts, self.in_transaction,  # type: ignore[arg-type]
                                  escapes=self.backslash_escapes, dialect=DIALECT)  # fmt: skip
            decision = self.decider.decide(statement)
            if decision.verdict is Verdict.DENY:
                reason = decision.reason or "statement denied by policy"
                self.out_client.append(codec.err_packet(1, ER_TABLEACCESS_DENIED, "42000", reason))
                self.decider.observe(Outcome((statement,), decision, 0.0, "42000"))
                return
            if decision.verdict is Verdict.REWRITE and decision.sql is not None:
                # Masks and filters applied: the server runs the rewritten text instead.
                payload = bytes((command,)) + decision.sql.encode("utf-8")
                p = Packet(0, 0, payload, codec.packet(0, payload))
            self._statement, self._decision = statement, decision
            used = _USE.match(sql) if command == codec.COM_QUERY else None
            if used:
                self._pending_database = used.group(1).strip("`")
        elif command == codec.COM_STMT_EXECUTE:
            # Each execution is a statement for telemetry: the one prepared, as decided.
            found = self._prepared.get(int.from_bytes(p.payload[1:5], "little"))
            if found is not None:
                self._statement = found[0]._replace(in_transaction=self.in_transaction)
                self._decision = found[1]
        elif command == codec.COM_STMT_CLOSE:
            self._prepared.pop(int.from_bytes(p.payload[1:5], "little"), None)
        elif command == codec.COM_RESET_CONNECTION:
            self._prepared.clear()
        elif command == codec.COM_INIT_DB:
            self._pending_database = p.payload[1:].decode("utf-8", "replace")
        elif command == codec.COM_CHANGE_USER:
            # The identity policies see is the new one, once the server accepts it.
            try:
                self._pending_identity = codec.read_change_user(p.payload, self._capabilities)
            except (IndexError, ValueError):
                self._pending_identity = ("", "")
            self.state = State.AUTHENTICATING
            self._client.commands = False  # an exchange of packets follows, as at login
            self._prepared.clear()  # the server drops a session's statements
            self._server = PacketReader(_AUTH_LIMIT)
            self._server.expect_seq = 1
        elif command == codec.COM_QUIT:
            self.out_server.append(p.raw)
            self._close("client quit")
            return
        if command not in codec.NO_RESPONSE and self.state is State.READY:
            eof = bool(self._capabilities & self._server_capabilities & codec.CLIENT_DEPRECATE_EOF)
            self._response = Response(command, eof, self.in_transaction)
            self._started = time.perf_counter()
        self.out_server.append(p.raw)

    # --- server -> client ------------------------------------------------------------------

    def receive_server(self, data: bytes) -> None:
        if self.state is State.READY:
            self.out_client.append(data)  # responses stream through, headers read only
            response = self._response
            if response is not None:
                response.feed(data)
                if response.done:
                    self._responded(response)
            return
        if self.state is State.CLOSED:
            return
        try:
            packets = self._server.feed(data)
        except PacketError as exc:
            self.fail(2027, "HY000", f"sqlx-os: malformed packet from the server: {exc}")
            return
        for p in packets:
            if self.state is State.CONNECTING:
                self._greeting(p)
            elif self.state is State.AUTHENTICATING:
                self._auth_packet(p)
            else:
                self.out_client.append(p.raw)

    def _responded(self, response: Response) -> None:
        self._response = None
        self.in_transaction = response.in_transaction
        if response.status is not None:
            self._escapes_from(response.status)
        database, self._pending_database = self._pending_database, None
        if database is not None and response.error is None and self.facts is not None:
            self.facts = dataclasses.replace(self.facts, database=database)
        statement, self._statement = self._statement, None
        if response.statement_id is not None and statement is not None:
            # Prepared: counted when executed, with the verdict it was prepared under.
            self._prepared[response.statement_id] = (statement, self._decision)
            return
        if statement is not None:
            elapsed = time.perf_counter() - self._started
            self.decider.observe(Outcome((statement,), self._decision, elapsed,
                                         response.sqlstate, response.rows,
                                         response.in_transaction))  # fmt: skip

    def _greeting(self, p: Packet) -> None:
        if p.payload[:1] == b"\xff":  # the server refuses the connection outright
            self.out_client.append(p.raw)
            self._close("server refused the connection")
            return
        try:
            handshake = codec.read_handshake(p.payload)
        except (PacketError, IndexError, ValueError, StructError) as exc:
            self.fail(2027, "HY000", f"sqlx-os: malformed greeting from the server ({exc})")
            return
        self.server_version = handshake.server_version
        self._server_capabilities = handshake.capabilities
        # TLS is the proxy's to offer (to its clients), whatever the server's is.
        offered = (handshake.capabilities & ~codec.WITHHELD & ~codec.CLIENT_SSL) | (
            codec.CLIENT_SSL if self.tls_available else 0)  # fmt: skip
        payload = codec.with_capabilities(p.payload, handshake, offered)
        self.out_client.append(codec.packet(p.seq, payload))
        self._client.expect_seq = (p.last_seq + 1) & 0xFF
        self.state = State.HANDSHAKE

    def _auth_packet(self, p: Packet) -> None:
        self.out_client.append(self._shifted(p, self._seq_shift))
        first = p.payload[:1]
        if first == b"\x00":
            self.state = State.READY
            self._escapes_from(status_of(p.payload, ok=True))
            identity, self._pending_identity = self._pending_identity, None
            if identity is not None and self.facts is not None:
                self.facts = dataclasses.replace(self.facts, user=identity[0],
                                                 database=identity[1])  # fmt: skip
            self._seq_shift = 0  # every command starts again at 0 on both sides
            self._client = PacketReader(self._max, commands=True)
            self._client.expect_seq = 0
        elif first == b"\xff":
            self._close("authentication failed")
        else:
            self._client.expect_seq = (p.last_seq + self._seq_shift + 1) & 0xFF

    def _escapes_from(self, status: int) -> None:
        # The server says in every OK and EOF whether sql_mode has NO_BACKSLASH_ESCAPES.
        self.backslash_escapes = not status & SERVER_STATUS_NO_BACKSLASH_ESCAPES

    @staticmethod
    def _shifted(p: Packet, shift: int) -> bytes:
        """A packet's bytes with its sequence id(s) moved by `shift`."""
        if not shift:
            return p.raw
        return codec.packet(p.seq + shift, p.payload)
