"""`proxy.tls.accept_tls` on both event loops: a TLS handshake whose first bytes the
server had already read (in the same segment as a plaintext request) completes."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import uvloop

from sqlx.proxy.tls import accept_tls
from tests.fixtures.fix_pg import make_cert

REQUEST = b"STARTTLS\n"


class _Upgrading(asyncio.Protocol):
    """Reads REQUEST in plaintext, then speaks TLS; echoes what it gets, upper-cased."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.secure = False
        self.upgraded = False
        self.held: list[bytes] = []  # answers before the TLS transport is ours

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        if self.secure:
            if self.upgraded:
                self.transport.write(data.upper())
            else:
                self.held.append(data.upper())
            return
        self.buf += data
        if self.buf.startswith(REQUEST):
            early, self.buf = self.buf[len(REQUEST) :], b""
            self.secure = True
            self.transport.pause_reading()
            asyncio.get_running_loop().create_task(self._upgrade(self.transport, early))

    async def _upgrade(self, plain: asyncio.Transport, early: bytes) -> None:
        self.transport = await accept_tls(plain, self, self.context, early=early)
        self.upgraded = True
        self.transport.writelines(self.held)


Served = tuple[asyncio.AbstractEventLoop, threading.Thread, int]  # the loop, its thread, port


def _serve(new_loop: Callable[[], asyncio.AbstractEventLoop], context: ssl.SSLContext) -> Served:
    loop = new_loop()
    ready: list[int] = []
    started = threading.Event()

    async def main() -> None:
        server = await loop.create_server(lambda: _Upgrading(context), "127.0.0.1", 0)
        ready.append(server.sockets[0].getsockname()[1])
        started.set()
        await asyncio.sleep(3600)

    def run() -> None:
        with contextlib.suppress(RuntimeError):  # stopped by the test, main() unfinished
            loop.run_until_complete(main())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    started.wait(10)
    return loop, thread, ready[0]


@pytest.mark.parametrize("new_loop", [asyncio.new_event_loop, uvloop.new_event_loop],
                         ids=["asyncio", "uvloop"])  # fmt: skip
def test_a_handshake_begun_in_the_same_read_as_the_request_completes(
    new_loop: Callable[[], asyncio.AbstractEventLoop], tmp_path: Path
) -> None:
    cert, key = make_cert(tmp_path)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    loop, thread, port = _serve(new_loop, server_context)
    client = ssl.create_default_context(cafile=str(cert))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = client.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        with contextlib.suppress(ssl.SSLWantReadError):
            tls.do_handshake()
        sock.sendall(REQUEST + outgoing.read())  # the ClientHello rides with the request
        answer = b""
        tls_done = False
        while answer != b"HELLO":
            try:
                if not tls_done:
                    tls.do_handshake()
                    tls_done = True
                    tls.write(b"hello")
                else:
                    answer += tls.read(100)
            except ssl.SSLWantReadError:
                sock.sendall(outgoing.read())
                data = sock.recv(65536)
                assert data, "the server closed instead of finishing the handshake"
                incoming.write(data)
            sock.sendall(outgoing.read())
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
