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

The state lives in `SessionFacts.state` and dies with the session; which
statements change it is `agents.session_settings`'s to say.
"""

from __future__ import annotations

from sqlx.agents import session_settings as settings
from sqlx.agents.facts import Catalog, parse_search_path
from sqlx.agents.session_settings import DEFAULT, UNKNOWN
from sqlx.proxy.decision import Outcome, SessionFacts, Statement

# What a statement does to the path: nothing (None), back to the default, unknown from
# now on, or a new path.
Change = tuple[str, ...] | str | None

_STATE = "search_path"  # absent: the default; None: unknown; a tuple: that path
PURPOSE = "search_path"  # what a path change's answer settles (`session_settings.expect`)


def from_startup(startup: tuple[tuple[str, str], ...], user: str) -> Change:
    """The path a startup packet sets (`search_path`, or `-c`/`--` in `options`)."""
    found: Change = None
    for name, value in startup:
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


def forget(facts: SessionFacts) -> None:
    """The path may have changed in a way nobody followed: unknown from now on."""
    facts.state[_STATE] = None


def change_of(changes: list[settings.Change], statements: int) -> Change:
    """What a string of `statements` statements with these setting changes does to the
    search path."""
    found = settings.touching(changes, "search_path")
    if not found:
        return None
    if statements > 1 or len(found) > 1:
        return UNKNOWN
    value = found[0].value
    return tuple(v.lower() for v in value) if isinstance(value, tuple) else value


def deciding(statement: Statement, change: Change) -> None:
    """A statement that changes the path is about to run: unknown until it is done."""
    state = statement.facts.state
    before = state.get(_STATE, DEFAULT)
    if settings.expect(statement, PURPOSE, (before, change)):
        # Another change is still running: nothing certain to go back to.
        settings.expect(statement, PURPOSE, (None, change))
    state[_STATE] = None


def settle(outcome: Outcome, payload: object) -> None:
    """The server answered the path change `payload` = (state before it, the change)."""
    before, change = payload  # type: ignore[misc]
    if outcome.error_sqlstate is not None:
        after = before  # it did not happen
    elif outcome.in_transaction or change == UNKNOWN:
        after = None  # a ROLLBACK may still undo it, or it cannot be followed
    else:
        after = change
    state = outcome.statements[0].facts.state
    if after == DEFAULT:
        state.pop(_STATE, None)
    else:
        state[_STATE] = after
