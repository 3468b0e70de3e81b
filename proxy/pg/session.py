"""One client's PostgreSQL session: the state machine between client and server bytes.

Sans-I/O (STYLE.md §1): the asyncio glue in `pg.server` feeds it bytes from
either side and carries out what it leaves in `out_client`, `out_server` and
`actions`. It owns the protocol phases (startup, TLS negotiation, relayed
authentication, ready), the substitution of the proxy's own BackendKeyData,
transaction status from ReadyForQuery, and the per-statement decision hook:
a simple Query is decided on its own, an extended batch that carries a Parse
is held until Sync or Flush and decided whole, a FunctionCall is decided by
its function OID.

A denial is never answered by the proxy itself. The denied Query, Parse batch
or FunctionCall is replaced by a marker statement that fails to parse on the
server, and the server's error for it is swapped for the denial. So the client
sees the error in order behind everything the server still owes it, the
server skips to the next Sync and aborts an open transaction exactly as it
would for any error, and nothing of the denied statement reaches the server.
"""

from __future__ import annotations

import enum
import re
import secrets
import time
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from sqlx.proxy.decision import (
    ALLOW,
    Decider,
    Decision,
    Outcome,
    Path,
    Prepared,
    SessionFacts,
    Statement,
    Verdict,
)
from sqlx.proxy.pg import codec
from sqlx.proxy.pg.codec import BE, FE, INSPECT, PASS, Auth, ProtocolViolation, TxStatus


class State(enum.Enum):
    AWAIT_STARTUP = "await_startup"
    CONNECTING = "connecting"
    AUTHENTICATING = "authenticating"
    READY = "ready"
    CLOSED = "closed"


# Every legal move, as data (STYLE.md §2). Any state may move to CLOSED.
TRANSITIONS: dict[tuple[State, str], State] = {
    (State.AWAIT_STARTUP, "ssl_request"): State.AWAIT_STARTUP,
    (State.AWAIT_STARTUP, "gssenc_request"): State.AWAIT_STARTUP,
    (State.AWAIT_STARTUP, "startup"): State.CONNECTING,
    (State.CONNECTING, "upstream_connected"): State.AUTHENTICATING,
    (State.AUTHENTICATING, "ready_for_query"): State.READY,
}


class IllegalTransition(Exception):
    def __init__(self, state: State, event: str) -> None:
        super().__init__(f"event {event!r} is not legal in state {state.value}")


# --- Actions the glue carries out (the rare ones; bytes go through out_*) ----


@dataclass(frozen=True, slots=True)
class ReplySSL:
    """Answer an SSLRequest: 'S' and start TLS, or 'N'."""

    accept: bool


@dataclass(frozen=True, slots=True)
class ConnectUpstream:
    startup: bytes
    facts: SessionFacts


@dataclass(frozen=True, slots=True)
class ForwardCancel:
    pid: int
    secret: int


@dataclass(frozen=True, slots=True)
class Close:
    """End the client connection after flushing `out_client`; the upstream closes too."""

    reason: str


Action = ReplySSL | ConnectUpstream | ForwardCancel | Close

# Tag tables per phase: which messages stream through, which are read.
_CLIENT_READY = codec.tag_table(
    codec.FRONTEND_TAGS,
    (FE.QUERY, FE.PARSE, FE.SYNC, FE.FLUSH, FE.FUNCTION_CALL, FE.TERMINATE,
     FE.COPY_DONE, FE.COPY_FAIL),
)  # fmt: skip
# With every statement observed, Bind is read too: a statement prepared earlier
# runs with no Parse, and its Bind names it. Execute tells a batch that runs its
# statement from one that only prepares it (counted when it runs).
_CLIENT_READY_OBSERVED = codec.tag_table(
    codec.FRONTEND_TAGS,
    (FE.QUERY, FE.PARSE, FE.SYNC, FE.FLUSH, FE.FUNCTION_CALL, FE.TERMINATE,
     FE.COPY_DONE, FE.COPY_FAIL, FE.BIND, FE.EXECUTE),
)  # fmt: skip
_PREPARED_MAX = 10_000  # statement names remembered per session
# During authentication only password messages go to the server: anything
# else is kept until the session is ready, so nothing bypasses the decider.
_CLIENT_AUTH = codec.tag_table((FE.PASSWORD_MESSAGE,), codec.FRONTEND_TAGS - {FE.PASSWORD_MESSAGE})
_SERVER_STARTUP = codec.tag_table((), (), unknown=INSPECT)
# The admin console reads every client message: nothing goes to the server.
_CLIENT_CONSOLE = codec.tag_table((), codec.FRONTEND_TAGS)
CONSOLE_DATABASE = "sqlx"
_SERVER_READY = codec.tag_table(
    (), (BE.READY_FOR_QUERY, BE.ERROR_RESPONSE, BE.COPY_IN_RESPONSE, BE.COPY_BOTH_RESPONSE,
         BE.PARAMETER_STATUS),
    unknown=PASS,
)  # fmt: skip
# With every statement observed, CommandComplete is read too (its row count).
_SERVER_READY_OBSERVED = codec.tag_table(
    (), (BE.READY_FOR_QUERY, BE.ERROR_RESPONSE, BE.COPY_IN_RESPONSE, BE.COPY_BOTH_RESPONSE,
         BE.COMMAND_COMPLETE, BE.PARAMETER_STATUS),
    unknown=PASS,
)  # fmt: skip
# Servers are trusted with PostgreSQL's own 1 GiB message limit, and a margin.
_SERVER_MAX_MESSAGE = 0x7FFFFFFF
# Before authentication completes, a client gets no more than this buffered:
# the server itself caps authentication tokens at 64 KiB.
_PRE_AUTH_LIMIT = 1 << 20
# Auto-prepare: while the proxy's own messages are answered, every server message is
# read (to hide them); while only prepared executions are, their extra answers are.
_SERVER_ALL = codec.tag_table((), codec.BACKEND_TAGS, unknown=PASS)
_SERVER_EXEC = codec.tag_table(
    (), (BE.READY_FOR_QUERY, BE.ERROR_RESPONSE, BE.COPY_IN_RESPONSE, BE.COPY_BOTH_RESPONSE,
         BE.COMMAND_COMPLETE, BE.PARAMETER_STATUS, BE.BIND_COMPLETE, BE.NO_DATA),
    unknown=PASS,
)  # fmt: skip
# Statements that drop a connection's prepared statements (the proxy's too).
_DROPS_STATEMENTS = re.compile(r"discard|deallocate", re.IGNORECASE)
_SAVEPOINT = codec.encode_query("SAVEPOINT sqlx_autoprepare")
_ROLLBACK_TO = codec.encode_query(
    "ROLLBACK TO SAVEPOINT sqlx_autoprepare; RELEASE SAVEPOINT sqlx_autoprepare"
)
# A bound parameter's input error names it in CONTEXT; the literal's error would not.
_PARAM_CONTEXT = re.compile(r"unnamed portal parameter \$(\d+)")
# Errors after which a prepared statement is gone or stale: it is parsed again.
_STALE = frozenset(("26000", "0A000"))
# Client messages after which nothing is in flight without a ReadyForQuery to come.
_BATCH_CLOSERS = frozenset((FE.QUERY, FE.SYNC, FE.FUNCTION_CALL, FE.COPY_DONE, FE.COPY_FAIL))

_CHANNEL_BINDING_SUFFIX = "-PLUS"
_CHANNEL_BINDING_HINT = (
    "sqlx-os relays SCRAM without channel binding, and this server uses TLS towards the "
    "proxy: set channel_binding=disable in the client, or sslmode=disable for the "
    "proxy's upstream."
)


class Console(Protocol):
    """The admin console's side of a session (database `sqlx`)."""

    users: frozenset[str]
    auth_database: str  # where the console's users authenticate (their password is checked)

    def answer(self, sql: str, facts: SessionFacts) -> bytes: ...


# What the server's answers up to one ReadyForQuery are, for auto-prepare.
_HIDE = 0  # the proxy's own statement (a savepoint around a probe): hidden whole
_PROBE = 1  # Close, Parse and Describe of a statement to prepare: hidden whole
_CHECK = 2  # the client's Query after a probe: passed, its RowDescription compared
_EXEC = 3  # the client's Query run as Bind/Execute: BindComplete and NoData hidden


@dataclass(slots=True)
class _Region:
    kind: int
    prepared: Prepared
    query: bytes = b""  # (_EXEC) the Query as it came, if it may be run again plainly
    described: bytes | None = None  # the RowDescription seen (b"" for NoData)
    failed: str | None = None  # the SQLSTATE of an error in it
    bound: bool = False  # (_EXEC) BindComplete seen
    probe: _Region | None = None  # (_CHECK) the probe it is compared with


@dataclass(slots=True)
class _InFlight:
    """A decided batch waiting for its ReadyForQuery."""

    rfq_index: int
    statements: tuple[Statement, ...]
    decision: Decision
    started: float
    error: str | None = None
    rows: int | None = None


class PgSession:
    """The state of one client connection and its upstream connection."""

    def __init__(
        self,
        decider: Decider,
        *,
        key: tuple[int, int],
        client_addr: str,
        tls_available: bool,
        max_message_bytes: int,
        max_held_batch_bytes: int,
        observe_all: bool = False,
        console: Console | None = None,
        prepared_max: int = 0,
    ) -> None:
        self.decider = decider
        self.console = console
        self.console_mode = False
        # Masked sessions: a server error's DETAIL can show a whole row ("Failing row
        # contains (...)"), masked columns included; it is replaced.
        self.scrub_details = False
        # Telemetry wants every statement's outcome, not only those a decision changed.
        self.observe_all = observe_all
        self.key = key
        self.client_addr = client_addr
        self.tls_available = tls_available
        self.tls = False
        self.state = State.AWAIT_STARTUP
        self.facts: SessionFacts | None = None
        self.upstream_key: tuple[int, int] | None = None
        self.tx_status = TxStatus.IDLE
        self.server_params: dict[str, str] = {}
        self._escapes = False  # standard_conforming_strings is off, as the server reports

        self.out_client: list[bytes] = []
        self.out_server: list[bytes] = []
        self.actions: list[Action] = []

        self._max_message = max_message_bytes
        self._max_held = max_held_batch_bytes
        self._startup = codec.StartupReader()
        self._client = codec.MessageScanner(_CLIENT_AUTH, min(max_message_bytes, _PRE_AUTH_LIMIT))
        self._server = codec.MessageScanner(_SERVER_STARTUP, _SERVER_MAX_MESSAGE)
        self._early = b""  # client bytes that arrived before the session was ready
        self._server_refused = False

        # Extended-protocol batch held for a decision: pieces, and which are Parse.
        self._held: list[bytes] | None = None
        self._held_parses: list[int] = []
        self._held_size = 0
        self._held_executes = False  # (observed sessions) the batch runs a statement

        # ReadyForQuery bookkeeping: every Query, Sync and FunctionCall the server
        # acts on is answered by exactly one ReadyForQuery, in order. The server
        # ignores Syncs during COPY IN and skips messages after an extended-protocol
        # error until Sync; both are mirrored so the counts stay in step.
        self._rfq_expected = 0
        self._rfq_seen = 0
        self._last_sync_point = 0
        self._copy_in = False
        self._server_skipping = False
        self._open_batch = False
        self._inflight: deque[_InFlight] = deque()
        # Denials in flight: marker token -> the decision whose error replaces the server's.
        self._denials: dict[str, Decision] = {}
        self._deny_prefix = f"sqlx_denied_{secrets.token_hex(6)}_"
        self._deny_seq = 0
        # Observed sessions: prepared statement name -> its text, and the statements
        # bound (without a Parse) since the last Sync.
        self._prepared: dict[str, str] = {}
        self._bound: list[Statement] = []
        # Auto-prepare: statements the proxy parsed on this connection (True once their
        # answers proved identical to the Query's), and the answers it reads or hides.
        self._prepared_max = prepared_max
        self._auto: dict[str, bool] = {}
        self._regions: dict[int, _Region] = {}
        self._utf8 = True  # client_encoding is UTF8: a text's bytes can be rebuilt

    # --- state ---------------------------------------------------------------

    def _move(self, event: str) -> None:
        new = TRANSITIONS.get((self.state, event))
        if new is None:
            raise IllegalTransition(self.state, event)
        self.state = new

    def _close(self, reason: str) -> None:
        if self.state is not State.CLOSED:
            self.state = State.CLOSED
            self.actions.append(Close(reason))

    def fail(self, sqlstate: str, text: str) -> None:
        """Send a FATAL error to the client and close it."""
        if self.state is State.CLOSED:
            return
        self.out_client.append(codec.encode_error(sqlstate, text, fatal=True))
        self._close(text)

    @property
    def idle(self) -> bool:
        """No statement in flight, no transaction open: safe to close for a drain."""
        return (
            self.state is State.READY
            and self._rfq_seen >= self._rfq_expected
            and self.tx_status == TxStatus.IDLE
            and self._held is None
            and not self._open_batch
            and not self._client.mid_message
        )

    @property
    def client_mid_message(self) -> bool:
        return self._client.mid_message

    # --- client → server -------------------------------------------------------

    def receive_client(self, data: bytes) -> None:
        try:
            if self.state is State.READY:
                if self.console_mode:
                    self._console_ready(data)
                else:
                    self._client_ready(data)
            elif self.state is State.AUTHENTICATING:
                self._client_auth(data)
            elif self.state is State.AWAIT_STARTUP:
                self._client_startup(data)
            elif self.state is State.CONNECTING:
                self._keep_early(data)
        except ProtocolViolation as exc:
            self.fail(exc.sqlstate, str(exc))

    def _keep_early(self, data: bytes) -> None:
        self._early += data
        if len(self._early) > _PRE_AUTH_LIMIT:
            raise ProtocolViolation("too much data before authentication completed")

    def _client_startup(self, data: bytes) -> None:
        packet, rest = self._startup.feed(data)
        if packet is None:
            return
        first = codec.parse_first_packet(packet)
        if isinstance(first, codec.SSLRequest):
            # A man in the middle could inject plaintext behind the request and
            # have it read as if it came over TLS (CVE-2021-23222): refuse it.
            if rest:
                raise ProtocolViolation("received unencrypted data after SSL request")
            if self.tls:
                raise ProtocolViolation("SSL request received on an encrypted connection")
            self._move("ssl_request")
            self.actions.append(ReplySSL(self.tls_available))
            self.tls = self.tls_available
        elif isinstance(first, codec.GSSENCRequest):
            if rest:
                raise ProtocolViolation("received unencrypted data after GSSAPI encryption request")
            self._move("gssenc_request")
            self.out_client.append(b"N")
        elif isinstance(first, codec.CancelRequest):
            self.actions.append(ForwardCancel(first.pid, first.secret))
            self._close("cancel request")
        else:
            self._startup_message(first, rest)

    def _startup_message(self, startup: codec.StartupMessage, rest: bytes) -> None:
        params = dict(startup.params)
        if startup.minor > 0:
            # The proxy speaks 3.0 to the server (4-byte cancel keys); tell the
            # client so, and which protocol options it did not take.
            options = [k for k in params if k.startswith("_pq_.")]
            for k in options:
                del params[k]
            self.out_client.append(codec.encode_negotiate_protocol_version(0, options))
        user = params.get("user", "")
        if params.get("database") == CONSOLE_DATABASE:
            if self.console is None or user not in self.console.users:
                self.fail("42501", f"only admin.users may open the {CONSOLE_DATABASE} console")
                return
            # The console's users prove who they are to the server, on its database.
            self.console_mode = True
            params["database"] = self.console.auth_database
        named = ("user", "database", "application_name")
        self.facts = SessionFacts(
            user=user,
            database=CONSOLE_DATABASE if self.console_mode else params.get("database") or user,
            application_name=params.get("application_name", ""),
            client_addr=self.client_addr,
            tls=self.tls,
            settings=tuple((k, v) for k, v in params.items() if k not in named),
        )
        self._move("startup")
        self._keep_early(rest)
        self.actions.append(ConnectUpstream(codec.encode_startup(params), self.facts))

    def upstream_connected(self) -> None:
        """The glue reached the server and sent it the startup packet."""
        self._move("upstream_connected")
        early, self._early = self._early, b""
        if early:
            self.receive_client(early)

    def _client_auth(self, data: bytes) -> None:
        if self._early:
            self._keep_early(data)
            return
        consumed, items = self._client.feed(data)
        for tag, start, _end in items:
            if tag == FE.TERMINATE:
                self._close("client terminated during authentication")
                return
            # Kept whole (with what follows) until the session is ready.
            if start:
                self.out_server.append(consumed[:start])
            self._keep_early(consumed[start:] + self._client.take_buffer())
            return
        if consumed:
            self.out_server.append(consumed)

    def _client_ready(self, data: bytes) -> None:
        scanner = self._client
        consumed, items = scanner.feed(data)
        if not items and self._held is None:
            if consumed:
                self.out_server.append(consumed)
                self._open_batch = scanner.last_tag not in _BATCH_CLOSERS
            return
        cursor = 0
        for tag, start, end in items:
            if self._held is not None:
                if tag == FE.PARSE:
                    self._hold(consumed[cursor:start])
                    self._held_parses.append(len(self._held))
                    self._hold(consumed[start:end])
                    cursor = end
                    continue
                if tag == FE.SYNC or tag == FE.FLUSH:
                    self._hold(consumed[cursor:start])
                    cursor = end
                    self._release(tag)
                    continue
                if tag == FE.BIND:  # part of the batch; its statements are decided whole
                    continue
                if tag == FE.EXECUTE:
                    self._held_executes = True
                    continue
                # Anything else that is read ends the held batch implicitly.
                self._hold(consumed[cursor:start])
                cursor = start
                self._release(None)
            if tag == FE.QUERY:
                cursor = self._simple_query(consumed, cursor, start, end)
            elif tag == FE.PARSE:
                if cursor < start:
                    self.out_server.append(consumed[cursor:start])
                self._held = []
                self._held_parses = [0]
                self._held_size = 0
                self._held_executes = False
                self._hold(consumed[start:end])
                cursor = end
            elif tag == FE.SYNC:
                self._server_skipping = False
                if not self._copy_in:  # the server ignores Sync during COPY IN
                    self._sync_point(FE.SYNC)
                    if self._bound:
                        self._track(ALLOW, tuple(self._bound), self._rfq_expected)
                        self._bound = []
            elif tag == FE.BIND:
                sql = self._prepared.get(codec.read_bind_statement(consumed[start:end]))
                if sql is not None:
                    self._bound.append(self._statement(sql, Path.EXTENDED))
            elif tag == FE.FUNCTION_CALL:
                cursor = self._function_call(consumed, cursor, start, end)
            elif tag == FE.COPY_DONE or tag == FE.COPY_FAIL:
                self._copy_in = False
            elif tag == FE.TERMINATE:
                self.out_server.append(consumed[cursor:end])
                cursor = end
                self._close("client terminated")
                return
        rest = consumed[cursor:]
        if rest:
            if self._held is not None:
                self._hold(rest)
                if self._held_size > self._max_held:
                    self._release(None)
            else:
                self.out_server.append(rest)
        self._open_batch = self._held is not None or scanner.last_tag not in _BATCH_CLOSERS

    def _console_ready(self, data: bytes) -> None:
        """The admin console: queries answered by the proxy, nothing sent upstream."""
        assert self.console is not None and self.facts is not None
        consumed, items = self._client.feed(data)
        for tag, start, end in items:
            if tag == FE.QUERY:
                answer = self.console.answer(codec.read_query(consumed[start:end]), self.facts)
                self.out_client.append(answer + codec.encode_ready_for_query(TxStatus.IDLE))
            elif tag == FE.SYNC:
                self.out_client.append(codec.encode_ready_for_query(TxStatus.IDLE))
            elif tag == FE.TERMINATE:
                self._close("client terminated")
                return
            elif tag in (FE.PARSE, FE.FUNCTION_CALL):
                # One error per extended batch (its Sync then gets a ReadyForQuery).
                self.out_client.append(codec.encode_error(
                    "0A000", "the admin console answers simple queries only"))  # fmt: skip
                if tag == FE.FUNCTION_CALL:
                    self.out_client.append(codec.encode_ready_for_query(TxStatus.IDLE))

    def _sync_point(self, tag: int) -> None:
        """A forwarded message the server answers with one ReadyForQuery."""
        if not self._server_skipping:
            self._rfq_expected += 1
            self._last_sync_point = tag

    def _statement(self, sql: str, path: Path, oid: int | None = None) -> Statement:
        in_tx = self.tx_status != TxStatus.IDLE
        return Statement(sql, path, self.facts, in_tx, oid, self._escapes)  # type: ignore[arg-type]

    def _simple_query(self, consumed: bytes, cursor: int, start: int, end: int) -> int:
        statement = self._statement(codec.read_query(consumed[start:end]), Path.SIMPLE)
        decision = self.decider.decide(statement)
        if self._auto and _DROPS_STATEMENTS.search(statement.sql):
            self._auto.clear()
        if decision.prepared is not None and cursor == start and self._auto_ready(statement):
            self._auto_prepare(decision, statement, consumed[start:end])
            return end
        self._sync_point(FE.QUERY)
        if decision.verdict is Verdict.ALLOW:
            # Forwarded as it came, in the same write as its neighbours.
            if decision is not ALLOW or self.observe_all:
                self._track(decision, (statement,), self._rfq_expected)
            return cursor
        if cursor < start:
            self.out_server.append(consumed[cursor:start])
        if decision.verdict is Verdict.DENY:
            self.out_server.append(codec.encode_query(self._deny(decision, (statement,))))
        else:
            self._track(decision, (statement,), self._rfq_expected)
            self.out_server.append(codec.encode_query(decision.sql or ""))
        return end

    # --- auto-prepare ------------------------------------------------------------------

    def _auto_ready(self, statement: Statement) -> bool:
        """Whether a Query may run another way here: no extended batch of the client's is
        open around it, and its text's bytes can be rebuilt."""
        return (
            not self._open_batch
            and not self._server_skipping
            and not self._copy_in
            and self._utf8
            and self.tx_status != TxStatus.FAILED
            and "\ufffd" not in statement.sql
        )

    def _auto_prepare(self, decision: Decision, statement: Statement, query: bytes) -> None:
        """Run the Query as a prepared statement if this connection has it; else, when
        nothing is in flight, probe for it and then run the Query as it came."""
        prepared = decision.prepared
        assert prepared is not None
        name = prepared.name
        quiet = self._rfq_seen == self._rfq_expected and not self._inflight
        out = self.out_server
        if self._auto.get(name):
            out.append(codec.encode_bind(name, prepared.values))
            out.append(codec.EXECUTE_PORTAL)
            self._sync_point(FE.QUERY)
            retry = query if quiet and self.tx_status == TxStatus.IDLE else b""
            self._regions[self._rfq_expected] = _Region(_EXEC, prepared, retry)
        else:
            probe = None
            if name not in self._auto and quiet and len(self._auto) < self._prepared_max:
                self._auto[name] = False
                in_block = self.tx_status == TxStatus.IN_TRANSACTION
                if in_block:  # a failed Parse would abort the client's transaction
                    self._own(_SAVEPOINT, _Region(_HIDE, prepared))
                probe = _Region(_PROBE, prepared)
                self._own(codec.encode_close(b"S", name)
                          + codec.encode_prepare(name, prepared.text, prepared.types)
                          + codec.encode_describe(b"S", name) + codec.SYNC, probe)  # fmt: skip
                if in_block:
                    self._own(_ROLLBACK_TO, _Region(_HIDE, prepared))
            out.append(query)  # the Query itself, as it came
            self._sync_point(FE.QUERY)
            if probe is not None:
                self._regions[self._rfq_expected] = _Region(_CHECK, prepared, probe=probe)
        self._server.table = _SERVER_ALL if self._hiding() else _SERVER_EXEC
        self._track(decision, (statement,), self._rfq_expected)

    def _own(self, messages: bytes, region: _Region) -> None:
        self.out_server.append(messages)
        self._sync_point(FE.SYNC)
        self._regions[self._rfq_expected] = region

    def _hiding(self) -> bool:
        return any(r.kind != _EXEC for r in self._regions.values())

    def _region_message(self, region: _Region, tag: int, message: bytes) -> bytes | None:
        """What the client gets for one server message of a region: None for the message
        itself, b"" for nothing, or a replacement."""
        kind = region.kind
        if tag == BE.PARAMETER_STATUS or tag == BE.NOTIFICATION_RESPONSE:
            # The server's own news (a setting it reports, a NOTIFY) reach the client.
            if tag == BE.PARAMETER_STATUS:
                self._parameter_status(message)
            return None
        if tag == BE.ERROR_RESPONSE and region.failed is None:
            region.failed = codec.read_error_fields(message).get("C", "XX000")
        if kind in (_HIDE, _PROBE):
            if tag == BE.ROW_DESCRIPTION:
                region.described = message
            elif tag == BE.NO_DATA:
                region.described = b""
            return b"" if tag != BE.READY_FOR_QUERY else None
        if kind == _CHECK:
            if tag == BE.ROW_DESCRIPTION and region.described is None:
                region.described = message
            return None
        if tag == BE.BIND_COMPLETE:
            region.bound = True
            return b""
        if tag == BE.NO_DATA:
            return b""
        if tag == BE.ERROR_RESPONSE:
            if region.failed in _STALE:
                self._auto.pop(region.prepared.name, None)
                if region.query and self._rfq_expected == self._rfq_seen + 1 and (
                        not self._open_batch and self._held is None):  # fmt: skip
                    region.kind = _HIDE  # run again as it came, once this one is over
                    return b""
            if not region.bound:
                return self._point_at_literal(message, region.prepared)
        return None

    def _point_at_literal(self, message: bytes, prepared: Prepared) -> bytes | None:
        """A parameter's input error, as the server reports it for the literal: with the
        literal's position, without the CONTEXT line that names the parameter."""
        fields = codec.read_error_fields(message)
        context = fields.get("W", "")
        found = _PARAM_CONTEXT.search(context)
        if found is None:
            return None
        position = prepared.position(int(found.group(1)))
        if position is not None:
            fields["P"] = str(position)
        lines = [line for line in context.split("\n") if not _PARAM_CONTEXT.search(line)]
        if lines:
            fields["W"] = "\n".join(lines)
        else:
            del fields["W"]
        return codec.encode_error_fields(fields)

    def _region_done(self, region: _Region, index: int) -> bool:
        """A region's ReadyForQuery arrived; whether it is hidden from the client."""
        kind = region.kind
        if kind == _CHECK:
            probe = region.probe
            assert probe is not None
            name = region.prepared.name
            if probe.failed is not None:
                self._unpreparable(region.prepared, f"the server refused it ({probe.failed})")
            elif region.failed is None:
                if (probe.described or b"") == (region.described or b""):
                    if name in self._auto:
                        self._auto[name] = True
                else:
                    self._unpreparable(region.prepared, "its result columns would differ")
            if not self._auto.get(name):
                self._auto.pop(name, None)
        elif kind == _HIDE and region.query:
            # A stale statement's error was hidden: the Query runs again, as it came.
            self.out_server.append(region.query)
            self._sync_point(FE.QUERY)
            for flight in self._inflight:
                if flight.rfq_index == index:
                    flight.rfq_index = self._rfq_expected
                    flight.error = None
            region.query = b""
        return kind in (_HIDE, _PROBE)

    def _unpreparable(self, prepared: Prepared, reason: str) -> None:
        self._auto.pop(prepared.name, None)
        report = getattr(self.decider, "unpreparable", None)
        if report is not None:
            report(prepared.name, reason)

    def _function_call(self, consumed: bytes, cursor: int, start: int, end: int) -> int:
        oid = int.from_bytes(consumed[start + 5 : start + 9], "big")
        statement = self._statement("", Path.FUNCTION_CALL, oid)
        decision = self.decider.decide(statement)
        self._sync_point(FE.FUNCTION_CALL)
        if decision.verdict is not Verdict.DENY:
            return cursor
        if cursor < start:
            self.out_server.append(consumed[cursor:start])
        self.out_server.append(codec.encode_query(self._deny(decision, (statement,))))
        return end

    def _hold(self, piece: bytes) -> None:
        if piece:
            self._held.append(piece)  # type: ignore[union-attr]
            self._held_size += len(piece)

    def _release(self, terminator: int | None) -> None:
        """Decide the held batch as a whole, then forward it, rewritten, or denied."""
        held, parses = self._held or [], self._held_parses
        self._held, self._held_parses, self._held_size = None, [], 0
        statements: list[Statement] = []
        decisions: list[Decision] = []
        for index in parses:
            parse = codec.read_parse(held[index])
            statement = self._statement(parse.query, Path.EXTENDED)
            if self._auto and _DROPS_STATEMENTS.search(parse.query):
                self._auto.clear()
            if self.observe_all:
                if len(self._prepared) >= _PREPARED_MAX:
                    self._prepared.clear()
                self._prepared[parse.name] = parse.query
            decision = self.decider.decide(statement)
            statements.append(statement)
            decisions.append(decision)
            if decision.verdict is Verdict.REWRITE:
                held[index] = codec.encode_parse(parse, decision.sql or "")
        denied = next((d for d in decisions if d.verdict is Verdict.DENY), None)
        if denied is not None:
            # Nothing of a denied batch reaches the server: a failing Parse stands
            # in for all of it, and the server then skips to the client's Sync.
            marker = self._deny(denied, tuple(statements))
            self.out_server.append(codec.encode_unnamed_parse(marker))
            if terminator is not None:
                self.out_server.append(codec.message(terminator))
        else:
            self.out_server.extend(held)
            if terminator is not None:
                self.out_server.append(codec.message(terminator))
            decision = next((d for d in decisions if d is not ALLOW), ALLOW)
            if decision is not ALLOW or (self.observe_all and statements and self._held_executes):
                # Without a Sync now the batch completes at the client's next one.
                index = self._rfq_expected + 1
                self._track(decision, tuple(statements), index)
        if terminator == FE.SYNC:
            self._server_skipping = False
            self._sync_point(FE.SYNC)
        elif denied is not None:
            self._server_skipping = True

    def _track(self, decision: Decision, statements: tuple[Statement, ...], rfq_index: int) -> None:
        self._inflight.append(_InFlight(rfq_index, statements, decision, time.perf_counter()))

    def _deny(self, decision: Decision, statements: tuple[Statement, ...]) -> str:
        """The marker statement that stands in for a denied one on the server."""
        self._deny_seq += 1
        token = f"{self._deny_prefix}{self._deny_seq}"
        self._denials[token] = decision
        self.decider.observe(Outcome(statements, decision, 0.0, decision.sqlstate))
        return f"/* sqlx-os: statement denied by policy */ {token}"

    # --- server → client -------------------------------------------------------

    def receive_server(self, data: bytes) -> None:
        try:
            if self.state is State.READY:
                self._server_ready(data)
            elif self.state is State.AUTHENTICATING:
                self._server_startup(data)
            # In any other state the server has nothing to say to the client.
        except ProtocolViolation as exc:
            self.fail("08P01", f"invalid message from server: {exc}")

    def _server_startup(self, data: bytes) -> None:
        consumed, items = self._server.feed(data)
        cursor = 0
        for tag, start, end in items:
            replacement: bytes | None = None
            message = consumed[start:end]
            if tag == BE.AUTHENTICATION and codec.read_auth_code(message) == Auth.SASL:
                # Channel binding ties SCRAM to one TLS session; the client's and
                # the server's are different sessions, so never offer it.
                mechanisms = [
                    m
                    for m in codec.read_sasl_mechanisms(message)
                    if not m.endswith(_CHANNEL_BINDING_SUFFIX)
                ]
                replacement = codec.encode_sasl_mechanisms(mechanisms)
            elif tag == BE.BACKEND_KEY_DATA:
                self.upstream_key = codec.read_backend_key(message)
                replacement = codec.encode_backend_key(*self.key)
            elif tag == BE.PARAMETER_STATUS:
                self._parameter_status(message)
            elif tag == BE.ERROR_RESPONSE:
                # The server explains its refusal itself; the proxy adds no error.
                self._server_refused = True
                fields = codec.read_error_fields(message)
                if "channel binding" in fields.get("M", ""):
                    replacement = codec.encode_error_fields({**fields, "H": _CHANNEL_BINDING_HINT})
            elif tag == BE.READY_FOR_QUERY:
                self.out_client.append(consumed[cursor:end])
                self.tx_status = codec.read_ready_status(message)
                self._move("ready_for_query")
                ready = _CLIENT_READY_OBSERVED if self.observe_all else _CLIENT_READY
                self._client.table = _CLIENT_CONSOLE if self.console_mode else ready
                self._client.max_length = self._max_message
                self._server.table = self._ready_table()
                rest = consumed[end:] + self._server.take_buffer()
                early, self._early = self._early, b""
                if rest:
                    self._server_ready(rest)
                if early:
                    self.receive_client(early)
                return
            if replacement is not None:
                if cursor < start:
                    self.out_client.append(consumed[cursor:start])
                self.out_client.append(replacement)
                cursor = end
        if cursor < len(consumed):
            self.out_client.append(consumed[cursor:])

    def _server_ready(self, data: bytes) -> None:
        consumed, items = self._server.feed(data)
        if not items:
            if consumed:
                self.out_client.append(consumed)
            return
        cursor = 0
        regions = self._regions
        for tag, start, end in items:
            if regions:
                region = regions.get(self._rfq_seen + 1)
                if region is not None:
                    replacement = self._region_message(region, tag, consumed[start:end])
                    if tag == BE.ERROR_RESPONSE and region.kind >= _CHECK:
                        # Noted for the outcome, and scrubbed as any other error.
                        error = self._server_error(replacement or consumed[start:end])
                        replacement = error if error is not None else replacement
                    if tag == BE.READY_FOR_QUERY:
                        del regions[self._rfq_seen + 1]
                        if self._region_done(region, self._rfq_seen + 1):
                            replacement = b""
                        if not self._hiding():
                            self._server.table = _SERVER_EXEC if regions else self._ready_table()
                    if replacement is not None:
                        if cursor < start:
                            self.out_client.append(consumed[cursor:start])
                        if replacement:
                            self.out_client.append(replacement)
                        cursor = end
                    if tag != BE.READY_FOR_QUERY:
                        if tag == BE.COMMAND_COMPLETE and region.kind >= _CHECK:
                            self._count_rows(consumed, start, end)
                        continue
            if tag == BE.READY_FOR_QUERY:
                self.tx_status = consumed[start + 5]
                self._rfq_seen += 1
                if self._rfq_seen > self._rfq_expected:  # a client we could not follow
                    self._rfq_expected = self._rfq_seen
                while self._inflight and self._inflight[0].rfq_index <= self._rfq_seen:
                    self._observe(self._inflight.popleft())
            elif tag == BE.COMMAND_COMPLETE:
                self._count_rows(consumed, start, end)
            elif tag == BE.PARAMETER_STATUS:
                self._parameter_status(consumed[start:end])
            elif tag == BE.ERROR_RESPONSE:
                self._copy_in = False
                replacement = self._server_error(consumed[start:end])
                if replacement is not None:
                    if cursor < start:
                        self.out_client.append(consumed[cursor:start])
                    self.out_client.append(replacement)
                    cursor = end
            elif tag == BE.COPY_IN_RESPONSE or tag == BE.COPY_BOTH_RESPONSE:
                self._copy_in = True
                if self._last_sync_point == FE.SYNC and self._rfq_expected > self._rfq_seen:
                    # The Sync that followed this COPY's Execute reached a server
                    # in COPY IN mode, which ignores it: no ReadyForQuery for it.
                    self._rfq_expected -= 1
                    self._last_sync_point = 0
        if cursor < len(consumed):
            self.out_client.append(consumed[cursor:] if cursor else consumed)

    def _count_rows(self, consumed: bytes, start: int, end: int) -> None:
        if self._inflight:
            flight = self._inflight[0]
            count = codec.read_command_rows(consumed[start:end])
            if count is not None:
                flight.rows = (flight.rows or 0) + count

    def _ready_table(self) -> bytes:
        return _SERVER_READY_OBSERVED if self.observe_all else _SERVER_READY

    def _parameter_status(self, message: bytes) -> None:
        name, value = codec.read_parameter_status(message)
        self.server_params[name] = value
        if name == "standard_conforming_strings":
            self._escapes = value == "off"
        elif name == "client_encoding":
            self._utf8 = value.upper() in ("UTF8", "UNICODE")

    def _server_error(self, message: bytes) -> bytes | None:
        """Swap the server's error for a denial's; note errors for outcomes."""
        fields = codec.read_error_fields(message)
        if self._denials:
            text = fields.get("M", "")
            for token in self._denials:
                if token in text:
                    decision = self._denials.pop(token)
                    reason = decision.reason or "statement denied by policy"
                    return codec.encode_error(decision.sqlstate, reason)
        flight = self._inflight[0] if self._inflight else None
        if flight is not None and flight.error is None and flight.rfq_index == self._rfq_seen + 1:
            flight.error = fields.get("C", "XX000")
        if self.scrub_details and "D" in fields:
            fields["D"] = "(hidden by sqlx-os: a detail may show row values)"
            return codec.encode_error_fields(fields)
        return None

    def _observe(self, flight: _InFlight) -> None:
        elapsed = time.perf_counter() - flight.started
        self.decider.observe(Outcome(flight.statements, flight.decision, elapsed, flight.error,
                                     flight.rows, self.tx_status != TxStatus.IDLE))  # fmt: skip

    # --- lifecycle ---------------------------------------------------------------

    def server_lost(self) -> None:
        if self._server_refused and self.state is State.AUTHENTICATING:
            self._close("server refused the session")
        elif self.state in (State.AUTHENTICATING, State.READY):
            self.fail("08006", "server closed the connection unexpectedly")
        else:
            self._close("server closed the connection")

    def upstream_failed(self, text: str) -> None:
        self.fail("08001", text)

    def terminate_upstream(self) -> bytes | None:
        """A Terminate for the server, if the stream is between messages."""
        if self.state is State.READY and not self.client_mid_message and self._held is None:
            return codec.TERMINATE
        return None
