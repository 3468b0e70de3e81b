"""The predictive plan cache: what the copilot knows and predicts about each query shape.

One entry per shape (pglast fingerprint), made the first time the shape is
observed and kept while it is used (least recently used dropped past
`aif.plan_cache.max_entries`):

- the shape's text with placeholders, statement kind and AIR features
  (lowered once, from the placeholder text);
- rolling statistics folded in from each closed telemetry window: calls,
  mean/p50/p95 latency, rows, errors;
- a sampled plan: the generic plan of the placeholder text, from
  `EXPLAIN (FORMAT JSON) EXECUTE` over the proxy's own upstream connection,
  in a read-only transaction with a statement timeout, in the background
  (never EXPLAIN ANALYZE: nothing is executed), with its hash and features;
- the predicted latency and reward from the served ONNX model (or the
  heuristic, flagged), its class (`latency-sensitive` or `heavy`) and the
  model version that made them: scored once per shape and model version;
- the strategy in use (`auto-prepare` or `forward`) and a TTL after which
  the plan is sampled and the shape scored again.

A lookup is a hit when the shape's entry exists and is within its TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections import OrderedDict
from typing import Any

import structlog

from sqlx.agents.reward import Window, reward
from sqlx.air import parameters
from sqlx.air.features import FEATURES, of_text
from sqlx.config.schema import ModelsConfig, PlanCacheConfig, RewardWeights
from sqlx.models.features import NO_PLAN, model_input, plan_features
from sqlx.models.serving import HEURISTIC, RewardModel, heuristic_ms

log = structlog.get_logger("sqlx.plans")

LATENCY_SENSITIVE, HEAVY = "latency-sensitive", "heavy"
_EXPLAINABLE = frozenset(("SELECT", "INSERT", "UPDATE", "DELETE", "WITH", "VALUES", "TABLE"))


class PlanEntry:
    __slots__ = ("calls", "database", "errors", "expires", "features", "fingerprint", "kind",
                 "klass", "mean_ms", "model", "p50_ms", "p95_ms", "plan", "plan_cost",
                 "plan_features", "plan_hash", "predicted_ms", "rows", "score", "strategy",
                 "text")  # fmt: skip

    def __init__(self, fingerprint: str, text: str, kind: str, database: str) -> None:
        self.fingerprint = fingerprint
        self.text = text
        self.kind = kind
        self.database = database
        self.features: tuple[float, ...] = (0.0,) * len(FEATURES)
        self.calls = self.rows = self.errors = 0
        self.mean_ms: float | None = None
        self.p50_ms = self.p95_ms = 0.0
        self.plan: dict[str, Any] | None = None
        self.plan_hash: str | None = None
        self.plan_cost: float | None = None
        self.plan_features: tuple[float, ...] = NO_PLAN
        self.predicted_ms = 0.0
        self.score = 0.0
        self.klass = LATENCY_SENSITIVE
        self.model = HEURISTIC
        self.strategy = "forward"
        self.expires = 0.0


def plan_hash(plan: dict[str, Any]) -> str:
    """A hash of a plan's shape: node types, relations, indexes, join types (no costs)."""

    def skeleton(node: dict[str, Any]) -> list[Any]:
        keys = ("Node Type", "Relation Name", "Index Name", "Join Type", "Strategy",
                "Parent Relationship", "Operation")  # fmt: skip
        return [[node.get(k) for k in keys], [skeleton(c) for c in node.get("Plans", ())]]

    encoded = json.dumps(skeleton(plan), separators=(",", ":")).encode()
    return hashlib.blake2b(encoded, digest_size=8).hexdigest()


class PlanCache:
    def __init__(self, config: PlanCacheConfig, models: ModelsConfig,
                 weights: RewardWeights) -> None:  # fmt: skip
        self.config = config
        self.models = models
        self.weights = weights
        self.entries: OrderedDict[str, PlanEntry] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.model: RewardModel | None = None
        self.scorings = 0
        self._explain_queue: asyncio.Queue[PlanEntry] | None = None

    # --- lookups (on the event loop, after the statement's I/O) ----------------------------

    def lookup(self, entry: PlanEntry | None, fingerprint: str, text: str, kind: str,
               database: str) -> PlanEntry:  # fmt: skip
        """The shape's entry, made or refreshed if it is missing or past its TTL."""
        now = time.monotonic()
        if entry is not None and entry.expires > now:
            self.hits += 1
            return entry
        self.misses += 1
        found = self.entries.get(fingerprint)
        if found is None:
            found = PlanEntry(fingerprint, text, kind, database)
            found.features = of_text(text)[1]
            self.entries[fingerprint] = found
            if len(self.entries) > self.config.max_entries:
                self.entries.popitem(last=False)
        else:
            self.entries.move_to_end(fingerprint)
        found.expires = now + self.config.ttl_s
        self.score(found)
        if self.config.explain and kind in _EXPLAINABLE and self._explain_queue is not None:
            with contextlib.suppress(asyncio.QueueFull):  # sampled at its next refresh
                self._explain_queue.put_nowait(found)
        return found

    @property
    def hit_ratio(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    # --- scoring ---------------------------------------------------------------------------

    def score(self, entry: PlanEntry) -> None:
        """Predict the shape's latency and reward with the served model (or the heuristic)."""
        model = self.model
        if model is not None:
            try:
                predicted = model.predict_ms(model_input(entry.features, entry.plan_features))
                entry.model = model.version
            except Exception as exc:  # a model that fails at run time is dropped, not retried
                log.error("reward model failed; scoring with the heuristic", error=str(exc))
                self.model = None
                predicted, entry.model = heuristic_ms(entry.mean_ms, entry.plan_cost), HEURISTIC
        else:
            predicted, entry.model = heuristic_ms(entry.mean_ms, entry.plan_cost), HEURISTIC
        self.scorings += 1
        entry.predicted_ms = predicted
        entry.klass = HEAVY if predicted >= self.models.heavy_ms else LATENCY_SENSITIVE
        calls = max(entry.calls, 1)
        window = Window(calls, predicted, entry.errors, 0, 0,
                        calls if entry.strategy == "auto-prepare" else 0)  # fmt: skip
        entry.score = round(reward(window, self.weights), 6)

    def serve(self, model: RewardModel | None) -> None:
        """Serve another model (or none): every shape is scored again with it."""
        self.model = model
        for entry in self.entries.values():
            self.score(entry)

    # --- windows and strategies ------------------------------------------------------------

    def absorb(self, rows: list[dict[str, Any]]) -> None:
        """Fold a closed telemetry window in; add each row's plan hash, plan features and
        strategy for the archive."""
        for row in rows:
            entry = self.entries.get(row["fingerprint"])
            if entry is None:
                row["plan_features"] = list(NO_PLAN)
                continue
            calls = entry.calls + row["calls"]
            previous = (entry.mean_ms or 0.0) * entry.calls
            entry.mean_ms = (previous + row["latency_ms_mean"] * row["calls"]) / calls
            entry.calls = calls
            entry.p50_ms, entry.p95_ms = row["latency_ms_p50"], row["latency_ms_p95"]
            entry.rows += row["rows"]
            entry.errors += row["errors"]
            if row.get("prepared"):
                entry.strategy = "auto-prepare"
            row["plan_hash"] = entry.plan_hash
            row["plan_features"] = list(entry.plan_features)
            row["strategy"] = "auto-prepare" if row.get("prepared") else entry.strategy

    def entry_of(self, fingerprint: str | None) -> PlanEntry | None:
        return self.entries.get(fingerprint) if fingerprint else None

    # --- plans (a background task on the event loop) -------------------------------------------

    async def sample_plans(self, connect: Any) -> None:
        """Take each queued shape's generic plan; `connect(database)` opens the proxy's own
        upstream connection (asyncpg)."""
        self._explain_queue = asyncio.Queue(maxsize=1000)
        connections: dict[str, Any] = {}
        try:
            while True:
                entry = await self._explain_queue.get()
                try:
                    conn = connections.get(entry.database)
                    if conn is None or conn.is_closed():
                        conn = connections[entry.database] = await connect(entry.database)
                    plan = await self._explain(conn, entry.text)
                except Exception as exc:  # the plan stays unknown; queries are unaffected
                    log.debug("no plan for shape", fingerprint=entry.fingerprint, error=str(exc))
                    continue
                entry.plan = plan
                entry.plan_hash = plan_hash(plan)
                entry.plan_cost = float(plan.get("Total Cost", 0.0))
                entry.plan_features = plan_features(plan)
                self.score(entry)
        finally:
            for conn in connections.values():
                await conn.close()

    async def _explain(self, conn: Any, text: str) -> dict[str, Any]:
        if parameters.dml_statement(text) is None:
            raise ValueError("not one SELECT, INSERT, UPDATE or DELETE")
        timeout_ms = int(self.config.explain_timeout_s * 1000)
        name = f"sqlx_plan_{hashlib.blake2b(text.encode(), digest_size=6).hexdigest()}"
        try:
            async with conn.transaction(readonly=True):
                await conn.execute(f"SET LOCAL statement_timeout = {timeout_ms}; "
                                   "SET LOCAL plan_cache_mode = force_generic_plan")  # fmt: skip
                await conn.execute(f"PREPARE {name} AS {text}")
                params = await conn.fetchval(
                    "SELECT cardinality(parameter_types) FROM pg_prepared_statements "
                    "WHERE name = $1", name)  # fmt: skip
                args = f"({', '.join(['NULL'] * params)})" if params else ""
                raw = await conn.fetchval(f"EXPLAIN (FORMAT JSON) EXECUTE {name}{args}")
        finally:
            with contextlib.suppress(Exception):  # not prepared if PREPARE failed
                await conn.execute(f"DEALLOCATE {name}")
        document = json.loads(raw) if isinstance(raw, str) else raw
        return dict(document[0]["Plan"])
