"""The AIR data model (spec §3, §5, §8): nodes, the graph, context, capabilities, trace.

Values only: frozen, hashable where they can be, no I/O. A graph is a DAG in
which structurally identical subtrees are one node, because a node's id is a
hash of its content (type, kind, value, alias, attributes, tags and its
children's ids). JSON follows spec §8: `{"version", "root", "nodes"}`, with
the spec's node fields plus three documented extensions every node may carry:

- `roles`: the role of each child in its parent, parallel to `children`
  (`"where"`, `"targetList[]"`; a trailing `[]` marks a list member);
- `attrs`: the scalar properties needed to re-emit the node exactly (the
  origin parser's class under `"@pg"` or `"@sg"`, flags such as
  `case_insensitive`);
- `dialect`: the dialect the node was lowered from.

`lineage` (spec §5) is provenance: the ids of the nodes a node was derived
from by a transformation (a tagged copy names its untagged source); a node
lowered straight from source has none. A node's parents are not stored in
it (they would double every edge): `AIRGraph.parents(id)` gives them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, NamedTuple

AIR_VERSION = "4.0"

NodeType = Literal["statement", "clause", "expr", "literal", "function", "identifier"]
NODE_TYPES: tuple[str, ...] = ("statement", "clause", "expr", "literal", "function", "identifier")
_ID_PREFIX = {"statement": "stmt", "clause": "clause", "expr": "expr", "literal": "lit",
              "function": "fn", "identifier": "ident"}  # fmt: skip

Scalar = str | int | float | bool | None


def _freeze(value: Any) -> Any:
    """Lists become tuples so attributes hash and compare by value."""
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


class AIRNode(NamedTuple):
    """One node of an AIR graph (spec §5).

    A named tuple rather than a frozen dataclass: a graph of hundreds of nodes
    is built per statement on the proxy's hot path, and a tuple is built and
    read several times faster while being just as immutable.
    """

    id: str
    type: str
    kind: str
    children: tuple[str, ...] = ()
    value: Scalar = None
    alias: str | None = None
    tags: tuple[tuple[str, str], ...] = ()
    span: tuple[int, int] | None = None
    lineage: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    attrs: tuple[tuple[str, Any], ...] = ()
    dialect: str | None = None

    def attr(self, name: str, default: Any = None) -> Any:
        for key, value in self.attrs:
            if key == name:
                return value
        return default

    @property
    def tag_map(self) -> dict[str, str]:
        return dict(self.tags)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "type": self.type, "kind": self.kind}
        if self.children:
            out["children"] = list(self.children)
            out["roles"] = list(self.roles)
        if self.value is not None:
            out["value"] = self.value
        if self.alias is not None:
            out["alias"] = self.alias
        if self.tags:
            out["tags"] = dict(self.tags)
        if self.span is not None:
            out["span"] = {"start": self.span[0], "end": self.span[1]}
        if self.lineage:
            out["lineage"] = list(self.lineage)
        if self.attrs:
            out["attrs"] = {k: _thaw(v) for k, v in self.attrs}
        if self.dialect is not None:
            out["dialect"] = self.dialect
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AIRNode:
        span = data.get("span")
        return cls(
            id=data["id"],
            type=data["type"],
            kind=data["kind"],
            children=tuple(data.get("children", ())),
            value=data.get("value"),
            alias=data.get("alias"),
            tags=tuple(sorted(data.get("tags", {}).items())),
            span=(span["start"], span["end"]) if span else None,
            lineage=tuple(data.get("lineage", ())),
            roles=tuple(data.get("roles", ())),
            attrs=tuple((k, _freeze(v)) for k, v in data.get("attrs", {}).items()),
            dialect=data.get("dialect"),
        )


@dataclass(frozen=True, slots=True)
class AIRCaps:
    """What a dialect can express (spec §3), used by emission and the plan's cost model."""

    dialect: str
    limit_form: str  # "limit", "top", "fetch"
    ilike: bool
    json_operators: bool
    returning: bool
    upsert: str | None  # "on_conflict", "on_duplicate_key", "merge", None
    window_functions: bool = True
    cte: bool = True
    max_identifier_length: int = 63


CAPS: Mapping[str, AIRCaps] = MappingProxyType({
    "postgres": AIRCaps("postgres", "limit", True, True, True, "on_conflict"),
    "mysql": AIRCaps("mysql", "limit", False, True, False, "on_duplicate_key", True, True, 64),
    "sqlite": AIRCaps("sqlite", "limit", False, True, True, "on_conflict", True, True, 1024),
    "tsql": AIRCaps("tsql", "top", False, False, False, "merge", True, True, 128),
    "oracle": AIRCaps("oracle", "fetch", False, False, False, "merge", True, True, 128),
    "snowflake": AIRCaps("snowflake", "limit", True, False, False, "merge", True, True, 255),
})  # fmt: skip


@dataclass(frozen=True, slots=True)
class AIRContext:
    """Dialect, engine and capabilities a graph was lowered under (spec §3)."""

    dialect: str
    engine: str | None = None

    @property
    def caps(self) -> AIRCaps | None:
        return CAPS.get(self.dialect)


@dataclass(frozen=True, slots=True)
class AIRTrace:
    """Links nodes to their source spans and to an observability trace id (spec §3)."""

    trace_id: str | None
    spans: Mapping[str, tuple[int, int]]


@dataclass(frozen=True, eq=False)
class AIRGraph:
    """A lowered statement: a DAG of nodes under one root (spec §3, §8)."""

    root: str
    nodes: Mapping[str, AIRNode]
    context: AIRContext
    source: str = ""
    trace_id: str | None = None
    _cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AIRGraph):
            return NotImplemented
        return (self.root, dict(self.nodes), self.context) == (
            other.root,
            dict(other.nodes),
            other.context,
        )

    def __hash__(self) -> int:
        return self.hash64

    def __getitem__(self, node_id: str) -> AIRNode:
        return self.nodes[node_id]

    @property
    def root_node(self) -> AIRNode:
        return self.nodes[self.root]

    @property
    def dialect(self) -> str:
        return self.context.dialect

    @property
    def kind(self) -> str:
        """The statement kind of the root (SELECT, INSERT, OPAQUE, ...)."""
        return self.root_node.kind

    def children(self, node: AIRNode) -> Iterator[tuple[str, AIRNode]]:
        for role, child in zip(node.roles, node.children, strict=True):
            yield role, self.nodes[child]

    def parents(self, node_id: str) -> tuple[str, ...]:
        """The ids of the nodes that have `node_id` as a child, sorted."""
        table = self._cache.get("parents")
        if table is None:
            found: dict[str, set[str]] = {}
            for nid, node in self.nodes.items():
                for child in node.children:
                    found.setdefault(child, set()).add(nid)
            table = self._cache["parents"] = {k: tuple(sorted(v)) for k, v in found.items()}
        return table.get(node_id, ())

    def walk(self, start: str | None = None, literal_parts: bool = True) -> Iterator[AIRNode]:
        """Every node reachable from `start` (default root), each once, parents first.

        `literal_parts=False` does not descend into a literal (its parser parts).
        """
        nodes = self.nodes
        seen: set[str] = set()
        stack = [start or self.root]
        while stack:
            node_id = stack.pop()
            if node_id in seen:
                continue
            seen.add(node_id)
            node = nodes[node_id]
            yield node
            if literal_parts or node.type != "literal":
                stack.extend(reversed(node.children))

    @property
    def trace(self) -> AIRTrace:
        spans = {n.id: n.span for n in self.nodes.values() if n.span is not None}
        return AIRTrace(self.trace_id, MappingProxyType(spans))

    # --- identity --------------------------------------------------------------

    @property
    def hash64(self) -> int:
        """A stable 64-bit hash of the canonical form (ids are content hashes)."""
        if "hash64" not in self._cache:
            digest = hashlib.blake2b(self.root.encode(), digest_size=8).digest()
            self._cache["hash64"] = int.from_bytes(digest, "big")
        return self._cache["hash64"]

    # --- serialisation -----------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """Spec §8 layout; nodes in a deterministic order, root first."""
        return {
            "version": AIR_VERSION,
            "root": self.root,
            "nodes": [node.to_json() for node in self.walk()],
        }

    def dumps(self, indent: int | None = None) -> str:
        return json.dumps(self.to_json(), indent=indent, ensure_ascii=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | str) -> AIRGraph:
        if isinstance(data, str):
            data = json.loads(data)
        if data.get("version") != AIR_VERSION:
            raise ValueError(f"unsupported AIR version {data.get('version')!r}")
        nodes = {n["id"]: AIRNode.from_json(n) for n in data["nodes"]}
        root = nodes[data["root"]]
        context = AIRContext(root.dialect or "postgres", root.attr("engine"))
        return cls(data["root"], MappingProxyType(nodes), context)


# A node's own content (all but its children) → its repr, across statements:
# the repr of nested tuples is the costly part of an id, and most nodes of a
# new statement differ from known ones only below them. Bounded: cleared when
# full. The value's class is in the key because 1 == 1.0 == True in Python.
_CONTENT_REPR: dict[tuple[Any, ...], str] = {}
_CONTENT_REPR_MAX = 100_000


def node_id(
    type_: str,
    kind: str,
    value: Scalar,
    alias: str | None,
    attrs: tuple[tuple[str, Any], ...],
    tags: tuple[tuple[str, str], ...],
    children: tuple[str, ...],
    roles: tuple[str, ...],
    dialect: str | None,
    memo: bool = True,
) -> str:
    """A node's id: its type and kind, and a hash of its whole content.

    Deterministic in any process (no PYTHONHASHSEED dependence): repr of
    tuples of str/int/float/bool/None is stable, and children are joined by
    NUL, which no id contains. `memo=False` skips the memo, for content
    unlikely to recur.
    """
    if memo:
        key = (type_, kind, value, value.__class__, alias, attrs, tags, roles, dialect)
        own = _CONTENT_REPR.get(key)
        if own is None:
            own = repr((type_, kind, value, alias, attrs, tags, roles, dialect, len(children)))
            if len(_CONTENT_REPR) >= _CONTENT_REPR_MAX:
                _CONTENT_REPR.clear()
            _CONTENT_REPR[key] = own
    else:
        own = repr((type_, kind, value, alias, attrs, tags, roles, dialect, len(children)))
    content = own + "\x00" + "\x00".join(children) if children else own
    digest = hashlib.blake2b(content.encode("utf-8"), digest_size=8).hexdigest()
    return f"air:{_ID_PREFIX[type_]}:{kind}-{digest}"
