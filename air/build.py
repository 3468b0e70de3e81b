"""Building graphs bottom-up: structurally identical subtrees become one node."""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType
from typing import Any

from sqlx.air.model import (
    AIRContext,
    AIRGraph,
    AIRNode,
    Scalar,
    _freeze,
    node_id,
)


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


class GraphBuilder:
    """Collects nodes bottom-up, then builds the graph of one root.

    `add` is for any caller; `add_frozen` for a lowerer whose
    attributes are already frozen (the hot path). Nodes that end up outside
    the root's graph are dropped by `build` once any caller used `add`.
    """

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect
        self.nodes: dict[str, AIRNode] = {}
        self._may_orphan = False

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
        lineage: tuple[str, ...] = (),
    ) -> str:
        self._may_orphan = True
        frozen = tuple((k, _freeze(v)) for k, v in attrs)
        kids, kid_roles = tuple(children), tuple(roles)
        nid = node_id(type_, kind, value, alias, frozen, (), kids, kid_roles, self.dialect)
        if nid not in self.nodes:
            self.nodes[nid] = AIRNode(nid, type_, kind, kids, value, alias, (), span, lineage,
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
        memo: bool = True,
    ) -> str:
        """`add` for attributes that are already scalars or tuples (the hot path).

        `memo=False` is for a node whose caller keeps its own memo (`add_known`)
        or whose content is unlikely to recur: no memo entry is made for it.
        """
        # Hashing a node's repr costs microseconds; a tuple lookup a fifth of that. The
        # value's class is part of the key because 1 == 1.0 == True in Python; attribute
        # values need no such care, as a field of a parser class always has one type.
        if memo:
            key = (type_, kind, value, value.__class__, alias, attrs, children, roles,
                   self.dialect)  # fmt: skip
            nid = _IDS.get(key)
            if nid is None:
                nid = node_id(type_, kind, value, alias, attrs, (), children, roles, self.dialect)
                if len(_IDS) >= _IDS_MAX:
                    _IDS.clear()
                _IDS[key] = nid
        else:
            nid = node_id(type_, kind, value, alias, attrs, (), children, roles, self.dialect,
                          memo=False)  # fmt: skip
        nodes = self.nodes
        if nid not in nodes:
            fields = (nid, type_, kind, children, value, alias, (), span, (), roles, attrs,
                      self.dialect)  # fmt: skip
            nodes[nid] = _new_node(AIRNode, fields)
        return nid

    def add_known(self, node: AIRNode) -> str:
        """Add again a node of an earlier graph of this dialect (its children already added)."""
        if node.id not in self.nodes:
            self.nodes[node.id] = node
        return node.id

    def build(
        self, root: str, *, source: str = "", engine: str | None = None,
        trace_id: str | None = None,
    ) -> AIRGraph:  # fmt: skip
        """The graph under `root`."""
        nodes = self._reachable(root) if self._may_orphan else self.nodes
        context = AIRContext(self.dialect, engine)
        return AIRGraph(root, MappingProxyType(nodes), context, source, trace_id)

    def _reachable(self, root: str) -> dict[str, AIRNode]:
        reachable: dict[str, AIRNode] = {}
        stack = [root]
        while stack:
            nid = stack.pop()
            if nid not in reachable:
                node = reachable[nid] = self.nodes[nid]
                stack.extend(node.children)
        return reachable
