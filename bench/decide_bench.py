"""`sqlxos bench decide`: what deciding a statement with new literals costs, in process.

A guarded session's point query carries a new id each time, so its exact text is
never seen twice. For each listener's dialect and each kind of verdict (allow,
deny, a masked rewrite) this times `PolicyDecider.decide` over texts that differ
only in their literals: once as shipped (the verdict shared by the shape, the
rewrite filled from its template), once with sharing by shape turned off (each
text lowered, evaluated and rewritten on its own, as every MySQL statement and
every PostgreSQL rewrite was before shapes and templates). Medians
and p95 in microseconds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import time
from pathlib import Path

from sqlx.agents.catalog import CatalogStore
from sqlx.agents.decider import MYSQL_CATALOG, PolicyDecider
from sqlx.agents.policy import Catalog
from sqlx.bench.pgbench import _machine
from sqlx.bench.report import update_section
from sqlx.config.policy import Policy
from sqlx.proxy.decision import Path as StatementPath
from sqlx.proxy.decision import SessionFacts, Statement
from sqlx.proxy.runtime import tune_gc

POLICY = {
    "tags": {"customers.email": {"sensitivity": "pii"}},
    "rules": [{"name": "mask-pii", "action": "mask", "when": {"tags": {"sensitivity": "pii"}}},
              {"name": "no-payroll", "action": "deny", "when": {"tables": ["payroll"]}}],
}  # fmt: skip
CASES = (
    ("allow", "SELECT id, total FROM orders WHERE id = {n} AND total > {m}"),
    ("deny", "SELECT amount FROM payroll WHERE id = {n}"),
    ("masked rewrite", "SELECT c.id, c.email FROM customers c WHERE c.id = {n} AND name <> '{m}'"),
)
FACTS = SessionFacts("app", "shop", "", "127.0.0.1", False)


def _decider(dialect: str, by_shape: bool = True) -> PolicyDecider:
    schema = "public" if dialect == "postgres" else "shop"
    catalog = Catalog(columns={f"{schema}.customers": ("id", "name", "email"),
                               f"{schema}.orders": ("id", "total"),
                               f"{schema}.payroll": ("id", "amount")},
                      builtin_functions=frozenset(("count",)) if dialect == "postgres" else
                      frozenset(), dialect=dialect, read_ok=True, version=1,
                      search_path=(schema,))  # fmt: skip
    store = CatalogStore({})
    decider = PolicyDecider(Policy.model_validate(POLICY), store, None, by_shape=by_shape)
    if dialect == "postgres":
        store._catalogs["shop"] = catalog
    else:
        decider.mysql_catalogs = CatalogStore({})
        decider.mysql_catalogs._catalogs[MYSQL_CATALOG] = catalog
    return decider


def _time(dialect: str, template: str, runs: int, per_text: bool) -> list[float]:
    decider = _decider(dialect, by_shape=not per_text)
    out = []
    for i in range(runs + 20):
        sql = template.format(n=1000 + i, m=i % 97)
        statement = Statement(sql, StatementPath.SIMPLE, FACTS, False, escapes=True,
                              dialect=dialect)  # fmt: skip
        start = time.perf_counter()
        decider.decide(statement)
        if i >= 20:  # the first of a shape, and the warm-up, are not counted
            out.append((time.perf_counter() - start) * 1e6)
    return out


def run(runs: int, out: Path) -> str:
    tune_gc()
    rows = []
    for dialect in ("postgres", "mysql"):
        for verdict, template in CASES:
            shared = sorted(_time(dialect, template, runs, per_text=False))
            alone = sorted(_time(dialect, template, max(runs // 5, 50), per_text=True))
            p95 = int(len(shared) * 0.95)
            median, baseline = statistics.median(shared), statistics.median(alone)
            rows.append(f"| {dialect} | {verdict} | {median:.0f} | {shared[p95]:.0f} | "
                        f"{baseline:.0f} | {baseline / median:.0f}x |")  # fmt: skip
            print(rows[-1], flush=True)
    text = "\n".join(
        [
            "## Deciding a statement with new literals (µs, in process)",
            "",
            f"- date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}",
            f"- machine: {_machine()}",
            f"- command: `sqlxos bench decide --runs {runs}`",
            "- each statement differs from the one before only in its literals; 'shared': as",
            "  shipped (verdict by shape, rewrite from its template); 'per text': sharing by",
            "  shape off (`PolicyDecider(by_shape=False)`), so each is lowered, evaluated and",
            "  rewritten on its own; PostgreSQL allow and deny were shared by fingerprint before",
            "",
            "| dialect | verdict | shared median | shared p95 | per text median | ratio |",
            "| --- | --- | ---: | ---: | ---: | ---: |",
            *rows,
        ]
    )
    update_section(out / "RESULTS.md", "decide", text)
    return text


def run_from_args(args: argparse.Namespace) -> int:
    run(args.runs, Path(args.out))
    return 0
