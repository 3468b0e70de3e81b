"""The MySQL listener: asyncio glue around `MySqlSession`.

Owns sockets only: accepts a client, connects its upstream (the server
speaks first, so the client waits for the greeting the proxy relays), carries
out the session's closes, applies flow control both ways, and closes the
upstream when the client goes (the server then rolls back whatever
transaction was open). The DSN `mysql://user[:password]@host:port[/db]`
gives where to connect; clients relay their own credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlsplit

import structlog

from sqlx.proxy.decision import Decider
from sqlx.proxy.mysql.session import Close, MySqlSession, StartTls, StartUpstreamTls
from sqlx.proxy.pg.upstream import client_tls_context
from sqlx.proxy.tls import accept_tls

log = structlog.get_logger("sqlx.proxy.mysql")


@dataclass(frozen=True, slots=True)
class MySqlTarget:
    host: str
    port: int = 3306
    user: str | None = None
    password: str | None = None
    database: str | None = None
    sslmode: str = "prefer"  # from the DSN's ssl-mode, in libpq's names
    sslrootcert: str | None = None  # the DSN's ssl-ca

    def describe(self) -> str:
        return f"{self.host}:{self.port}"


# MySQL's ssl-mode values -> libpq's, which `client_tls_context` takes.
SSL_MODES = {"disabled": "disable", "preferred": "prefer", "required": "require",
             "verify_ca": "verify-ca", "verify_identity": "verify-full"}  # fmt: skip


def parse_mysql_dsn(dsn: str) -> MySqlTarget:
    parts = urlsplit(dsn)
    if parts.scheme not in ("mysql", "mariadb"):
        raise ValueError(f"MySQL upstream DSN must start with mysql://, got {dsn!r}")
    if not parts.hostname:
        raise ValueError(f"MySQL upstream DSN has no host: {dsn!r}")
    query = {k.lower().replace("-", "_"): v for k, v in parse_qsl(parts.query)}
    mode = query.get("ssl_mode", "preferred").lower()
    if mode not in SSL_MODES:
        raise ValueError(f"unknown ssl-mode {mode!r}; expected one of "
                         f"{', '.join(m.upper() for m in SSL_MODES)}")  # fmt: skip
    return MySqlTarget(parts.hostname, parts.port or 3306,
                       unquote(parts.username) if parts.username else None,
                       unquote(parts.password) if parts.password else None,
                       parts.path.lstrip("/") or None, SSL_MODES[mode],
                       query.get("ssl_ca"))  # fmt: skip


class _Upstream(asyncio.Protocol):
    def __init__(self, client: MySqlClient) -> None:
        self.client = client

    def data_received(self, data: bytes) -> None:
        self.client.server_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.server_lost()

    def pause_writing(self) -> None:
        if self.client.transport is not None:
            self.client.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.client.transport is not None:
            self.client.transport.resume_reading()


class MySqlClient(asyncio.Protocol):
    def __init__(self, proxy: MySqlProxy) -> None:
        self.proxy = proxy
        self.transport: asyncio.Transport | None = None
        self.upstream: asyncio.Transport | None = None
        self.closed = False
        # Between the client's SSLRequest and the end of its TLS handshake, what the
        # session has for the client (bytes, a close) waits: the plain transport must
        # not carry it, and the handshake may deliver the client's next packet first.
        self._upgrading = False
        self.session: MySqlSession

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        addr = peer[0] if isinstance(peer, tuple) else "local"
        self.session = MySqlSession(self.proxy.decider, client_addr=addr,
                                    max_packet_bytes=self.proxy.max_packet_bytes,
                                    tls_available=self.proxy.tls_context is not None,
                                    upstream_tls=self.proxy.target.sslmode)  # fmt: skip
        self.proxy.clients.add(self)
        self._connecting = asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        target = self.proxy.target
        loop = asyncio.get_running_loop()
        if self.proxy.prepare is not None:
            await self.proxy.prepare()
        try:
            async with asyncio.timeout(self.proxy.connect_timeout_s):
                transport, _ = await loop.create_connection(
                    lambda: _Upstream(self), target.host, target.port)  # fmt: skip
        except (OSError, TimeoutError) as exc:
            self.session.upstream_failed(target.describe(), str(exc) or type(exc).__name__)
            self._flush()
            return
        if self.closed:
            transport.close()
            return
        self.upstream = transport  # type: ignore[assignment]
        self._flush()

    def data_received(self, data: bytes) -> None:
        self.session.receive_client(data)
        self._flush()

    def server_data(self, data: bytes) -> None:
        self.session.receive_server(data)
        self._flush()

    def _flush(self) -> None:
        s = self.session
        if s.out_server:
            if self.upstream is not None:
                self.upstream.writelines(s.out_server)
            s.out_server.clear()
        if self._upgrading:
            return
        if s.out_client:
            if self.transport is not None and not self.transport.is_closing():
                self.transport.writelines(s.out_client)
            s.out_client.clear()
        if s.actions:
            actions = list(s.actions)
            s.actions.clear()
            for action in actions:
                if isinstance(action, StartTls) and self.transport is not None:
                    # Nothing more is read in plaintext: the next bytes are TLS.
                    self.transport.pause_reading()
                    self._upgrading = True
                    self._tls = asyncio.get_running_loop().create_task(
                        self._start_tls(self.transport, action.early))  # fmt: skip
                elif isinstance(action, StartUpstreamTls) and self.upstream is not None:
                    self.upstream.pause_reading()
                    self._upstream_tls = asyncio.get_running_loop().create_task(
                        self._secure_upstream(self.upstream))  # fmt: skip
                elif isinstance(action, Close):
                    self._close()

    async def _start_tls(self, transport: asyncio.Transport, early: bytes) -> None:
        assert self.proxy.tls_context is not None
        try:
            self.transport = await accept_tls(transport, self, self.proxy.tls_context,
                                              early=early)  # fmt: skip
        except (OSError, ssl.SSLError, ConnectionError) as exc:
            log.info("MySQL client TLS handshake failed", error=str(exc) or type(exc).__name__)
            # A handshake that never finished is not reported to this protocol as a lost
            # connection: the server side is closed here.
            self._upgrading = False
            self.connection_lost(exc)
            return
        self._upgrading = False
        self._flush()

    async def _secure_upstream(self, transport: asyncio.Transport) -> None:
        target = self.proxy.target
        loop = asyncio.get_running_loop()
        try:
            self.upstream = await loop.start_tls(  # type: ignore[assignment]
                transport, transport.get_protocol(), client_tls_context(target),
                server_hostname=target.host)  # fmt: skip
        except (OSError, ssl.SSLError, ConnectionError) as exc:
            self.session.fail(2026, "HY000", f"sqlx-os: SSL connection error to the server: "
                              f"{exc}", seq=2)  # fmt: skip
            self._flush()
            return
        self.session.upstream_secured()
        self._flush()

    def _close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()  # flushes what was written first
        if self.upstream is not None and not self.upstream.is_closing():
            self.upstream.close()

    def server_lost(self) -> None:
        if self.closed:
            return
        self.session.server_lost()
        self._flush()
        if not self._upgrading:
            self._close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.proxy.clients.discard(self)
        if self.upstream is not None and not self.upstream.is_closing():
            self.upstream.close()
        if not self._connecting.done():
            self._connecting.cancel()

    def pause_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.pause_reading()

    def resume_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.resume_reading()


class MySqlProxy:
    def __init__(self, target: MySqlTarget, decider: Decider, *, max_packet_bytes: int,
                 connect_timeout_s: float, tls_context: ssl.SSLContext | None = None,
                 prepare: Callable[[], Awaitable[None]] | None = None) -> None:  # fmt: skip
        self.target = target
        # Awaited before each client is connected: the catalog is read before the first.
        self.prepare = prepare
        self.tls_context = tls_context
        self.decider = decider
        self.max_packet_bytes = max_packet_bytes
        self.connect_timeout_s = connect_timeout_s
        self.clients: set[MySqlClient] = set()
        self._server: asyncio.base_events.Server | None = None

    async def start(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: MySqlClient(self), host, port)
        return self._server.sockets[0].getsockname()[1]

    async def drain(self, timeout_s: float) -> None:
        """Stop accepting; close each client once it is between commands outside a
        transaction; after `timeout_s` close the rest (closing the upstream makes the server
        roll back an open transaction)."""
        if self._server is not None:
            self._server.close()
        deadline = asyncio.get_running_loop().time() + timeout_s
        while self.clients and asyncio.get_running_loop().time() < deadline:
            for client in list(self.clients):
                if client.session.idle:
                    client._close()
            await asyncio.sleep(0.05)
        for client in list(self.clients):
            with contextlib.suppress(Exception):
                client._close()
