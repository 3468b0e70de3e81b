"""AIRPlan (spec §7): the logical steps of a statement and a cost from a capability model.

Steps, in execution order: one scan per table, joins, filter, aggregate,
sort, limit, output. The cost model is deliberately simple and deterministic:
it ranks shapes (a join costs more than a filter, a sort more than a limit)
rather than predicting time; the predictive plan cache learns real costs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from sqlx.air import events, shape
from sqlx.air.model import AIRGraph, AIRNode

# Relative step costs; sort is per row in n·log n terms, so scaled above a filter.
COST = {"scan": 100.0, "join": 400.0, "filter": 10.0, "aggregate": 60.0, "sort": 80.0,
        "limit": 1.0, "output": 5.0}  # fmt: skip


@dataclass(frozen=True, slots=True)
class AirStep:
    id: str
    op: str
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    predicates: tuple[str, ...] = ()  # node ids
    cost: float = 0.0

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"id": self.id, "op": self.op, "cost": self.cost}
        if self.inputs:
            out["inputs"] = list(self.inputs)
        if self.outputs:
            out["outputs"] = list(self.outputs)
        if self.predicates:
            out["predicates"] = list(self.predicates)
        return out


@dataclass(frozen=True, slots=True)
class AIRPlan:
    id: str
    root: str
    steps: tuple[AirStep, ...]
    cost: float
    hints: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, object]:
        return {"id": self.id, "root": self.root, "steps": [s.to_json() for s in self.steps],
                "cost": self.cost, "hints": list(self.hints)}  # fmt: skip


def plan(graph: AIRGraph) -> AIRPlan:
    """The logical plan of `graph`; the same graph always gives the same plan."""
    cached = graph._cache.get("plan")
    if cached is None:
        events.emit("air.plan.start", trace_id=graph.trace_id, air_id=graph.root)
        cached = graph._cache["plan"] = _plan(graph)
        events.emit("air.plan.ok", trace_id=graph.trace_id, air_id=graph.root, cost=cached.cost)
    return cached


def _plan(graph: AIRGraph) -> AIRPlan:
    root = graph.root_node
    steps: list[AirStep] = []
    hints: list[str] = []

    def step(op: str, inputs: list[str], outputs: tuple[str, ...] = (),
             predicates: tuple[str, ...] = (), factor: float = 1.0) -> str:  # fmt: skip
        sid = f"step:{len(steps) + 1}:{op}"
        steps.append(AirStep(sid, op, tuple(inputs), outputs, predicates, COST[op] * factor))
        return sid

    nodes = shape.first_visits(graph)
    tables = [n for n in nodes if n.kind == "TABLE" and n.value]
    joins = [n for n in nodes if n.kind == "JOIN"]
    current = [step("scan", [], (str(t.value),)) for t in tables]
    if len(current) > 1:
        last = current[0]
        for i, other in enumerate(current[1:]):
            preds = (joins[i].id,) if i < len(joins) else ()
            if not preds:
                hints.append("join without a condition: cross product")
            last = step("join", [last, other], predicates=preds, factor=1.0 + i)
        current = [last]
    where = shape.child(graph, root, "where")
    if where:
        current = [step("filter", current, predicates=tuple(p.id for p in where),
                        factor=_predicate_count(graph, where))]  # fmt: skip
    elif root.kind in ("UPDATE", "DELETE"):
        hints.append(f"{root.kind} without WHERE touches every row")
    group = shape.child(graph, root, "group")
    has_agg = any(shape.is_aggregate(n) for n in nodes)
    if group or has_agg:
        current = [step("aggregate", current, factor=1.0 + len(group))]
        having = shape.child(graph, root, "having")
        if having:
            current = [step("filter", current, predicates=tuple(p.id for p in having))]
    order = shape.child(graph, root, "order")
    limit = next((n for n in nodes if n.kind == "LIMIT"), None)
    if order:
        # A sort under a limit is a top-N sort: cheaper than a full one.
        current = [step("sort", current, factor=0.5 if limit else 1.0)]
    if limit is not None:
        current = [step("limit", current)]
    outputs = tuple(_label(graph, n) for n in shape.child(graph, root, "output"))
    step("output", current, outputs)
    total = round(sum(s.cost for s in steps), 3)
    pid = (
        "plan:"
        + hashlib.blake2b(
            repr((graph.root, [s.to_json() for s in steps])).encode(), digest_size=8
        ).hexdigest()
    )
    return AIRPlan(pid, graph.root, tuple(steps), total, tuple(hints))


def _predicate_count(graph: AIRGraph, roots: list[AIRNode]) -> float:
    """Distinct comparisons under `roots` (a shared subexpression is evaluated once)."""
    seen: set[str] = set()
    for root in roots:
        seen.update(n.id for n in shape.first_visits(graph, root.id) if n.kind in shape.COMPARISONS)
    return float(max(len(seen), 1))


def _label(graph: AIRGraph, node: AIRNode) -> str:
    if node.alias:
        return node.alias
    for n, _ in shape.tree(graph, node.id):
        if n.kind in ("COLUMN", "STAR") or n.type == "function":
            return str(n.value or n.kind)
    return node.kind
