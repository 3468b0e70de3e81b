"""Each session's search path, as far as the proxy can know it.

Unqualified table names are resolved with it (`Catalog.resolve`), so that
`SELECT * FROM customers` is policed as the table the server will read. A
session starts with its startup packet's `search_path` (or `options=-c
search_path=...`), else the default of its role and database read with the
catalog. After that the proxy follows `SET search_path`, `RESET`, `RESET
ALL` and `DISCARD ALL`:

- a change is taken once the server reports it done *outside* a transaction
  block, where no ROLLBACK can undo it;
- from the moment such a statement is decided until then — and for good
  after `SET LOCAL`, `set_config(...)`, a change inside a transaction block,
  or one among other statements of a string — the path is *unknown*: an
  unqualified name then stands for every table of that name in any schema
  (the tags of all of them apply, and a rewrite that would have to pick one
  is refused). The next change the proxy can follow makes it known again.

The state lives in `SessionFacts.state` and dies with the session.
"""

from __future__ import annotations

from typing import Final

from sqlx.agents.facts import Catalog, parse_search_path
from sqlx.air.model import AIRGraph
from sqlx.proxy.decision import Outcome, SessionFacts, Statement

# What a statement does to the path: nothing (None), back to the default, unknown from
# now on, or a new path.
DEFAULT: Final = "default"
UNKNOWN: Final = "unknown"
Change = tuple[str, ...] | str | None

_STATE = "search_path"  # absent: the default; None: unknown; a tuple: that path
_PENDING = "search_path.pending"  # (statement, state before it, its change)


def from_startup(settings: tuple[tuple[str, str], ...], user: str) -> Change:
    """The path a startup packet sets (`search_path`, or `-c`/`--` in `options`)."""
    found: Change = None
    for name, value in settings:
        if name == "search_path":
            found = parse_search_path(value, user)
        elif name == "options" and "search" in value:
            for option in _option_words(value):
                key, sep, val = option.partition("=")
                if sep and key.replace("-", "_") == "search_path":
                    found = parse_search_path(val, user)
    return found


def _option_words(options: str) -> list[str]:
    """The `name=value` settings of an `options` string (words split on unescaped
    spaces, a backslash escaping the next character, as the server splits them)."""
    words, word, escaped = [], "", False
    for ch in options:
        if escaped:
            word, escaped = word + ch, False
        elif ch == "\\":
            escaped = True
        elif ch.isspace():
            if word:
                words.append(word)
            word = ""
        else:
            word += ch
    if word:
        words.append(word)
    out = []
    for i, w in enumerate(words):
        if w == "-c" and i + 1 < len(words):
            out.append(words[i + 1])
        elif (w.startswith("-c") and w != "-c") or w.startswith("--"):
            out.append(w[2:])
    return out


def start(facts: SessionFacts) -> None:
    """Set a new session's path from its startup packet."""
    found = from_startup(facts.settings, facts.user)
    if isinstance(found, tuple):
        facts.state[_STATE] = found


def current(facts: SessionFacts, catalog: Catalog) -> tuple[str, ...] | None:
    """The session's path now; None when it is not known."""
    state = facts.state
    if _STATE in state:
        return state[_STATE]  # type: ignore[no-any-return]
    return catalog.default_path(facts.user)


def change_of(graphs: list[AIRGraph]) -> Change:
    """What the statements of one string do to the search path."""
    changes = [c for g in graphs if (c := _graph_change(g)) is not None]
    if not changes:
        return None
    return changes[0] if len(graphs) == 1 else UNKNOWN


def _graph_change(graph: AIRGraph) -> Change:
    root = graph.root_node
    pg = root.attr("@pg")
    if pg == "VariableSetStmt":
        kind, name, local = root.attr("kind"), root.attr("name"), root.attr("is_local")
        if kind == "VAR_RESET_ALL":
            return UNKNOWN if local else DEFAULT
        if name == "search_path":
            if local or kind not in ("VAR_SET_VALUE", "VAR_SET_DEFAULT", "VAR_RESET"):
                return UNKNOWN
            if kind != "VAR_SET_VALUE":
                return DEFAULT
            return tuple(str(kid.value).lower() for role, kid in graph.children(root)
                         if role == "args[]")  # fmt: skip
    if pg == "DiscardStmt" and root.attr("target") == "DISCARD_ALL":
        return DEFAULT
    for node in graph.walk():
        if node.type == "function" and str(node.value or "").lower().endswith("set_config"):
            return UNKNOWN
    return None


def deciding(statement: Statement, change: Change) -> None:
    """A statement that changes the path is about to run: unknown until it is done."""
    state = statement.facts.state
    before = state.get(_STATE, DEFAULT)
    pending = state.get(_PENDING)
    if pending is not None:  # another change still running: nothing to go back to
        before = None
    state[_PENDING] = (statement, before, change)
    state[_STATE] = None


def settle(outcome: Outcome) -> None:
    """The outcome of a statement; if it is the pending path change, take it."""
    if not outcome.statements:
        return
    state = outcome.statements[0].facts.state
    pending = state.get(_PENDING)
    if pending is None or not any(st is pending[0] for st in outcome.statements):
        return
    del state[_PENDING]
    _statement, before, change = pending
    if outcome.error_sqlstate is not None:
        after = before  # it did not happen
    elif outcome.in_transaction or change == UNKNOWN:
        after = None  # a ROLLBACK may still undo it, or it cannot be followed
    else:
        after = change
    if after == DEFAULT:
        state.pop(_STATE, None)
    else:
        state[_STATE] = after
