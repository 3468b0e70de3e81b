"""`sqlxos bench air`: AIR lowering, planning and emission times, and a cache hit.

Each case runs many times in this process after a warm-up; medians and p99
in microseconds. Targets (issue 3): a 500-node statement lowered and planned
in under 5 ms; a cache hit by text under 5 µs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from sqlx import air
from sqlx.air.api import clear_memos
from sqlx.air.cache import LoweringCache
from sqlx.air.plan import plan
from sqlx.bench.pgbench import _machine
from sqlx.bench.report import update_section
from sqlx.proxy.runtime import tune_gc

POINT = "SELECT id, name, email FROM customers WHERE id = 42"
JOIN3 = (
    "SELECT c.region, p.category, count(*), sum(i.qty * i.price) AS revenue "
    "FROM customers c JOIN orders o ON o.customer_id = c.id "
    "JOIN items i ON i.order_id = o.id JOIN products p ON p.id = i.product_id "
    "WHERE o.created_at >= '2024-01-01' GROUP BY c.region, p.category "
    "HAVING sum(i.qty) > 10 ORDER BY revenue DESC LIMIT 20"
)


def big_statement(target_nodes: int = 500, variant: int = 0) -> str:
    """A generated statement whose AIR graph has at least `target_nodes` nodes.

    Every `variant` has the same shape with different literals.
    """
    terms = []
    i = 0
    while True:
        n = i + variant * 1000
        terms.append(f"(t.c{i % 37} > {n} AND t.d{i % 11} LIKE 'p{n}%')")
        sql = f"SELECT t.a, t.b, count(*) FROM t WHERE {' OR '.join(terms)} GROUP BY 1, 2"
        i += 1
        if i % 10 == 0 and len(air.lower(sql).nodes) >= target_nodes:
            return sql


def _time(fn: Callable[[int], object], runs: int) -> tuple[float, float]:
    """Median and p99 of `fn(i)` in µs; `i` counts on across warm-up and runs."""
    warm = min(runs // 10, 50)
    for i in range(warm):
        fn(i)
    samples = []
    for i in range(warm, warm + runs):
        t0 = time.perf_counter_ns()
        fn(i)
        samples.append((time.perf_counter_ns() - t0) / 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


def _first_seen(texts: list[str]) -> tuple[float, float]:
    """Lowering and planning with nothing remembered: the round-trip check runs each time."""

    def fresh(i: int) -> None:
        clear_memos()
        plan(air.lower(texts[i % len(texts)]))

    return _time(fresh, len(texts))


def run(runs: int) -> list[tuple[str, float, float]]:
    # Literals differ on every call where it matters, so the only warm thing
    # is what a shape seen before leaves (its round-trip verdict, the ids of
    # its literal-free parts). Texts are built before timing, with the same
    # process settings as the proxy's (`tune_gc`).
    count = max(runs // 5, 50)
    bigs = [big_statement(variant=v) for v in range(count + min(count // 10, 50))]
    nodes = len(air.lower(bigs[0]).nodes)
    points = [POINT.replace("42", str(n)) for n in range(runs + 50)]
    joins = [JOIN3.replace("10", str(n)) for n in range(runs + 50)]
    clear_memos()
    tune_gc()
    g_join = air.lower(JOIN3)
    cache = LoweringCache()
    cache.lower_all(POINT)
    rows = [
        (f"lower + plan, first time its shape is seen ({nodes} nodes)",
         *_first_seen(bigs[: max(count // 5, 20)])),
        (f"lower + plan, shape seen before, new literals ({nodes} nodes)",
         *_time(lambda i: plan(air.lower(bigs[i])), count)),
        ("lower: point select", *_time(lambda i: air.lower(points[i]), runs)),
        ("lower: 4-table join with aggregates", *_time(lambda i: air.lower(joins[i]), runs)),
        ("emit postgres: 4-table join", *_time(lambda i: air.emit(g_join), runs)),
        ("emit tsql (cross-dialect): 4-table join",
         *_time(lambda i: air.emit(g_join, "tsql"), max(runs // 5, 50))),
        ("lower: point select, mysql",
         *_time(lambda i: air.lower(points[i], "mysql"), runs)),
        ("cache hit by text", *_time(lambda i: cache.lower_all(POINT), runs * 10)),
    ]  # fmt: skip
    return rows


def run_from_args(args: argparse.Namespace) -> int:
    rows = run(args.runs)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    lines = ["## AIR: lowering, planning, emission (µs)", "",
             f"- date: {stamp}", f"- machine: {_machine()}",
             f"- command: `sqlxos bench air --runs {args.runs}`",
             "- every timed call of a lowering case gets new literals, so only what a shape",
             "  seen before leaves behind is warm; 'first time' forgets every memo and so",
             "  includes the once-per-shape lossless check (pglast's deparser, then a re-parse)",
             "- process settings as the proxy's (`sqlx.proxy.runtime.tune_gc`);",
             "  node counts are the graph's distinct nodes", "",
             "| case | median µs | p99 µs |", "| --- | ---: | ---: |"]  # fmt: skip
    lines += [f"| {name} | {med:.1f} | {p99:.1f} |" for name, med, p99 in rows]
    text = "\n".join(lines) + "\n"
    update_section(Path(args.out) / "RESULTS.md", "air", text)
    print(text)
    return 0
