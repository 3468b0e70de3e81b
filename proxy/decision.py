"""The per-statement decision hook: the one interface between the wire and the copilot.

A session asks `Decider.decide` before a statement reaches the server and
tells `Decider.observe` what happened after. A verdict is a value, never an
exception (STYLE.md §5). The default decider allows everything; the command
line wires in the copilot's implementation at start-up.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

# A sqlcommenter traceparent comment: /*traceparent='00-<trace>-<span>-<flags>'*/.
_TRACEPARENT = re.compile(
    r"traceparent\s*=\s*'([0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-([0-9a-f]{2}))'"
)


def traceparent_of(sql: str) -> tuple[str, str, bool] | None:
    """(traceparent, trace id, sampled) of a statement's sqlcommenter comment, if any."""
    found = _TRACEPARENT.search(sql) if "traceparent" in sql else None
    if found is None:
        return None
    return found.group(1), found.group(2), found.group(3).endswith("1")


class Verdict(enum.Enum):
    ALLOW = "allow"
    DENY = "deny"
    REWRITE = "rewrite"


class Path(enum.Enum):
    """Which protocol path carried the statement (the same SQL gets the same verdict)."""

    SIMPLE = "simple"
    EXTENDED = "extended"
    FUNCTION_CALL = "function_call"


@dataclass(frozen=True, slots=True)
class SessionFacts:
    """What a policy may know about the client: fixed at authentication."""

    user: str
    database: str
    application_name: str
    client_addr: str
    tls: bool
    # The startup packet's other parameters (`options`, GUCs such as `role`).
    settings: tuple[tuple[str, str], ...] = ()
    # What a decider keeps of the session between statements (the search path it
    # resolves names with): lives and dies with the session.
    state: dict[str, object] = field(default_factory=dict, compare=False, repr=False)


class Statement(NamedTuple):
    """One statement to decide. A FunctionCall message has no SQL text: its
    `sql` is empty and `function_oid` names the function. (A named tuple: one is
    made per statement, and a frozen dataclass costs three times as much.)"""

    sql: str
    path: Path
    facts: SessionFacts
    in_transaction: bool
    function_oid: int | None = None
    # The server reads backslashes in plain string literals as escapes
    # (standard_conforming_strings is off): its parser and the proxy's may then
    # disagree on where a string ends.
    escapes: bool = False
    dialect: str = "postgres"  # the SQL dialect of the text ("mysql" from the MySQL listener)


class Prepared(NamedTuple):
    """Run a simple Query as a server-side prepared statement (auto-prepare): the
    statement `text` with `$n` for the literals, parsed once per upstream connection as
    `name` with parameter `types`, then bound to this execution's `values`."""

    name: str
    text: str
    types: tuple[int, ...]
    values: tuple[str, ...]
    # Where each literal of the client's text is, and which literal each parameter is: a
    # parameter's input error then points at its literal, as the server's error would.
    spans: tuple[tuple[int, int], ...]
    params: tuple[int, ...]

    def position(self, number: int) -> int | None:
        """The 1-based character position of parameter $number's literal."""
        if 1 <= number <= len(self.params):
            return self.spans[self.params[number - 1]][0] + 1
        return None


class Decision(NamedTuple):
    """What to do with one statement. (A named tuple: an auto-prepared execution gets its
    own, and a frozen dataclass costs three times as much to make.)"""

    verdict: Verdict
    sql: str | None = None  # the replacement text, for REWRITE
    reason: str = ""
    sqlstate: str = "42501"  # insufficient_privilege, for DENY
    fingerprint: str | None = None
    score: float | None = None
    klass: str | None = None
    summary: str | None = None
    rule: str | None = None  # the policy rule that decided, if any
    trace_id: str | None = None  # an explained decision's trace: its span is always kept
    prepared: Prepared | None = None  # (allow) run as a prepared statement


ALLOW = Decision(Verdict.ALLOW)


class Outcome(NamedTuple):
    """What the server answered to one decided statement batch."""

    statements: tuple[Statement, ...]
    decision: Decision
    elapsed_s: float
    error_sqlstate: str | None
    rows: int | None = None  # from CommandComplete, when every statement is observed
    in_transaction: bool = False  # a transaction block is open after it


class Decider(Protocol):
    """`decide` runs inline, before the statement goes anywhere; `observe` after the
    server answered. A decider may also have `async prepare(facts) -> str | None`,
    awaited before the session is connected upstream: a string refuses the
    session (FATAL 42501 with that text); and `unpreparable(name, reason)`, told
    when a statement it asked to prepare cannot be (the server refused it, or it
    would answer differently)."""

    def decide(self, statement: Statement) -> Decision: ...

    def observe(self, outcome: Outcome) -> None: ...


class AllowAll:
    """The pass-through decider: every statement is forwarded unchanged."""

    def decide(self, statement: Statement) -> Decision:
        return ALLOW

    def observe(self, outcome: Outcome) -> None:
        return None
