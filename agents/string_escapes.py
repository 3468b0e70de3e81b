"""Whether the server reads a statement's strings as the proxy's parser does.

The proxy parses with `standard_conforming_strings` on, as PostgreSQL has
defaulted to since 9.1: a backslash in `'...'` is an ordinary character. A
session that turns it off makes the server read `\\'` as a quote inside the
string, so `SELECT 'x\\' --', secret FROM t` is one harmless literal to the
proxy and a read of `secret` to the server.

So, for sessions a rule guards, a statement containing a backslash is refused
(fail closed) while the server reads backslashes as escapes — the session
reports it with ParameterStatus (`Statement.escapes`) — and from the moment a
statement that may turn it off (`SET` or `RESET` of the setting, `RESET
ALL`, `DISCARD ALL`, `set_config`) is decided until the server has answered
it. Strings written `E'...'` read the same either way but are refused with
the rest: telling them apart needs the very lexing that is in doubt.
"""

from __future__ import annotations

import re

from sqlx.agents import session_settings as settings
from sqlx.agents.policy import Finding, combine
from sqlx.proxy.decision import Statement

PURPOSE = "escapes"  # a statement that may change the setting, until answered
_SETTING = "standard_conforming_strings"
REASON = (
    "standard_conforming_strings is off (or may be) for this session: the server could "
    "read a backslash in a string differently from the proxy; write the statement "
    "without backslashes, or keep standard_conforming_strings on"
)
REFUSED = combine([Finding("fail-closed", "deny", reason=REASON)])


def may_change(changes: list[settings.Change]) -> bool:
    """Whether these setting changes may turn standard_conforming_strings off."""
    return bool(settings.touching(changes, _SETTING))


def misread(statement: Statement) -> bool:
    """The statement has a backslash and the server may read it as an escape: the
    session reports the setting off, or a statement that may turn it off is not yet
    answered (once it is, its ParameterStatus came first: `Statement.escapes` is right
    again)."""
    return "\\" in statement.sql and (
        statement.escapes or settings.is_waiting(statement.facts, PURPOSE)
    )


def deciding(statement: Statement) -> None:
    settings.expect(statement, PURPOSE)


# MySQL is the other way round: the server reads `\` in strings as an escape, and so does
# the proxy's MySQL parser, unless sql_mode has NO_BACKSLASH_ESCAPES — which the server
# reports in every OK and EOF (`Statement.escapes` False). A client sends one command at
# a time, so that report is current; only a change of sql_mode in the same string is not.
_SQL_MODE = re.compile(r"sql_mode", re.IGNORECASE)
MYSQL_REASON = (
    "sql_mode has NO_BACKSLASH_ESCAPES (or may change in this string): the server could "
    "read a backslash in a string differently from the proxy; write the statement "
    "without backslashes"
)
MYSQL_REFUSED = combine([Finding("fail-closed", "deny", reason=MYSQL_REASON)])


def mysql_misread(statement: Statement) -> bool:
    """A MySQL statement has a backslash and the server may not read it as an escape."""
    return "\\" in statement.sql and (
        not statement.escapes or _SQL_MODE.search(statement.sql) is not None
    )
