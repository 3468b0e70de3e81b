"""Building graphs bottom-up: structurally identical subtrees become one node."""

from __future__ import annotations

from collections import defaultdict
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


class GraphBuilder:
    def __init__(self, dialect: str) -> None:
        self.dialect = dialect
        self.nodes: dict[str, AIRNode] = {}

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

    @staticmethod
    def _with_lineage(node: AIRNode, lineage: tuple[str, ...]) -> AIRNode:
        # The dataclass constructor, not dataclasses.replace: replace is ~10x slower.
        n = node
        return AIRNode(n.id, n.type, n.kind, n.children, n.value, n.alias, n.tags, n.span,
                       lineage, n.roles, n.attrs, n.dialect)  # fmt: skip

    def build(
        self, root: str, *, source: str = "", engine: str | None = None,
        trace_id: str | None = None,
    ) -> AIRGraph:  # fmt: skip
        parents: dict[str, set[str]] = defaultdict(set)
        reachable: dict[str, AIRNode] = {}
        stack = [root]
        while stack:
            nid = stack.pop()
            if nid in reachable:
                continue
            node = self.nodes[nid]
            reachable[nid] = node
            for child in node.children:
                parents[child].add(nid)
                stack.append(child)
        nodes = {
            nid: self._with_lineage(node, tuple(sorted(parents[nid]))) if parents[nid] else node
            for nid, node in reachable.items()
        }
        context = AIRContext(self.dialect, engine)
        return AIRGraph(root, MappingProxyType(nodes), context, source, trace_id)
