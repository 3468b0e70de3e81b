"""Building graphs bottom-up: structurally identical subtrees become one node."""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType
from typing import Any

from sqlx.air.model import AIRContext, AIRGraph, AIRNode, Scalar, _freeze, node_id


def add_members(
    key: str,
    items: list[Any] | tuple[Any, ...],
    lower: Callable[[Any], str],
    children: list[str],
    roles: list[str],
    attrs: list[tuple[str, Any]],
) -> None:
    """A list-valued field: one child per member with role `key[]`; an empty list is kept."""
    if not items:
        attrs.append((key, ()))
    for item in items:
        children.append(lower(item))
        roles.append(key + "[]")


# Node content → id, across statements: the same columns, tables and operators
# recur from one statement to the next. Bounded: cleared when full.
_IDS: dict[tuple[Any, ...], str] = {}
_IDS_MAX = 200_000


# Building a node straight from a tuple skips the named tuple's Python-level __new__.
_new_node = tuple.__new__
_LINEAGE = AIRNode._fields.index("lineage")


class GraphBuilder:
    """Collects nodes bottom-up, then builds the graph of one root.

    Two ways in: `add` for any caller, and `add_frozen` for a lowerer whose
    every node lies under the root it ends with (the hot path: such a node
    is built once, at `build`, with its parents already known).
    """

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect
        self.nodes: dict[str, AIRNode] = {}
        self._pending: dict[str, tuple[Any, ...]] = {}
        self._parents: dict[str, list[str]] = {}

    def add(
        self,
        type_: str,
        kind: str,
        *,
        value: Scalar = None,
        alias: str | None = None,
        attrs: list[tuple[str, Any]] | tuple[tuple[str, Any], ...] = (),
        children: list[str] | tuple[str, ...] = (),
        roles: list[str] | tuple[str, ...] = (),
        span: tuple[int, int] | None = None,
    ) -> str:
        frozen = tuple((k, _freeze(v)) for k, v in attrs)
        kids, kid_roles = tuple(children), tuple(roles)
        nid = node_id(type_, kind, value, alias, frozen, (), kids, kid_roles, self.dialect)
        if nid not in self.nodes:
            self.nodes[nid] = AIRNode(nid, type_, kind, kids, value, alias, (), span, (),
                                      kid_roles, frozen, self.dialect)  # fmt: skip
        return nid

    def add_frozen(
        self,
        type_: str,
        kind: str,
        value: Scalar,
        alias: str | None,
        attrs: tuple[tuple[str, Any], ...],
        children: tuple[str, ...],
        roles: tuple[str, ...],
        span: tuple[int, int] | None,
    ) -> str:
        """`add` for attributes that are already scalars or tuples, every node under the root."""
        # Hashing a node's repr costs microseconds; a tuple lookup a fifth of that. The
        # value's class is part of the key because 1 == 1.0 == True in Python; attribute
        # values need no such care, as a field of a parser class always has one type.
        key = (type_, kind, value, value.__class__, alias, attrs, children, roles, self.dialect)
        nid = _IDS.get(key)
        if nid is None:
            nid = node_id(type_, kind, value, alias, attrs, (), children, roles, self.dialect)
            if len(_IDS) >= _IDS_MAX:
                _IDS.clear()
            _IDS[key] = nid
        if nid not in self._pending:
            self._pending[nid] = (type_, kind, children, value, alias, span, roles, attrs)
            parents = self._parents
            for child in children:
                seen = parents.get(child)
                if seen is None:
                    parents[child] = [nid]
                elif seen[-1] != nid:  # a child twice in one parent is one parent
                    seen.append(nid)
        return nid

    def entry(self, nid: str) -> tuple[str, tuple[Any, ...]]:
        """A node added by `add_frozen`, in the form `add_known` takes back."""
        return nid, self._pending[nid]

    def add_known(self, entry: tuple[str, tuple[Any, ...]]) -> str:
        """Add again a childless node `entry` gave for any builder of this dialect."""
        nid, fields = entry
        if nid not in self._pending:
            self._pending[nid] = fields
        return nid

    def build(
        self, root: str, *, source: str = "", engine: str | None = None,
        trace_id: str | None = None,
    ) -> AIRGraph:  # fmt: skip
        """The graph under `root`, each node given its parents (lineage)."""
        nodes = self._built_pending() if self._pending else self._reachable(root)
        context = AIRContext(self.dialect, engine)
        return AIRGraph(root, MappingProxyType(nodes), context, source, trace_id)

    def _built_pending(self) -> dict[str, AIRNode]:
        nodes = {}
        parents = self._parents
        dialect = self.dialect
        for nid, (type_, kind, children, value, alias, span, roles, attrs) in self._pending.items():
            up = parents.get(nid)
            lineage = () if up is None else tuple(up) if len(up) == 1 else tuple(sorted(set(up)))
            fields = (nid, type_, kind, children, value, alias, (), span, lineage, roles, attrs,
                      dialect)  # fmt: skip
            nodes[nid] = _new_node(AIRNode, fields)
        return nodes

    def _reachable(self, root: str) -> dict[str, AIRNode]:
        reachable: dict[str, AIRNode] = {}
        stack = [root]
        while stack:
            nid = stack.pop()
            if nid not in reachable:
                node = reachable[nid] = self.nodes[nid]
                stack.extend(node.children)
        parents: dict[str, list[str]] = {}
        for nid, node in reachable.items():
            for child in node.children:
                seen = parents.get(child)
                if seen is None:
                    parents[child] = [nid]
                elif seen[-1] != nid:
                    seen.append(nid)
        nodes = {}
        for nid, node in reachable.items():
            up = parents.get(nid)
            if up is None:
                nodes[nid] = node
            else:
                if len(up) > 1:
                    up = sorted(set(up))
                fields = (*node[:_LINEAGE], tuple(up), *node[_LINEAGE + 1 :])
                nodes[nid] = _new_node(AIRNode, fields)
        return nodes
