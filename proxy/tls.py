"""A server-side TLS upgrade of a live transport that also takes bytes already read.

`loop.start_tls` assumes nothing of the TLS stream has been read yet. That
holds for PostgreSQL, whose client waits for the proxy's `S` before it sends
its ClientHello. A MySQL client does not wait: it sends the SSLRequest packet
and its ClientHello straight after, so both can arrive in one read, and the
ClientHello is then in the proxy's hands, not the socket's. Dropping it
leaves both ends waiting for each other until a timeout. This does what
`start_tls` does (pause, swap in the loop's own SSL protocol, resume) and
hands the SSL protocol those early bytes before anything new is read.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import ssl
from typing import Any

import uvloop
import uvloop.loop


def _ssl_protocol_class(loop: asyncio.AbstractEventLoop) -> Any:
    # The loop's own implementation: uvloop's is compiled and pairs with its transports.
    if isinstance(loop, uvloop.Loop):
        return uvloop.loop.SSLProtocol
    return asyncio.sslproto.SSLProtocol


def _feed(protocol: asyncio.BufferedProtocol, data: bytes) -> None:
    view = memoryview(data)
    while view:
        buf = protocol.get_buffer(len(view))
        n = min(len(buf), len(view))
        buf[:n] = view[:n]
        protocol.buffer_updated(n)
        view = view[n:]


async def accept_tls(transport: asyncio.Transport, protocol: asyncio.BaseProtocol,
                     context: ssl.SSLContext, *, early: bytes = b"",
                     handshake_timeout_s: float = 60.0) -> asyncio.Transport:  # fmt: skip
    """Upgrade `transport` (server side) for `protocol`; `early` is TLS already read off it.

    Returns the TLS transport once the handshake is done; raises what the handshake
    raised (the plain transport is then closed). `protocol.data_received` may be called
    with the client's first decrypted bytes before this returns: until it does, the
    protocol must not write, since the transport it holds is still the plain one."""
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()
    ssl_protocol = _ssl_protocol_class(loop)(
        loop, protocol, context, waiter, True, None, call_connection_made=False,
        ssl_handshake_timeout=handshake_timeout_s)  # fmt: skip
    transport.pause_reading()
    transport.set_protocol(ssl_protocol)

    def begin() -> None:
        # In one callback, so no read from the socket can come between them: the SSL
        # object exists, then it gets the bytes that came first, then reading resumes.
        ssl_protocol.connection_made(transport)
        if early:
            _feed(ssl_protocol, early)
        if not transport.is_closing():
            transport.resume_reading()

    started = loop.call_soon(begin)
    try:
        await waiter
    except BaseException:
        started.cancel()
        transport.close()
        raise
    return ssl_protocol._get_app_transport()  # type: ignore[no-any-return]
