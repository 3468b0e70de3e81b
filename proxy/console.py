"""The admin console: `psql -p 6432 -U <admin> sqlx`, PgBouncer-style SHOW commands.

Only users listed in `admin.users` may connect; their password is checked by
the upstream server (the session authenticates against the upstream DSN's
database, then never sends it a statement). Commands, case-insensitive:

    SHOW STATS          totals since start: statements, denials, rewrites, errors
    SHOW CLIENTS        one row per client connection
    SHOW POLICIES       the rules in force
    SHOW FINGERPRINTS   query shapes by total time (calls, mean, max, errors) and what
                        the plan cache knows of each (strategy, plan, score, class)
    SHOW EXPLANATIONS   the latest explanation records
    RELOAD              read the config and policy packs again (as SIGHUP)
    SHOW HELP           this list
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlx.proxy.decision import SessionFacts
from sqlx.proxy.pg import codec

HELP = [
    ("SHOW STATS", "totals since start"),
    ("SHOW CLIENTS", "client connections"),
    ("SHOW POLICIES", "the rules in force"),
    ("SHOW FINGERPRINTS", "query shapes by total time"),
    ("SHOW EXPLANATIONS", "the latest explanation records"),
    ("RELOAD", "read the config and policy packs again"),
]


@dataclass
class Sources:
    """Where the console reads from; the command line fills it at start-up."""

    stats: Callable[[], Iterable[tuple[str, object]]] = lambda: ()
    clients: Callable[[], Iterable[tuple[object, ...]]] = lambda: ()
    policies: Callable[[], Iterable[tuple[object, ...]]] = lambda: ()
    fingerprints: Callable[[], Iterable[tuple[object, ...]]] = lambda: ()
    explanations: Callable[[], Iterable[tuple[object, ...]]] = lambda: ()
    reload: Callable[[], str] = lambda: "nothing to reload"
    started: float = field(default_factory=time.time)


class AdminConsole:
    def __init__(self, users: Iterable[str], auth_database: str, sources: Sources) -> None:
        self.users = frozenset(users)
        self.auth_database = auth_database
        self.sources = sources

    def answer(self, sql: str, facts: SessionFacts) -> bytes:
        command = " ".join(sql.strip().rstrip(";").split()).upper()
        src = self.sources
        if command == "SHOW STATS":
            rows = [("uptime_s", round(time.time() - src.started)), *src.stats()]
            return codec.encode_result(("name", "value"), rows, f"SHOW {len(rows)}")
        if command == "SHOW CLIENTS":
            return _table(("id", "user", "database", "application_name", "client_addr", "tls",
                           "tx_status", "upstream"), src.clients())  # fmt: skip
        if command == "SHOW POLICIES":
            return _table(("rule", "action", "when", "mask", "predicate"), src.policies())
        if command == "SHOW FINGERPRINTS":
            return _table(("fingerprint", "query", "calls", "total_ms", "mean_ms", "max_ms",
                           "errors", "prepared", "strategy", "plan_hash", "score", "class",
                           "model", "plan_cache"), src.fingerprints())  # fmt: skip
        if command == "SHOW EXPLANATIONS":
            return _table(("id", "time", "decision", "user", "database", "summary", "rule",
                           "reason"), src.explanations())  # fmt: skip
        if command == "RELOAD":
            result = src.reload()
            return codec.encode_result(("result",), [(result,)], "RELOAD")
        if command in ("SHOW HELP", "HELP", ""):
            return _table(("command", "what"), HELP)
        return codec.encode_error("42601", f"unknown admin command {sql.strip()[:80]!r}",
                                  detail="try SHOW HELP")  # fmt: skip


def _table(columns: tuple[str, ...], rows: Iterable[tuple[object, ...]]) -> bytes:
    listed = list(rows)
    return codec.encode_result(columns, listed, f"SHOW {len(listed)}")


def when_text(when: dict[str, Any]) -> str:
    """A rule's conditions, compact (only those set)."""
    return json.dumps({k: v for k, v in when.items() if v not in ((), [], {}, None)},
                      sort_keys=True, default=list)  # fmt: skip
