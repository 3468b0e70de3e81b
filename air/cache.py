"""A bounded cache of lowered graphs keyed by (dialect, exact text).

The hot path's first stop: a repeat of the same text costs a dict lookup, not
a parse. Invalid SQL is cached too (as its LoweringError), so a client that
repeats a bad statement does not make the proxy parse it again.
"""

from __future__ import annotations

from collections import OrderedDict

from sqlx.air.api import lower_all
from sqlx.air.errors import LoweringError
from sqlx.air.model import AIRGraph


class LoweringCache:
    def __init__(self, maxsize: int = 10_000) -> None:
        self.maxsize = maxsize
        self._entries: OrderedDict[tuple[str, str], list[AIRGraph] | LoweringError] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def lower_all(self, sql: str, dialect: str = "postgres") -> list[AIRGraph]:
        key = (dialect, sql)
        entry = self._entries.get(key)
        if entry is not None:
            self.hits += 1
            self._entries.move_to_end(key)
        else:
            self.misses += 1
            try:
                entry = lower_all(sql, dialect)
            except LoweringError as exc:
                entry = exc
            self._entries[key] = entry
            if len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)
        if isinstance(entry, LoweringError):
            raise entry
        return entry
