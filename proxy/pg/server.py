"""The PostgreSQL listener: asyncio glue around `PgSession`.

Owns sockets only: accepts clients, opens their upstream connections, starts
TLS, carries out the session's actions, routes CancelRequests by the proxy's
own BackendKeyData, applies flow control in both directions, and drains on
shutdown. Every protocol decision is the session's.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import ssl

import structlog

from sqlx.config import Config
from sqlx.proxy.decision import Decider
from sqlx.proxy.errors import UpstreamUnavailable
from sqlx.proxy.pg import upstream
from sqlx.proxy.pg.session import (
    Close,
    ConnectUpstream,
    Console,
    ForwardCancel,
    PgSession,
    ReplySSL,
    State,
)
from sqlx.proxy.pg.upstream import UpstreamProtocol, UpstreamTarget

log = structlog.get_logger("sqlx.proxy.pg")


def server_tls_context(config: Config) -> ssl.SSLContext | None:
    tls = config.proxy.tls
    if not tls.enabled:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    return ctx


class ClientConnection(asyncio.Protocol):
    """One client socket, its session, and its upstream connection."""

    def __init__(self, proxy: PgProxy) -> None:
        self.proxy = proxy
        self.transport: asyncio.Transport | None = None
        self.upstream: asyncio.Transport | None = None
        self.session: PgSession
        self.closed = False
        self.target: UpstreamTarget | None = None  # where this client's upstream went
        self._upstream_reading_paused = False
        # Client bytes that arrive while TLS is being set up wait here, so nothing
        # is answered on the plaintext transport after 'S' went out.
        self._tls_backlog: list[bytes] | None = None

    # --- client side ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        addr = peer[0] if isinstance(peer, tuple) else "local"
        config = self.proxy.config
        auto = config.aif.auto_prepare
        self.session = PgSession(
            self.proxy.decider,
            key=self.proxy.register(self),
            client_addr=addr,
            tls_available=self.proxy.tls_context is not None,
            max_message_bytes=config.proxy.max_message_bytes,
            max_held_batch_bytes=config.proxy.max_held_batch_bytes,
            observe_all=config.telemetry.enabled,
            console=self.proxy.console,
            prepared_max=auto.max_per_connection if auto.enabled else 0,
        )

    def data_received(self, data: bytes) -> None:
        if self._tls_backlog is not None:
            self._tls_backlog.append(data)
            return
        self.session.receive_client(data)
        self._flush()

    def _flush(self) -> None:
        """Carry out what the session left: bytes for either side, then its actions."""
        session = self.session
        if session.out_server:
            # Client bytes held during authentication go out once it completes.
            if self.upstream is not None:
                self.upstream.writelines(session.out_server)
            session.out_server.clear()
        if session.out_client:
            self.transport.writelines(session.out_client)  # type: ignore[union-attr]
            session.out_client.clear()
        if session.actions:
            self._act()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.proxy.unregister(self)
        up = self.upstream
        if up is not None and not up.is_closing():
            # Closing the server connection makes the server roll back whatever
            # transaction the vanished client left open.
            bye = self.session.terminate_upstream()
            if bye:
                up.write(bye)
            up.close()

    def pause_writing(self) -> None:
        # The client reads slower than the server sends: stop reading the server.
        if self.upstream is not None:
            self._upstream_reading_paused = True
            self.upstream.pause_reading()

    def resume_writing(self) -> None:
        if self.upstream is not None and self._upstream_reading_paused:
            self._upstream_reading_paused = False
            self.upstream.resume_reading()

    # --- server side (called by UpstreamProtocol) --------------------------------

    def server_data(self, data: bytes) -> None:
        self.session.receive_server(data)
        self._flush()
        if self.proxy.draining and self.session.idle:
            self.shutdown()

    def server_lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        self.session.server_lost()
        self._flush_client()
        self._act()

    def server_write_paused(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def server_write_resumed(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    # --- actions ---------------------------------------------------------------------

    def _flush_client(self) -> None:
        if self.session.out_client and self.transport is not None:
            self.transport.writelines(self.session.out_client)
        self.session.out_client.clear()

    def _act(self) -> None:
        actions = self.session.actions[:]
        self.session.actions.clear()
        for action in actions:
            if isinstance(action, ConnectUpstream):
                self.proxy.spawn(self._connect(action))
            elif isinstance(action, ReplySSL):
                self._reply_ssl(action.accept)
            elif isinstance(action, ForwardCancel):
                self.proxy.spawn(self.proxy.cancel(action.pid, action.secret))
            elif isinstance(action, Close):
                self._close(action.reason)

    def _close(self, reason: str) -> None:
        self._flush_client()
        if self.transport is not None:
            self.transport.close()
        if self.upstream is not None:
            self.upstream.close()
        if reason not in ("client terminated", "cancel request"):
            log.info("client closed", reason=reason, client=self.session.client_addr)

    def shutdown(self) -> None:
        """End the session for a drain: FATAL 57P01 to the client, Terminate upstream."""
        if self.closed:
            return
        if self.upstream is not None and not self.upstream.is_closing():
            bye = self.session.terminate_upstream()
            if bye:
                self.upstream.write(bye)
        self.session.fail("57P01", "terminating connection due to administrator command")
        self._act()

    def _reply_ssl(self, accept: bool) -> None:
        transport = self.transport
        assert transport is not None
        if not accept:
            transport.write(b"N")
            return
        # Stop reading before 'S' goes out: whatever the client sends next must
        # reach the TLS layer, not the plaintext parser.
        transport.pause_reading()
        transport.write(b"S")
        self.proxy.spawn(self._start_tls(transport))

    async def _start_tls(self, transport: asyncio.Transport) -> None:
        loop = asyncio.get_running_loop()
        try:
            tls = await loop.start_tls(transport, self, self.proxy.tls_context, server_side=True)  # type: ignore[arg-type]
        except (OSError, ssl.SSLError, ConnectionError) as exc:
            log.info("client TLS handshake failed", error=str(exc))
            transport.close()
            return
        self.transport = tls  # type: ignore[assignment]

    async def _connect(self, action: ConnectUpstream) -> None:
        target = self.target = self.proxy.target
        prepare = getattr(self.proxy.decider, "prepare", None)
        if prepare is not None and not self.session.console_mode:
            # What the decider needs for this session (its database's catalog) is
            # ready before the session can reach its first statement.
            refusal = await prepare(action.facts)
            if self.closed:
                return
            if refusal:
                self.session.fail("42501", refusal)
                self._act()
                return
            masks = getattr(self.proxy.decider, "masks", None)
            self.session.scrub_details = bool(masks and masks(action.facts))
        try:
            transport, _ = await upstream.open_connection(
                target,
                lambda: UpstreamProtocol(self),  # type: ignore[arg-type]
                self.proxy.config.proxy.connect_timeout_s,
            )
        except UpstreamUnavailable as exc:
            log.warning("upstream unreachable", upstream=target.describe(), error=str(exc))
            self.session.upstream_failed(
                f"could not connect to upstream server {target.describe()}: {exc}"
            )
            self._act()
            return
        if self.closed or self.session.state is State.CLOSED:
            transport.close()
            return
        self.upstream = transport
        transport.write(action.startup)
        self.session.upstream_connected()
        self._flush()


class PgProxy:
    """The PostgreSQL listener and the registry of its client connections."""

    def __init__(self, config: Config, target: UpstreamTarget, decider: Decider) -> None:
        self.config = config
        self.target = target
        self.decider = decider
        self.console: Console | None = None  # the admin console, when admin.users is set
        self.tls_context = server_tls_context(config)
        self.draining = False
        self.clients: dict[int, ClientConnection] = {}
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def reconfigure(
        self, config: Config, target: UpstreamTarget, tls: ssl.SSLContext | None
    ) -> None:
        """Take a new snapshot; it applies to connections made from now on."""
        self.config, self.target, self.tls_context = config, target, tls

    async def start(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: ClientConnection(self), host, port, reuse_address=True
        )
        return self._server.sockets[0].getsockname()[1]

    def spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- cancel routing -----------------------------------------------------------

    def register(self, conn: ClientConnection) -> tuple[int, int]:
        """Issue the proxy's own BackendKeyData for a new client."""
        while True:
            pid = secrets.randbelow(0x7FFFFFFF - 1) + 1
            if pid not in self.clients:
                break
        self.clients[pid] = conn
        return pid, secrets.randbits(32)

    def unregister(self, conn: ClientConnection) -> None:
        pid = conn.session.key[0]
        if self.clients.get(pid) is conn:
            del self.clients[pid]

    async def cancel(self, pid: int, secret: int) -> None:
        conn = self.clients.get(pid)
        # A wrong key cancels nothing, and says nothing (as the server does).
        if conn is None or not secrets.compare_digest(
            secret.to_bytes(4, "big"), conn.session.key[1].to_bytes(4, "big")
        ):
            log.info("cancel request with unknown key ignored")
            return
        real, target = conn.session.upstream_key, conn.target
        if real is None or target is None:
            return
        try:
            await upstream.send_cancel(
                target, real[0], real[1], self.config.proxy.connect_timeout_s
            )
        except (OSError, TimeoutError) as exc:
            log.warning("cancel could not reach upstream", error=str(exc))

    # --- shutdown -------------------------------------------------------------------

    async def drain(self, timeout: float) -> None:
        """Stop accepting; end sessions as they go idle; after `timeout`, end the rest."""
        self.draining = True
        if self._server is not None:
            self._server.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.clients and loop.time() < deadline:
            for conn in list(self.clients.values()):
                if conn.session.idle or conn.upstream is None:
                    conn.shutdown()
            await asyncio.sleep(0.02)
        for conn in list(self.clients.values()):
            conn.shutdown()
        await asyncio.sleep(0)
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._tasks, return_exceptions=True)
