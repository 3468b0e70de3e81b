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
from sqlx.air.cache import LoweringCache
from sqlx.air.plan import plan
from sqlx.bench.pgbench import _machine
from sqlx.bench.report import update_section

POINT = "SELECT id, name, email FROM customers WHERE id = 42"
JOIN3 = (
    "SELECT c.region, p.category, count(*), sum(i.qty * i.price) AS revenue "
    "FROM customers c JOIN orders o ON o.customer_id = c.id "
    "JOIN items i ON i.order_id = o.id JOIN products p ON p.id = i.product_id "
    "WHERE o.created_at >= '2024-01-01' GROUP BY c.region, p.category "
    "HAVING sum(i.qty) > 10 ORDER BY revenue DESC LIMIT 20"
)


def big_statement(target_nodes: int = 500) -> str:
    """A generated statement whose AIR graph has at least `target_nodes` nodes."""
    terms = []
    i = 0
    while True:
        terms.append(f"(t.c{i % 37} > {i} AND t.d{i % 11} LIKE 'p{i}%')")
        sql = f"SELECT t.a, t.b, count(*) FROM t WHERE {' OR '.join(terms)} GROUP BY 1, 2"
        i += 1
        if i % 10 == 0 and len(air.lower(sql).nodes) >= target_nodes:
            return sql


def _first_seen(sql: str) -> float:
    """One lowering of a shape never seen before (the round-trip check included), µs."""
    from sqlx.air import pg

    pg._VERIFIED.clear()
    t0 = time.perf_counter_ns()
    plan(air.lower(sql))
    return (time.perf_counter_ns() - t0) / 1000


def _time(fn: Callable[[], object], runs: int) -> tuple[float, float]:
    for _ in range(min(runs // 10, 50)):
        fn()
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - t0) / 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


def run(runs: int) -> list[tuple[str, float, float]]:
    big = big_statement()
    first = _first_seen(big)
    g_join = air.lower(JOIN3)
    cache = LoweringCache()
    cache.lower_all(POINT)
    rows = [
        (f"lower + plan, first time its shape is seen ({len(air.lower(big).nodes)} nodes)",
         first, first),
        ("lower: point select", *_time(lambda: air.lower(POINT), runs)),
        ("lower: 4-table join with aggregates", *_time(lambda: air.lower(JOIN3), runs)),
        (f"lower + plan, shape seen before ({len(air.lower(big).nodes)} nodes)",
         *_time(lambda: plan(air.lower(big)), max(runs // 5, 50))),
        ("emit postgres: 4-table join", *_time(lambda: air.emit(g_join), runs)),
        ("emit tsql (cross-dialect): 4-table join",
         *_time(lambda: air.emit(g_join, "tsql"), max(runs // 5, 50))),
        ("lower: point select, mysql", *_time(lambda: air.lower(POINT, "mysql"), runs)),
        ("cache hit by text", *_time(lambda: cache.lower_all(POINT), runs * 10)),
    ]  # fmt: skip
    return rows


def run_from_args(args: argparse.Namespace) -> int:
    rows = run(args.runs)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    lines = ["## AIR: lowering, planning, emission (µs)", "",
             f"- date: {stamp}", f"- machine: {_machine()}",
             f"- command: `sqlxos bench air --runs {args.runs}`", "",
             "| case | median µs | p99 µs |", "| --- | ---: | ---: |"]  # fmt: skip
    lines += [f"| {name} | {med:.1f} | {p99:.1f} |" for name, med, p99 in rows]
    text = "\n".join(lines) + "\n"
    update_section(Path(args.out) / "RESULTS.md", "air", text)
    print(text)
    return 0
