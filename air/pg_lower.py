"""Lowering libpg_query's JSON parse tree to AIR nodes: one generated reader per class.

Every parse-tree node becomes one AIR node: the canonical type, kind and
value come from `kinds_pg`; the node's own fields ride along as attributes
(scalars, enum names) and role-named children, laid out as pglast lays them
out (`pg_tree.fields`), so emission can rebuild pglast's tree exactly.

The reader of a class is generated from its field table the first time the
class is met, as dataclasses and namedtuple generate their methods: a
generic loop over the table costs more per node than everything else in
lowering, and lowering sits on the proxy's hot path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlx.air import kinds_pg, pg_tree
from sqlx.air.build import GraphBuilder
from sqlx.air.model import AIRNode
from sqlx.air.pg_tree import CONST, ENUM, LIST, NODE, POSITION, SCALAR

LIMIT_ROLE = "@limit"
CONST_ATTR = "@val"  # A_Const's value node as (JSON field, class, value)
_LIMIT_FIELDS = frozenset(("limitCount", "limitOffset", "limitOption"))
_NULL_MEMBER = ("literal", "VALUE", None, None, (), (), (), None)

Reader = Callable[["Lowerer", dict[str, Any]], str]
_LEAVES_MAX = 50_000  # per class; cleared when full
_READERS: dict[str, Reader] = {}


class Lowerer:
    """Adds the nodes of one statement's tree to a builder; returns node ids."""

    def __init__(self, builder: GraphBuilder) -> None:
        self.add = builder.add_frozen
        self.known = builder.add_known
        self.nodes = builder.nodes

    def wrapped(self, node: dict[str, Any]) -> str:
        """A JSON node `{"Class": {...}}` (or a List, or {} for a NULL list member)."""
        if not node:
            return self.add(*_NULL_MEMBER)
        ((cls, body),) = node.items()
        if cls == "List":
            kids = tuple([self.wrapped(i) for i in body.get("items", ())])
            return self.add("expr", "LIST", None, None, (), kids, ("items[]",) * len(kids), None)
        return (_READERS.get(cls) or _compile(cls))(self, body)

    def node(self, cls: str, body: dict[str, Any]) -> str:
        """A JSON struct body whose class the field's type gives."""
        return (_READERS.get(cls) or _compile(cls))(self, body)

    def limit(self, body: dict[str, Any]) -> str:
        """Spec §6: LIMIT / FETCH FIRST / OFFSET become one LIMIT clause (count, offset)."""
        children, roles = [], []
        count = body.get("limitCount")
        offset = body.get("limitOffset")
        option = body.get("limitOption", "LIMIT_OPTION_DEFAULT")
        value = None
        if count is not None:
            children.append(self.wrapped(count))
            roles.append("count")
            value = kinds_pg.const_value(count)
        if offset is not None:
            children.append(self.wrapped(offset))
            roles.append("offset")
        attrs: tuple[tuple[str, Any], ...] = (("option", option),)
        if option == "LIMIT_OPTION_WITH_TIES":
            attrs += (("with_ties", True),)
        return self.add("clause", "LIMIT", value, None, attrs, tuple(children), tuple(roles),
                        None)  # fmt: skip


def clear_leaves() -> None:
    _CONSTS.clear()
    for reader in _READERS.values():
        leaves = reader.__globals__.get("leaves")
        if leaves is not None:
            leaves.clear()


_CONSTS: dict[tuple[Any, ...], AIRNode] = {}


def _read_a_const(self: Lowerer, body: dict[str, Any]) -> str:
    """A constant: one literal node, remembered by value (pglast's A_Const has no position).

    The parser's value node (Integer, String ...) is the attribute `@val`
    (class, field, text), not a child: it says nothing the literal does not.
    """
    isnull = body.get("isnull", False)
    found = None if isnull else pg_tree.const(body)
    key = (isnull, found, found[2].__class__ if found else None)
    hit = _CONSTS.get(key)
    if hit is not None:
        return self.known(hit)
    type_, kind, value, alias, _extra = kinds_pg.classify("A_Const", body)
    attrs: tuple[tuple[str, Any], ...] = (("@pg", "A_Const"), ("isnull", isnull))
    if found is not None:
        attrs += ((CONST_ATTR, found),)
    nid = self.add(type_, kind, value, alias, attrs, (), (), None, False)
    if len(_CONSTS) >= _LEAVES_MAX:
        _CONSTS.clear()
    _CONSTS[key] = self.nodes[nid]
    return nid


_READERS["A_Const"] = _read_a_const


def _indent(lines: list[str]) -> list[str]:
    return ["    " + line for line in lines]


def _field_code(name: str, key: str, how: int, detail: Any) -> list[str]:
    """Source lines reading one field; `v` is the JSON value, None when absent."""
    get = f"v = get({key!r})"
    if how == SCALAR:
        if detail is None:
            return [get, "if v is not None:", f"    attrs.append(({name!r}, v))"]
        return [get, f"attrs.append(({name!r}, {detail!r} if v is None else v))"]
    if how == POSITION:
        if name != "location":
            return []
        return ["v = get('location', 0)", "span = (v, v) if v >= 0 else None"]
    if how == ENUM:
        return [get, f"attrs.append(({name!r}, {detail[1]!r} if v is None else v))"]
    if how == CONST:  # A_Const's value; its own reader is `_read_a_const`
        return ["found = None if get('isnull') else const(body)",
                "if found is not None:", f"    attrs.append(({CONST_ATTR!r}, found))"]  # fmt: skip
    if how == NODE:
        return [get, "if v is not None:", "    children.append(self.wrapped(v))",
                f"    roles.append({name!r})"]  # fmt: skip
    if how == LIST:
        return [get, "if v is not None:",
                "    if not v:", f"        attrs.append(({name!r}, ()))",
                "    for item in v:", "        children.append(self.wrapped(item))",
                f"        roles.append({name + '[]'!r})"]  # fmt: skip
    return [get, "if v is not None:", f"    children.append(self.node({detail!r}, v))",
            f"    roles.append({name!r})"]  # fmt: skip


def _leaf(lines: list[str]) -> list[str]:
    """A reader for a class with scalar fields only, remembering each body's node.

    Such a node (a name part, an operator) depends on nothing but its body,
    and names recur in every statement: the cached node skips its id hash.
    """
    head, body, tail = lines[:1], lines[1:-2], lines[-2:]
    return [*head, "    key = tuple(body.items())", "    hit = leaves.get(key)",
            "    if hit is not None:", "        return self.known(hit)", *body,
            "    nid = " + tail[0].strip().removeprefix("return "),
            tail[1].replace("span)", "span, False)"),
            "    if len(leaves) >= LEAVES_MAX:", "        leaves.clear()",
            "    leaves[key] = self.nodes[nid]", "    return nid"]  # fmt: skip


def _compile(cls: str) -> Reader:
    lines = ["def read(self, body):", "    get = body.get", f"    attrs = [('@pg', {cls!r})]",
             "    children = []", "    roles = []", "    span = None"]  # fmt: skip
    has_limit = cls == "SelectStmt"
    if has_limit:
        lines += ["    limit = 'limitCount' in body or 'limitOffset' in body",
                  "    if limit:", "        children.append(self.limit(body))",
                  f"        roles.append({LIMIT_ROLE!r})"]  # fmt: skip
    for name, key, how, detail in pg_tree.fields(cls):
        code = _field_code(name, key, how, detail)
        if has_limit and name in _LIMIT_FIELDS:
            code = ["if not limit:", *_indent(code)]
        lines += _indent(code)
    fixed = kinds_pg.static(cls)
    if fixed is None:
        lines += ["    type_, kind, value, alias, extra = classify(body)",
                  "    if extra:", "        attrs.extend(extra)"]  # fmt: skip
        what = "type_, kind, value, alias"
    else:  # the classification written into the reader: one call fewer per node
        type_, kind, value_key, default, alias_key = fixed
        value = f"get({value_key!r}, {default!r})" if value_key else "None"
        alias = f"get({alias_key!r})" if alias_key else "None"
        what = f"{type_!r}, {kind!r}, {value}, {alias}"
    lines += [f"    return self.add({what}, tuple(attrs), tuple(children),",
              "                    tuple(roles), span)"]  # fmt: skip
    plan = pg_tree.fields(cls)
    if all(how in (SCALAR, ENUM) for _name, _key, how, _detail in plan):
        lines = _leaf(lines)
    scope: dict[str, Any] = {"const": pg_tree.const, "classify": kinds_pg.classifier(cls),
                             "leaves": {}, "LEAVES_MAX": _LEAVES_MAX}  # fmt: skip
    exec(compile("\n".join(lines), f"<air reader {cls}>", "exec"), scope)
    reader: Reader = scope["read"]
    _READERS[cls] = reader
    return reader
