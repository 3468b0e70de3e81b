"""Telemetry: Prometheus metrics and one OpenTelemetry span per statement.

`Instrumented` wraps the decider: decisions pass through untouched, and every
outcome the session reports (with `observe_all`, every statement) is counted
inline — a histogram and counters, microseconds. Shape statistics and, if
sampled, the span (the statement lowered to AIR, cached, with its real start
and end times) are built on the event loop after the current batch of I/O;
export is batched by the SDK's thread: OTLP/HTTP when
`telemetry.otlp_endpoint` is set, else JSON lines in `spans.jsonl`.

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

import asyncio
import random
import re
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple, Protocol

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
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from sqlx.air.api import summary_of
from sqlx.air.cache import LoweringCache
from sqlx.air.errors import LoweringError
from sqlx.air.parameters import mysql_fingerprint, placeholder_text
from sqlx.air.pg import fingerprint_of
from sqlx.air.plan import plan
from sqlx.proxy.decision import Decider, Decision, Outcome, Statement, Verdict, traceparent_of

SPANS_FILE = "spans.jsonl"
_KINDS = frozenset(("SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "WITH", "COPY", "BEGIN",
                    "COMMIT", "ROLLBACK", "START", "SET", "SHOW", "CREATE", "ALTER", "DROP",
                    "PREPARE", "EXECUTE", "DECLARE", "FETCH", "CLOSE", "EXPLAIN", "CALL", "DO",
                    "VALUES", "TABLE", "TRUNCATE", "GRANT", "REVOKE", "DISCARD", "DEALLOCATE",
                    "LISTEN", "NOTIFY", "VACUUM", "ANALYZE", "LOCK", "SAVEPOINT",
                    "RELEASE"))  # fmt: skip
_FIRST_WORD = re.compile(r"\A(?:\s+|/\*.*?\*/|--[^\n]*\n?)*([A-Za-z]+)", re.DOTALL)
_PROPAGATOR = TraceContextTextMapPropagator()
# Latency buckets in milliseconds, from a cached point select to a report.
_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


def statement_kind(sql: str) -> str:
    """The statement's first keyword, as a bounded metrics label."""
    head = sql[:12].split(None, 1)
    word = head[0].upper() if head else ""
    if word not in _KINDS:  # a leading comment or parenthesis: look properly
        found = _FIRST_WORD.match(sql)
        word = found.group(1).upper() if found else ""
    return word if word in _KINDS else ("FUNCTION_CALL" if not sql else "OTHER")


class LatencyTable:
    """Statement counts and a latency histogram per (kind, verdict), kept without locks
    (the event loop is the only writer) and exposed as Prometheus families when scraped."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.rows: dict[tuple[str, str], list[float]] = {}  # bucket counts..., +Inf, sum

    def add(self, kind: str, verdict: str, ms: float) -> None:
        row = self.rows.get((kind, verdict))
        if row is None:
            row = self.rows[(kind, verdict)] = [0.0] * (len(self.bounds) + 2)
        row[bisect_left(self.bounds, ms)] += 1
        row[-1] += ms

    def collect(self) -> Iterator[Any]:
        hist = HistogramMetricFamily("sqlx_exec_latency_ms", "Statement latency through the proxy",
                                     labels=["kind", "verdict"])  # fmt: skip
        total = CounterMetricFamily("sqlx_statements", "Statements completed",
                                    labels=["kind", "verdict"])  # fmt: skip
        for (kind, verdict), row in sorted(self.rows.items()):
            cumulative, buckets = 0.0, []
            for bound, count in zip((*map(str, self.bounds), "+Inf"), row[:-1], strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            hist.add_metric([kind, verdict], buckets, row[-1])
            total.add_metric([kind, verdict], cumulative)
        yield hist
        yield total


class Shape:
    """One query shape (pglast fingerprint): its first text with literals replaced, its
    statement kind, counters for SHOW FINGERPRINTS, and what its spans say of its AIR
    (lowered once, from the placeholder text, on the first sampled span)."""

    __slots__ = ("air", "closed", "dialect", "fingerprint", "kind", "plan", "text", "window")

    def __init__(self, fingerprint: str, sql: str, dialect: str = "postgres",
                 text: str | None = None) -> None:  # fmt: skip
        self.fingerprint = fingerprint
        self.dialect = dialect
        self.text = placeholder_text(sql) if text is None else text
        self.kind = statement_kind(sql)
        self.air: _ShapeAir | None = None
        self.plan: Any = None  # the plan cache's entry for the shape, if there is a plan cache
        # Statements are counted in the current window only; a closed window's counts
        # are added to `closed` (calls, total_ms, errors, max_ms, prepared).
        self.window = ShapeWindow()
        self.closed = (0, 0.0, 0, 0.0, 0)

    def close(self) -> None:
        calls, total_ms, errors, max_ms, prepared = self.closed
        w = self.window
        self.closed = (calls + w.calls, total_ms + w.total_ms, errors + w.errors,
                       max(max_ms, w.max_ms), prepared + w.prepared)  # fmt: skip
        self.window = ShapeWindow()

    @property
    def calls(self) -> int:
        return self.closed[0] + self.window.calls

    @property
    def total_ms(self) -> float:
        return self.closed[1] + self.window.total_ms

    @property
    def errors(self) -> int:
        return self.closed[2] + self.window.errors

    @property
    def max_ms(self) -> float:
        return max(self.closed[3], self.window.max_ms)

    @property
    def prepared(self) -> int:
        return self.closed[4] + self.window.prepared


class ShapeWindow:
    """What one shape did since the archive's last window closed."""

    __slots__ = ("calls", "conn_errors", "denied", "error_class", "errors", "histogram",
                 "max_ms", "prepared", "rows", "total_ms", "verdict")  # fmt: skip

    def __init__(self) -> None:
        self.calls = 0
        self.total_ms = 0.0
        self.max_ms = 0.0
        self.errors = 0
        self.conn_errors = 0
        self.denied = 0
        self.prepared = 0  # executions run as an auto-prepared statement
        self.rows = 0
        # Latency in powers of two of microseconds: bucket b holds [2^(b-1), 2^b) µs.
        self.histogram: dict[int, int] = {}
        self.verdict = "allow"
        self.error_class: str | None = None

    def percentile_ms(self, q: float) -> float:
        """The q-quantile (0..1) of latency, to within the bucket's factor of two."""
        want, seen = q * self.calls, 0
        for bucket in sorted(self.histogram):
            seen += self.histogram[bucket]
            if seen >= want:
                return (2 ** (bucket - 0.5) if bucket else 0.5) / 1000
        return self.max_ms


class FingerprintStats:
    """Calls, time and errors per query shape, for SHOW FINGERPRINTS and the span."""

    def __init__(self, max_shapes: int = 10_000) -> None:
        self.max_shapes = max_shapes
        self.shapes: dict[str, Shape] = {}

    def add(self, sql: str, elapsed_ms: float, error: str | None = None, verdict: str = "allow",
            rows: int | None = None, prepared: bool = False,
            dialect: str = "postgres") -> Shape:  # fmt: skip
        """Count one statement; its shape (counted only while the table has room)."""
        text = None
        if dialect == "postgres":
            fp = fingerprint_of(sql) or "unparsable"
        else:  # MySQL: the shape is its text with every literal a placeholder
            fp, text = mysql_fingerprint(sql, dialect)
        shape = self.shapes.get(fp)
        if shape is None:
            shape = Shape(fp, sql, dialect, text)
            if len(self.shapes) >= self.max_shapes:
                return shape
            self.shapes[fp] = shape
        w = shape.window
        w.calls += 1
        w.total_ms += elapsed_ms
        if elapsed_ms > w.max_ms:
            w.max_ms = elapsed_ms
        bucket = int(elapsed_ms * 1000).bit_length()
        w.histogram[bucket] = w.histogram.get(bucket, 0) + 1
        if rows:
            w.rows += rows
        if prepared:
            w.prepared += 1
        if verdict != "allow":
            w.verdict = verdict
            if verdict == "deny":
                w.denied += 1
        if error is not None:
            w.errors += 1
            w.error_class = error[:2]
            if error.startswith("08"):
                w.conn_errors += 1
        return shape

    def close_window(self) -> list[dict[str, Any]]:
        """One row per shape that ran since the last call (literal-free), and a new window."""
        rows = []
        for shape in self.shapes.values():
            w = shape.window
            if not w.calls:
                continue
            rows.append({
                "fingerprint": shape.fingerprint, "text": shape.text, "kind": shape.kind,
                "calls": w.calls, "latency_ms_mean": w.total_ms / w.calls,
                "latency_ms_p50": w.percentile_ms(0.5), "latency_ms_p95": w.percentile_ms(0.95),
                "latency_ms_max": w.max_ms, "rows": w.rows, "errors": w.errors,
                "connection_errors": w.conn_errors, "denied": w.denied,
                "error_class": w.error_class, "verdict": w.verdict, "prepared": w.prepared,
            })  # fmt: skip
            shape.close()
        return rows

    def top(self, n: int = 50) -> list[Shape]:
        return sorted(self.shapes.values(), key=lambda shape: -shape.total_ms)[:n]


class _ShapeAir(NamedTuple):
    """A shape's span name, AIR attributes and AIR events (no literal in any of them)."""

    name: str
    attributes: dict[str, str]
    events: list[tuple[str, dict[str, Any]]]


def _shape_air(shape: Shape, sql: str, lowering: LoweringCache) -> _ShapeAir:
    """Lower the shape's placeholder text (its AIR ids then hash no literal value); a
    placeholder text PostgreSQL cannot parse (`date $1`) is named from the statement
    itself, without ids."""
    attributes: dict[str, str] = {"sqlx.fingerprint": shape.fingerprint}
    dialect = shape.dialect
    try:
        graphs, literal_free = lowering.lower_all(shape.text, dialect), True
    except LoweringError:
        if dialect != "postgres":  # its placeholder text is all that may be read
            return _ShapeAir(shape.kind, attributes, [("air.parse", {"status": "error"})])
        try:
            graphs, literal_free = (lowering.lower_all(sql) if sql else []), False
        except LoweringError:
            # The parser's message may quote the statement's own tokens: not said.
            return _ShapeAir(shape.kind, attributes, [("air.parse", {"status": "error"})])
    events: list[tuple[str, dict[str, Any]]] = [("air.parse", {"status": "ok"}),
                                                ("air.normalize", {"status": "ok"})]  # fmt: skip
    if not graphs:
        return _ShapeAir(shape.kind, attributes, events)
    g = graphs[0]
    name = summary_of(graphs)
    attributes["db.query.summary"] = name
    if literal_free:
        attributes["sqlx.air.id"] = g.root
        attributes["sqlx.air.hash"] = f"{g.hash64:016x}"
    try:
        events.append(("air.plan", {"status": "ok", "cost": plan(g).cost}))
    except Exception as exc:  # the span reports it
        events.append(("air.plan", {"status": "error", "error": str(exc)}))
    return _ShapeAir(name, attributes, events)


class Plans(Protocol):
    """The copilot's plan cache, as telemetry sees it: an entry per shape (with `score`,
    `klass`, `model`, `plan_hash`, `strategy`), made or refreshed when missing or stale."""

    def lookup(self, entry: Any, fingerprint: str, text: str, kind: str,
               database: str) -> Any: ...  # fmt: skip


class Telemetry:
    """Metrics registry, tracer and the span worker of one proxy process."""

    def __init__(self, data_dir: Path, sampling_ratio: float, otlp_endpoint: str | None = None,
                 exporter: SpanExporter | None = None,
                 lowering: LoweringCache | None = None) -> None:  # fmt: skip
        self.registry = CollectorRegistry()
        self.latency = LatencyTable(_BUCKETS)
        self.registry.register(self.latency)
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
        self._lowering = lowering or LoweringCache(10_000)
        self._pending: list[tuple[Outcome, int]] = []
        self.plans: Plans | None = None

    def gauge(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        """A value read when /metrics is scraped (client connections, cache hits ...)."""
        self.gauges[name] = (help_text, read)

    def metrics_text(self) -> str:
        return generate_latest(self.registry).decode()

    # --- per statement -----------------------------------------------------------

    def record(self, outcome: Outcome) -> None:
        """Take one outcome; it is counted and traced by `_drain`, soon after."""
        if not outcome.statements:
            return
        self._pending.append((outcome, time.time_ns()))
        if len(self._pending) == 1:
            try:
                asyncio.get_running_loop().call_soon(self._drain)
            except RuntimeError:  # no loop (a library caller): do it now
                self._drain()

    def _drain(self) -> None:
        """Shape statistics and sampled spans, on the event loop once it has sent what it
        had to send. A thread would do no better: it would hold the GIL against the loop."""
        pending, self._pending = self._pending, []
        add_shape, add_latency, ratio = self.fingerprints.add, self.latency.add, self.ratio
        plans = self.plans
        for outcome, end_ns in pending:
            first = outcome.statements[0]
            sql = first.sql
            decision = outcome.decision
            ms = outcome.elapsed_s * 1000
            error = outcome.error_sqlstate
            verdict = decision.verdict.value
            shape = None
            if sql:
                shape = add_shape(sql, ms, error, verdict, outcome.rows,
                                  decision.prepared is not None, first.dialect)  # fmt: skip
                if plans is not None and first.dialect == "postgres":
                    shape.plan = plans.lookup(shape.plan, shape.fingerprint, shape.text,
                                              shape.kind, first.facts.database)  # fmt: skip
            add_latency(shape.kind if shape else "FUNCTION_CALL", verdict, ms)
            if decision.verdict is Verdict.DENY:
                self.denials.labels(decision.rule or "unknown").inc()
            elif error:
                self.errors.labels(error[:2]).inc()
            parent = traceparent_of(sql)
            explained = decision.trace_id is not None  # its explanation names this trace
            if explained or (parent[2] if parent else random.random() < ratio):
                try:
                    self._span(outcome, end_ns, shape, parent)
                except Exception:  # one bad span must not stop telemetry
                    continue

    def close(self) -> None:
        self._drain()
        self.provider.shutdown()

    def _span(self, outcome: Outcome, end_ns: int, shape: Shape | None = None,
              parent: tuple[str, str, bool] | None = None) -> None:  # fmt: skip
        statement = outcome.statements[0]
        attributes: dict[str, Any] = {
            "db.system.name": "mysql" if statement.dialect == "mysql" else "postgresql",
            "db.namespace": statement.facts.database,
            # The shape's text (placeholders for literals): the same for every
            # execution of one query, and made once, not per span.
            "db.query.text": shape.text if shape is not None else "",
            "sqlx.policy.verdict": outcome.decision.verdict.value,
            "sqlx.path": statement.path.value,
        }
        if outcome.decision.rule:
            attributes["sqlx.policy.rule"] = outcome.decision.rule
        if outcome.rows is not None:
            attributes["db.response.returned_rows"] = outcome.rows
        if outcome.error_sqlstate:
            attributes["db.response.status_code"] = outcome.error_sqlstate
        name, events = "FUNCTION_CALL", []
        if shape is not None:
            if shape.air is None:
                shape.air = _shape_air(shape, statement.sql, self._lowering)
            name, events = shape.air.name, shape.air.events
            attributes.update(shape.air.attributes)
            plan = shape.plan
            if plan is not None:
                attributes["sqlx.copilot.score"] = plan.score
                attributes["sqlx.copilot.class"] = plan.klass
                attributes["sqlx.copilot.model"] = plan.model
                attributes["sqlx.copilot.strategy"] = (
                    "auto-prepare" if outcome.decision.prepared is not None else "forward"
                )
                if plan.plan_hash:
                    attributes["sqlx.plan.hash"] = plan.plan_hash
        context = _PROPAGATOR.extract({"traceparent": parent[0]}) if parent else None
        if context is None and outcome.decision.trace_id:
            sampled = trace.TraceFlags(trace.TraceFlags.SAMPLED)
            remote = trace.SpanContext(int(outcome.decision.trace_id, 16), random.getrandbits(64),
                                       is_remote=True, trace_flags=sampled)  # fmt: skip
            context = trace.set_span_in_context(trace.NonRecordingSpan(remote))
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
        for hook in ("prepare", "masks", "unpreparable"):
            if hasattr(inner, hook):
                setattr(self, hook, getattr(inner, hook))

    def decide(self, statement: Statement) -> Decision:
        return self.inner.decide(statement)

    def observe(self, outcome: Outcome) -> None:
        self.telemetry.record(outcome)
        self.inner.observe(outcome)
