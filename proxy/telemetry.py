"""Telemetry: Prometheus metrics and one OpenTelemetry span per statement.

`Instrumented` wraps the decider: decisions pass through untouched, and every
outcome the session reports (with `observe_all`, every statement) is counted
inline — a histogram and counters, microseconds — and, if sampled, queued for
a worker thread that lowers the statement to AIR (cached) and builds its span
with the statement's real start and end times. Export is batched by the SDK
off the hot path: OTLP/HTTP when `telemetry.otlp_endpoint` is set, else JSON
lines in `spans.jsonl` in the data dir.

A span is named from the AIR summary (`SELECT customers`) and carries the
OpenTelemetry database attributes (`db.system.name`, `db.namespace`,
`db.query.summary`, `db.query.text` with every literal replaced by a
placeholder and comments removed, `db.response.status_code`,
`db.response.returned_rows`) plus `sqlx.air.id`, `sqlx.air.hash`,
`sqlx.fingerprint`, `sqlx.policy.verdict` and `sqlx.policy.rule`, and the
events `air.parse`, `air.normalize`, `air.plan`. A sqlcommenter `traceparent`
comment continues the client's trace (and its sampling decision).
"""

from __future__ import annotations

import queue
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pglast
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from sqlx.air.api import summary_of
from sqlx.air.cache import LoweringCache
from sqlx.air.errors import LoweringError
from sqlx.air.plan import plan
from sqlx.proxy.decision import Decider, Decision, Outcome, Statement, Verdict

SPANS_FILE = "spans.jsonl"
_KINDS = frozenset(("SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "WITH", "COPY", "BEGIN",
                    "COMMIT", "ROLLBACK", "START", "SET", "SHOW", "CREATE", "ALTER", "DROP",
                    "PREPARE", "EXECUTE", "DECLARE", "FETCH", "CLOSE", "EXPLAIN", "CALL", "DO",
                    "VALUES", "TABLE", "TRUNCATE", "GRANT", "REVOKE", "DISCARD", "DEALLOCATE",
                    "LISTEN", "NOTIFY", "VACUUM", "ANALYZE", "LOCK", "SAVEPOINT",
                    "RELEASE"))  # fmt: skip
_FIRST_WORD = re.compile(r"\A(?:\s+|/\*.*?\*/|--[^\n]*\n?)*([A-Za-z]+)", re.DOTALL)
_TRACEPARENT = re.compile(
    r"traceparent\s*=\s*'([0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2})'"
)
_PROPAGATOR = TraceContextTextMapPropagator()
# Latency buckets in milliseconds, from a cached point select to a report.
_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


def statement_kind(sql: str) -> str:
    """The statement's first keyword, as a bounded metrics label."""
    found = _FIRST_WORD.match(sql)
    word = found.group(1).upper() if found else ""
    return word if word in _KINDS else ("FUNCTION_CALL" if not sql else "OTHER")


def query_text(sql: str) -> str:
    """`sql` with every literal a placeholder and every comment removed (span-safe)."""
    try:
        text = pglast.parser.normalize(sql)
        for comment in pglast.parser.comments(text):
            text = text.replace(comment.str, " ", 1)
        return " ".join(text.split())
    except pglast.parser.ParseError:
        return ""


class FingerprintStats:
    """Calls, time and errors per query shape (pglast fingerprint), for SHOW FINGERPRINTS.

    Text → fingerprint is remembered (bounded), so a repeated text costs a dict
    lookup; each shape keeps its first text with literals replaced."""

    def __init__(self, max_shapes: int = 10_000) -> None:
        self.max_shapes = max_shapes
        self._shape_of: dict[str, str] = {}
        self.shapes: dict[str, list[Any]] = {}  # fp -> [text, calls, total_ms, errors, max_ms]

    def add(self, sql: str, elapsed_ms: float, failed: bool) -> None:
        fp = self._shape_of.get(sql)
        if fp is None:
            try:
                fp = pglast.parser.fingerprint(sql)
            except pglast.parser.ParseError:
                fp = "unparsable"
            if len(self._shape_of) >= self.max_shapes:
                self._shape_of.clear()
            self._shape_of[sql] = fp
        entry = self.shapes.get(fp)
        if entry is None:
            if len(self.shapes) >= self.max_shapes:
                return
            entry = self.shapes[fp] = [query_text(sql)[:200], 0, 0.0, 0, 0.0]
        entry[1] += 1
        entry[2] += elapsed_ms
        entry[3] += failed
        entry[4] = max(entry[4], elapsed_ms)

    def top(self, n: int = 50) -> list[tuple[str, list[Any]]]:
        return sorted(self.shapes.items(), key=lambda kv: -kv[1][2])[:n]


class Telemetry:
    """Metrics registry, tracer and the span worker of one proxy process."""

    def __init__(self, data_dir: Path, sampling_ratio: float, otlp_endpoint: str | None = None,
                 exporter: SpanExporter | None = None) -> None:  # fmt: skip
        self.registry = CollectorRegistry()
        self.latency = Histogram("sqlx_exec_latency_ms", "Statement latency through the proxy",
                                 ["kind", "verdict"], buckets=_BUCKETS,
                                 registry=self.registry)  # fmt: skip
        self.statements = Counter("sqlx_statements", "Statements completed",
                                  ["kind", "verdict"], registry=self.registry)  # fmt: skip
        self.denials = Counter("sqlx_denials", "Statements denied by policy", ["rule"],
                               registry=self.registry)  # fmt: skip
        self.errors = Counter("sqlx_statement_errors", "Statements the server failed",
                              ["sqlstate_class"], registry=self.registry)  # fmt: skip
        self.gauges: dict[str, tuple[str, Callable[[], float]]] = {}
        self.registry.register(_Callbacks(self.gauges))
        self.ratio = sampling_ratio
        self.fingerprints = FingerprintStats()
        if exporter is None:
            exporter = _exporter(data_dir, otlp_endpoint)
        resource = Resource.create({"service.name": "sqlx-os"})
        # Sampling is decided before a span is queued (ratio, or the client's
        # traceparent flag), so the SDK records every span it is handed.
        self.provider = TracerProvider(resource=resource, sampler=ALWAYS_ON)
        self.provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=1000))
        self.tracer = self.provider.get_tracer("sqlx.proxy")
        self._lowering = LoweringCache(10_000)
        self._queue: queue.SimpleQueue[tuple[Outcome, int] | None] = queue.SimpleQueue()
        self._worker = threading.Thread(target=self._run, name="sqlx-spans", daemon=True)
        self._worker.start()

    def gauge(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        """A value read when /metrics is scraped (client connections, cache hits ...)."""
        self.gauges[name] = (help_text, read)

    def metrics_text(self) -> str:
        return generate_latest(self.registry).decode()

    # --- per statement -----------------------------------------------------------

    def record(self, outcome: Outcome) -> None:
        statement = outcome.statements[0] if outcome.statements else None
        if statement is None:
            return
        kind = statement_kind(statement.sql)
        verdict = outcome.decision.verdict.value
        elapsed_ms = outcome.elapsed_s * 1000
        self.latency.labels(kind, verdict).observe(elapsed_ms)
        if statement.sql:
            self.fingerprints.add(statement.sql, elapsed_ms, outcome.error_sqlstate is not None)
        self.statements.labels(kind, verdict).inc()
        if outcome.decision.verdict is Verdict.DENY:
            self.denials.labels(outcome.decision.rule or "unknown").inc()
        elif outcome.error_sqlstate:
            self.errors.labels(outcome.error_sqlstate[:2]).inc()
        parent = _TRACEPARENT.search(statement.sql) if "traceparent" in statement.sql else None
        sampled = parent.group(1).endswith("1") if parent else random.random() < self.ratio
        if sampled:
            self._queue.put((outcome, time.time_ns()))

    def close(self) -> None:
        self._queue.put(None)
        self._worker.join(timeout=10)
        self.provider.shutdown()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                self._span(*item)
            except Exception:  # one bad span must not stop telemetry
                continue

    def _span(self, outcome: Outcome, end_ns: int) -> None:
        statement = outcome.statements[0]
        attributes: dict[str, Any] = {
            "db.system.name": "postgresql",
            "db.namespace": statement.facts.database,
            "db.query.text": query_text(statement.sql),
            "sqlx.policy.verdict": outcome.decision.verdict.value,
            "sqlx.path": statement.path.value,
        }
        if outcome.decision.rule:
            attributes["sqlx.policy.rule"] = outcome.decision.rule
        if outcome.rows is not None:
            attributes["db.response.returned_rows"] = outcome.rows
        if outcome.error_sqlstate:
            attributes["db.response.status_code"] = outcome.error_sqlstate
        events: list[tuple[str, dict[str, Any]]] = []
        name = statement_kind(statement.sql)
        try:
            graphs = self._lowering.lower_all(statement.sql) if statement.sql else []
            events += [("air.parse", {"status": "ok"}), ("air.normalize", {"status": "ok"})]
        except LoweringError as exc:
            graphs = []
            events.append(("air.parse", {"status": "error", "error": exc.message}))
        if graphs:
            g = graphs[0]
            name = summary_of(graphs)
            attributes["db.query.summary"] = name
            attributes["sqlx.air.id"] = g.root
            attributes["sqlx.air.hash"] = f"{g.hash64:016x}"
            try:
                attributes["sqlx.fingerprint"] = pglast.parser.fingerprint(statement.sql)
                events.append(("air.plan", {"status": "ok", "cost": plan(g).cost}))
            except Exception as exc:  # the span reports it
                events.append(("air.plan", {"status": "error", "error": str(exc)}))
        parent = _TRACEPARENT.search(statement.sql)
        context = _PROPAGATOR.extract({"traceparent": parent.group(1)}) if parent else None
        start_ns = end_ns - int(outcome.elapsed_s * 1e9)
        span = self.tracer.start_span(name, context=context, kind=trace.SpanKind.CLIENT,
                                      attributes=attributes, start_time=start_ns)  # fmt: skip
        for event, fields in events:
            span.add_event(event, fields, timestamp=start_ns)
        if outcome.error_sqlstate:
            span.set_status(trace.Status(trace.StatusCode.ERROR, outcome.error_sqlstate))
        span.end(end_time=end_ns)


class _Callbacks:
    """A Prometheus collector that reads gauges when scraped."""

    def __init__(self, gauges: dict[str, tuple[str, Callable[[], float]]]) -> None:
        self.gauges = gauges

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for name, (help_text, read) in list(self.gauges.items()):
            yield GaugeMetricFamily(name, help_text, value=float(read()))


def _exporter(data_dir: Path, endpoint: str | None) -> SpanExporter:
    if endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=endpoint)
    data_dir.mkdir(parents=True, exist_ok=True)
    out = (data_dir / SPANS_FILE).open("a", encoding="utf-8")
    return ConsoleSpanExporter(out=out, formatter=lambda span: span.to_json(indent=None) + "\n")


class Instrumented:
    """A decider wrapped with telemetry: every outcome is counted, sampled ones traced."""

    def __init__(self, inner: Decider, telemetry: Telemetry) -> None:
        self.inner = inner
        self.telemetry = telemetry
        prepare = getattr(inner, "prepare", None)
        if prepare is not None:
            self.prepare = prepare

    def decide(self, statement: Statement) -> Decision:
        return self.inner.decide(statement)

    def observe(self, outcome: Outcome) -> None:
        self.telemetry.record(outcome)
        self.inner.observe(outcome)
