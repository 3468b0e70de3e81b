"""What policy knows of a session and of the upstream catalog: values, no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple


class Who(NamedTuple):
    """What a policy may know about a session (fixed at authentication). A named
    tuple: it is part of every decision-cache key, and hashes in C."""

    user: str
    database: str
    application: str = ""
    client_addr: str = ""


@dataclass(frozen=True)
class Catalog:
    """What the proxy knows of the upstream schema (read by `agents.catalog`)."""

    columns: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # schema.table -> cols
    comment_tags: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    builtin_functions: frozenset[str] = frozenset()  # names in pg_catalog
    # Names of functions and operators defined outside pg_catalog: one that shares a
    # built-in's name may be what an unqualified call resolves to.
    user_functions: frozenset[str] = frozenset()
    user_operators: frozenset[str] = frozenset()
    views: Mapping[str, str] = field(default_factory=dict)  # schema.view -> its SELECT
    # An inheritance or partition tree's tables share their tags: a partition holds
    # the parent's rows, and the parent shows its children's.
    families: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    version: int = 0

    @property
    def known(self) -> bool:
        return bool(self.columns or self.builtin_functions)
