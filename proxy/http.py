"""The HTTP side port: `/healthz` for orchestrators, `/metrics` for Prometheus.

A deliberately tiny HTTP/1.1 responder on asyncio streams: one request per
connection, GET only, so a health probe costs no framework.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger("sqlx.http")

# A handler answers a status and a JSON object, or a str sent as Prometheus text.
Handler = Callable[[], Awaitable[tuple[int, dict[str, object] | str]]]
_PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"

_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


class HttpServer:
    def __init__(self, routes: dict[str, Handler]) -> None:
        self.routes = routes
        self._server: asyncio.AbstractServer | None = None

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(self._handle, host, port, reuse_address=True)
        return self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                request = await reader.readuntil(b"\r\n\r\n")
            method, path, *_ = request.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            handler = self.routes.get(path.split("?", 1)[0])
            if handler is None:
                status, payload = 404, {"error": f"no route {path}"}
            elif method not in ("GET", "HEAD"):
                status, payload = 405, {"error": "GET only"}
            else:
                status, payload = await handler()
            if isinstance(payload, str):
                body, content_type = payload.encode(), _PROMETHEUS
            else:
                body, content_type = json.dumps(payload).encode() + b"\n", "application/json"
            head = (
                f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\n"
                f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n"
            ).encode()
            writer.write(head + (b"" if method == "HEAD" else body))
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ValueError, ConnectionError):
            pass
        finally:
            writer.close()
