"""Session settings a statement changes, and changes still waiting for the server.

`changes(graph)` says what one statement does to the session's settings:
`SET name = ...` (its value's words), `SET name TO DEFAULT` / `RESET name`
(back to the default), `RESET ALL` / `DISCARD ALL` (every setting to its
default), and what the proxy does not follow — `SET LOCAL`, `SET ... FROM
CURRENT`, any `set_config(...)` call (whose setting and value are data) —
as UNKNOWN. The decider computes them once per evaluated statement; the
search path and the reading of string escapes take what concerns them.

`expect` and `answered` keep, per session, which decided statement's answer
will settle something (a change is only known to have happened once the
server has run it).
"""

from __future__ import annotations

from typing import Final, NamedTuple

from sqlx.air.model import AIRGraph, AIRNode
from sqlx.proxy.decision import Outcome, SessionFacts, Statement

DEFAULT: Final = "default"
UNKNOWN: Final = "unknown"
_WAITING = "waiting"  # SessionFacts.state key: purpose -> (statement, payload)


class Change(NamedTuple):
    setting: str | None  # None: every setting (RESET ALL, DISCARD ALL, set_config)
    value: tuple[str, ...] | str  # the new value's words, DEFAULT or UNKNOWN


def is_set_config(node: AIRNode) -> bool:
    return node.type == "function" and str(node.value or "").lower().endswith("set_config")


def changes(graph: AIRGraph) -> list[Change]:
    """What one statement does to the session's settings."""
    root = graph.root_node
    pg = root.attr("@pg")
    out: list[Change] = []
    if pg == "VariableSetStmt":
        kind, local = root.attr("kind"), root.attr("is_local")
        name = None if kind == "VAR_RESET_ALL" else root.attr("name")
        if local or kind not in ("VAR_SET_VALUE", "VAR_SET_DEFAULT", "VAR_RESET", "VAR_RESET_ALL"):
            out.append(Change(name, UNKNOWN))
        elif kind == "VAR_SET_VALUE":
            words = tuple(str(kid.value) for role, kid in graph.children(root) if role == "args[]")
            out.append(Change(name, words))
        else:
            out.append(Change(name, DEFAULT))
    elif pg == "DiscardStmt" and root.attr("target") == "DISCARD_ALL":
        out.append(Change(None, DEFAULT))
    if any(is_set_config(node) for node in graph.walk()):
        out.append(Change(None, UNKNOWN))
    return out


def touching(found: list[Change], setting: str) -> list[Change]:
    """The changes that may set `setting`."""
    return [c for c in found if c.setting is None or c.setting == setting]


def expect(statement: Statement, purpose: str, payload: object = None) -> bool:
    """`statement`'s answer settles `purpose`; whether another statement was awaited."""
    waiting: dict[str, tuple[Statement, object]]
    waiting = statement.facts.state.setdefault(_WAITING, {})  # type: ignore[assignment]
    replaced = purpose in waiting
    waiting[purpose] = (statement, payload)
    return replaced


def is_waiting(facts: SessionFacts, purpose: str) -> bool:
    return purpose in facts.state.get(_WAITING, ())  # type: ignore[operator]


def answered(outcome: Outcome) -> list[tuple[str, object]]:
    """The purposes this outcome settles, with their payloads (no longer awaited)."""
    if not outcome.statements:
        return []
    waiting = outcome.statements[0].facts.state.get(_WAITING)
    if not waiting:
        return []
    assert isinstance(waiting, dict)
    done = [p for p, (st, _) in waiting.items() if any(s is st for s in outcome.statements)]
    return [(purpose, waiting.pop(purpose)[1]) for purpose in done]
