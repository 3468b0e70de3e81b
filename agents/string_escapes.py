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

from sqlx.agents.policy import Finding, combine
from sqlx.air.model import AIRGraph
from sqlx.proxy.decision import Outcome, Statement

_PENDING = "escapes.pending"  # the statement that may change the setting, until answered
_SETTING = "standard_conforming_strings"
REASON = (
    "standard_conforming_strings is off (or may be) for this session: the server could "
    "read a backslash in a string differently from the proxy; write the statement "
    "without backslashes, or keep standard_conforming_strings on"
)
REFUSED = combine([Finding("fail-closed", "deny", reason=REASON)])


def may_change(graphs: list[AIRGraph]) -> bool:
    """Whether the statements may turn standard_conforming_strings off."""
    for graph in graphs:
        root = graph.root_node
        pg = root.attr("@pg")
        if pg == "VariableSetStmt" and (
                root.attr("kind") == "VAR_RESET_ALL" or root.attr("name") == _SETTING):  # fmt: skip
            return True
        if pg == "DiscardStmt" and root.attr("target") == "DISCARD_ALL":
            return True
        for node in graph.walk():
            if node.type == "function" and str(node.value or "").lower().endswith("set_config"):
                return True
    return False


def misread(statement: Statement) -> bool:
    """The statement has a backslash and the server may read it as an escape."""
    return "\\" in statement.sql and (statement.escapes or _PENDING in statement.facts.state)


def deciding(statement: Statement) -> None:
    statement.facts.state[_PENDING] = statement


def settle(outcome: Outcome) -> None:
    """Once the server has answered the pending statement, its ParameterStatus (if the
    setting changed) came before: `Statement.escapes` is right again."""
    if not outcome.statements:
        return
    state = outcome.statements[0].facts.state
    pending = state.get(_PENDING)
    if pending is not None and any(st is pending for st in outcome.statements):
        del state[_PENDING]
