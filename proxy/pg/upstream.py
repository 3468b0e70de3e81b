"""Connections to the real PostgreSQL server: DSN, TCP or unix socket, TLS per sslmode.

A client session's upstream uses the client's own startup packet and
credentials; the DSN contributes only where to connect and how (host, port,
sslmode). Its user and password belong to the proxy's own side connections.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from sqlx.proxy.errors import UpstreamUnavailable
from sqlx.proxy.pg import codec

SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


@dataclass(frozen=True, slots=True)
class UpstreamTarget:
    host: str  # a hostname, an address, or a unix-socket directory (leading '/')
    port: int = 5432
    user: str | None = None
    password: str | None = None
    database: str | None = None
    sslmode: str = "prefer"
    sslrootcert: str | None = None

    @property
    def unix_path(self) -> str | None:
        if self.host.startswith("/"):
            return str(Path(self.host) / f".s.PGSQL.{self.port}")
        return None

    def describe(self) -> str:
        return self.unix_path or f"{self.host}:{self.port}"


def asyncpg_kwargs(target: UpstreamTarget) -> dict[str, object]:
    """`asyncpg.connect` arguments for the proxy's own side connections to `target`."""
    ssl_arg: object = False
    if target.sslmode in ("prefer", "require"):
        ssl_arg = target.sslmode
    elif target.sslmode in ("verify-ca", "verify-full"):
        ctx = ssl.create_default_context(cafile=target.sslrootcert)
        ctx.check_hostname = target.sslmode == "verify-full"
        ssl_arg = ctx
    return {"host": target.host, "port": target.port, "user": target.user,
            "password": target.password, "ssl": ssl_arg}  # fmt: skip


def parse_dsn(dsn: str) -> UpstreamTarget:
    """Parse `postgresql://user:pass@host:port/db?sslmode=...` (or `?host=/socket/dir`)."""
    parts = urlsplit(dsn)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError(f"upstream DSN must start with postgresql://, got {dsn!r}")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    host = query.get("host") or (unquote(parts.hostname) if parts.hostname else "") or "localhost"
    sslmode = query.get("sslmode", "prefer")
    if sslmode not in SSL_MODES:
        raise ValueError(f"unknown sslmode {sslmode!r}; expected one of {', '.join(SSL_MODES)}")
    try:
        port = int(query.get("port") or parts.port or 5432)
    except ValueError as exc:
        raise ValueError(f"bad port in upstream DSN {dsn!r}") from exc
    return UpstreamTarget(
        host=host,
        port=port,
        user=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        database=parts.path.lstrip("/") or None,
        sslmode="disable" if host.startswith("/") else sslmode,
        sslrootcert=query.get("sslrootcert"),
    )


class TlsSettings(Protocol):
    sslmode: str  # libpq's names: disable, prefer, require, verify-ca, verify-full
    sslrootcert: str | None


def client_tls_context(target: TlsSettings) -> ssl.SSLContext:
    """The TLS settings libpq would use for the same sslmode."""
    if target.sslmode in ("verify-ca", "verify-full"):
        ctx = ssl.create_default_context(cafile=target.sslrootcert)
        ctx.check_hostname = target.sslmode == "verify-full"
        return ctx
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class UpstreamProtocol(asyncio.Protocol):
    """asyncio glue for one server connection; hands everything to its owner."""

    def __init__(self, owner: UpstreamOwner) -> None:
        self.owner = owner
        self.ssl_reply: asyncio.Future[bytes] | None = None
        self.closed = False

    def data_received(self, data: bytes) -> None:
        waiter = self.ssl_reply
        if waiter is not None:
            # The server answers an SSLRequest with one unframed byte.
            self.ssl_reply = None
            if len(data) > 1:
                waiter.set_exception(UpstreamUnavailable("server sent data after its SSL response"))
            else:
                waiter.set_result(data)
            return
        self.owner.server_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.ssl_reply is not None and not self.ssl_reply.done():
            self.ssl_reply.set_exception(UpstreamUnavailable("server closed the connection"))
            return
        self.owner.server_lost(exc)

    def pause_writing(self) -> None:
        self.owner.server_write_paused()

    def resume_writing(self) -> None:
        self.owner.server_write_resumed()


class UpstreamOwner:
    """What an upstream connection reports to (the client connection that owns it)."""

    def server_data(self, data: bytes) -> None: ...
    def server_lost(self, exc: Exception | None) -> None: ...
    def server_write_paused(self) -> None: ...
    def server_write_resumed(self) -> None: ...


async def open_connection(
    target: UpstreamTarget,
    protocol_factory: Callable[[], UpstreamProtocol],
    timeout: float,
) -> tuple[asyncio.Transport, UpstreamProtocol]:
    """Connect and negotiate TLS; the caller sends the startup packet next."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            if target.unix_path:
                transport, protocol = await loop.create_unix_connection(
                    protocol_factory, target.unix_path
                )
            else:
                transport, protocol = await loop.create_connection(
                    protocol_factory, target.host, target.port
                )
            if target.sslmode in ("disable", "allow"):
                return transport, protocol  # type: ignore[return-value]
            protocol.ssl_reply = loop.create_future()
            transport.write(codec.encode_ssl_request())
            answer = await protocol.ssl_reply
            if answer == b"S":
                tls = await loop.start_tls(
                    transport,
                    protocol,
                    client_tls_context(target),
                    server_hostname=target.host,
                )
                assert tls is not None
                return tls, protocol  # type: ignore[return-value]
            if answer == b"N" and target.sslmode == "prefer":
                return transport, protocol  # type: ignore[return-value]
            transport.close()
            raise UpstreamUnavailable(
                f"server does not support SSL, but sslmode={target.sslmode} requires it"
            )
    except TimeoutError as exc:
        raise UpstreamUnavailable(f"timeout after {timeout:g}s") from exc
    except ssl.SSLError as exc:
        raise UpstreamUnavailable(f"TLS handshake failed: {exc.reason or exc}") from exc
    except OSError as exc:
        raise UpstreamUnavailable(exc.strerror or str(exc)) from exc


async def send_cancel(target: UpstreamTarget, pid: int, secret: int, timeout: float) -> None:
    """Deliver a CancelRequest to the server on a connection of its own."""
    async with asyncio.timeout(timeout):
        if target.unix_path:
            reader, writer = await asyncio.open_unix_connection(target.unix_path)
        else:
            reader, writer = await asyncio.open_connection(target.host, target.port)
        writer.write(codec.encode_cancel_request(pid, secret))
        await writer.drain()
        # The server closes without answering once it has read the request.
        await reader.read()
        writer.close()
