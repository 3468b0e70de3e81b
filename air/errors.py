"""Errors of AIR: invalid SQL, and SQL a target dialect cannot express."""

from __future__ import annotations


class LoweringError(ValueError):
    """The SQL is not valid in its dialect; carries the parser's message and position."""

    def __init__(self, message: str, position: int | None, dialect: str) -> None:
        where = f" at position {position}" if position is not None else ""
        super().__init__(f"{dialect}: {message}{where}")
        self.message, self.position, self.dialect = message, position, dialect


class EmissionError(ValueError):
    """The graph cannot be written in the target dialect without changing its meaning."""

    def __init__(self, message: str, dialect: str) -> None:
        super().__init__(f"{dialect}: {message}")
        self.message, self.dialect = message, dialect
