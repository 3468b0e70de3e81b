"""Errors of the proxy layer that know what goes on the wire.

Each carries the SQLSTATE the client is sent and whether the client
connection ends with it. Codec violations live in `pg.codec`
(`ProtocolViolation`, 08P01); these are the session and upstream failures.
"""

from __future__ import annotations


class ProxyError(Exception):
    sqlstate = "XX000"
    fatal = True


class UpstreamUnavailable(ProxyError):
    """The server could not be reached or refused the connection before startup."""

    sqlstate = "08001"  # sqlclient_unable_to_establish_sqlconnection


class UpstreamLost(ProxyError):
    """The server connection broke during the session."""

    sqlstate = "08006"  # connection_failure


class ShuttingDown(ProxyError):
    sqlstate = "57P01"  # admin_shutdown


class TooManyConnections(ProxyError):
    sqlstate = "53300"
