"""Policy packs: the YAML a user writes to tag data and say who may do what with it.

A pack file has one top-level key, `policy`. Several packs merge into one
`Policy`: tags are united (a later pack's tag wins on the same key), rules
are concatenated in file order, and `fail_closed` holds if any pack sets it.
Validation happens at load: an unknown key, an unknown action or mask, a bad
CIDR is an error naming the file and the key path, and the old policy stays
in force.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

Action = Literal["allow", "deny", "mask", "filter", "audit"]
# Strongest first: when several rules match, the strongest action wins per column.
ACTION_STRENGTH: dict[str, int] = {"deny": 4, "mask": 3, "filter": 2, "audit": 1, "allow": 0}
MASKS = ("redact", "partial", "hash", "null")
# Statement kinds a rule may name (AIR statement kinds).
STATEMENT_KINDS = frozenset((
    "SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "COPY", "CREATE", "ALTER", "DROP",
    "TRUNCATE", "GRANT", "REVOKE", "CALL", "DO", "EXPLAIN", "PREPARE", "EXECUTE", "DECLARE",
    "FETCH", "SET", "SHOW", "TRANSACTION", "LOCK", "VACUUM", "COMMENT", "LISTEN", "NOTIFY",
    "UNION", "INTERSECT", "EXCEPT", "FUNCTION_CALL", "OPAQUE",
))  # fmt: skip
COMMENT_TAG_PREFIX = "sqlx:"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class When(_Strict):
    """Conditions of a rule; all given conditions must hold. Lists match any member."""

    users: tuple[str, ...] = ()
    except_users: tuple[str, ...] = ()
    databases: tuple[str, ...] = ()
    applications: tuple[str, ...] = ()
    clients: tuple[str, ...] = ()  # CIDRs
    statements: tuple[str, ...] = ()
    tables: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()  # table.column or schema.table.column
    tags: dict[str, str] = Field(default_factory=dict)
    has_where: bool | None = None
    has_limit: bool | None = None

    @field_validator("clients")
    @classmethod
    def _cidrs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError as exc:
                raise ValueError(f"not a CIDR: {cidr!r}") from exc
        return value

    @field_validator("statements")
    @classmethod
    def _kinds(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        upper = tuple(v.upper() for v in value)
        unknown = [v for v in upper if v not in STATEMENT_KINDS]
        if unknown:
            known = ", ".join(sorted(STATEMENT_KINDS))
            raise ValueError(f"unknown statement kind(s) {unknown}; known: {known}")
        return upper

    @field_validator("columns")
    @classmethod
    def _qualified(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for col in value:
            if "." not in col:
                raise ValueError(f"a column is named table.column: {col!r}")
        return value

    @property
    def touches_data(self) -> bool:
        """Whether the rule names data (tables, columns, tags), not only who or what."""
        return bool(self.tables or self.columns or self.tags)


class Rule(_Strict):
    name: str
    when: When = When()
    action: Action
    mask: str | None = None  # redact | partial | hash | null | "sql:<expr using {col}>"
    predicate: str | None = None  # for filter: a SQL boolean expression on the table
    # A masked column used in WHERE, JOIN, GROUP BY or ORDER BY lets a client infer
    # its values; by default such a statement is denied.
    on_inference: Literal["deny", "allow"] = "deny"
    reason: str | None = None

    @model_validator(mode="after")
    def _action_fields(self) -> Rule:
        if self.action == "mask":
            mask = self.mask or "redact"
            if mask not in MASKS and not (mask.startswith("sql:") and "{col}" in mask):
                raise ValueError(f"mask must be one of {MASKS} or 'sql:<expr using {{col}}>'")
        elif self.mask is not None:
            raise ValueError("mask: is only for action: mask")
        if self.action == "filter" and not self.predicate:
            raise ValueError("action: filter needs predicate:")
        if self.action != "filter" and self.predicate is not None:
            raise ValueError("predicate: is only for action: filter")
        return self

    @property
    def mask_kind(self) -> str:
        return self.mask or "redact"


class Policy(_Strict):
    fail_closed: bool = True
    tags: dict[str, dict[str, str]] = Field(default_factory=dict)
    rules: tuple[Rule, ...] = ()
    # Functions a masked session may call although the proxy cannot see through them.
    allow_functions: tuple[str, ...] = ()
    # Read tags from column comments that start with this prefix ("sqlx: mask=true").
    comment_tag_prefix: str = COMMENT_TAG_PREFIX

    @model_validator(mode="after")
    def _unique_names(self) -> Policy:
        names = [r.name for r in self.rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"rule names must be unique: {dupes}")
        return self

    @property
    def empty(self) -> bool:
        return not self.rules


class _PackFile(_Strict):
    policy: Policy


class PolicyError(Exception):
    """A pack that cannot be used; the message names the file and the key path."""


def _describe(err: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in item['loc']) or '<root>'}: {item['msg']}"
        for item in err.errors()
    )


def load_pack(path: str | Path) -> Policy:
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read: {exc}") from exc
    except yaml.YAMLError as exc:
        raise PolicyError(f"{path}: not valid YAML: {exc}") from exc
    try:
        return _PackFile.model_validate(raw or {"policy": {}}).policy
    except ValidationError as exc:
        raise PolicyError(f"{path}: {_describe(exc)}") from exc


def merge(packs: list[Policy]) -> Policy:
    if not packs:
        return Policy(fail_closed=False)
    tags: dict[str, dict[str, str]] = {}
    for pack in packs:
        for key, value in pack.tags.items():
            tags[key] = {**tags.get(key, {}), **value}
    try:
        return Policy(
            fail_closed=any(p.fail_closed for p in packs),
            tags=tags,
            rules=tuple(r for p in packs for r in p.rules),
            allow_functions=tuple(f for p in packs for f in p.allow_functions),
            comment_tag_prefix=packs[0].comment_tag_prefix,
        )
    except ValidationError as exc:
        raise PolicyError(f"merging packs: {_describe(exc)}") from exc


def load_policy(paths: list[Path] | tuple[Path, ...]) -> Policy:
    """One policy from the pack files, in order; no files means no rules."""
    return merge([load_pack(p) for p in paths])
