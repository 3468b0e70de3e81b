"""The ATS archive: what every query shape did, one Parquet row per shape per window.

The proxy's telemetry closes a window every `aif.archive.window_s` seconds
and hands over one row per query shape that ran in it: counts, latency
(mean, p50, p95, max), rows, errors and their class, the policy verdict. The
archive adds, off the event loop in its own thread:

- the shape's AIR: its hash, summary and feature vector (`air.features`),
  lowered once per shape from the placeholder text — the `sqlx.learn.embed`
  stream of the spec;
- the reward of spec §4.1 and its inputs (`agents.reward`) — the
  `sqlx.learn.reward` stream;

and writes Parquet files under `<data_dir>/ats/`: a file is closed at least
every `flush_s` seconds or `max_rows_per_file` rows, so every file on disk
is complete and readable; files past `retention_days` or beyond `max_bytes`
in total are removed, oldest first.

Rows hold no literal: the text is the shape's, with every literal a
placeholder, and nothing else comes from a statement's values.
"""

from __future__ import annotations

import datetime as dt
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import structlog

from sqlx.agents.reward import Window, components, reward
from sqlx.air.api import summary_of
from sqlx.air.features import FEATURES, FEATURES_VERSION, of_text
from sqlx.config.schema import ArchiveConfig, RewardWeights
from sqlx.models.features import NO_PLAN, PLAN_FEATURES

log = structlog.get_logger("sqlx.archive")

DIR_NAME = "ats"
SCHEMA = pa.schema([
    ("window_start", pa.timestamp("ms", tz="UTC")),
    ("window_end", pa.timestamp("ms", tz="UTC")),
    ("fingerprint", pa.string()),
    ("air_hash", pa.string()),
    ("kind", pa.string()),
    ("summary", pa.string()),
    ("text", pa.string()),
    ("features_version", pa.int16()),
    ("features", pa.list_(pa.float32(), len(FEATURES))),
    ("calls", pa.int64()),
    ("latency_ms_mean", pa.float64()),
    ("latency_ms_p50", pa.float64()),
    ("latency_ms_p95", pa.float64()),
    ("latency_ms_max", pa.float64()),
    ("rows", pa.int64()),
    ("errors", pa.int64()),
    ("error_rate", pa.float64()),
    ("error_class", pa.string()),
    ("verdict", pa.string()),
    ("plan_hash", pa.string()),
    ("plan_features", pa.list_(pa.float32(), len(PLAN_FEATURES))),
    ("strategy", pa.string()),
    ("cache_hit_ratio", pa.float64()),
    ("policy_compliance", pa.float64()),
    ("availability", pa.float64()),
    ("reward", pa.float64()),
])  # fmt: skip


class _ShapeAir:
    __slots__ = ("features", "hash", "summary")

    def __init__(self, text: str) -> None:
        graphs, self.features = of_text(text)
        self.hash = f"{graphs[0].hash64:016x}" if graphs else None
        self.summary = summary_of(graphs) if graphs else None


class Archive:
    """Takes closed windows from the event loop; writes them from its own thread."""

    def __init__(self, data_dir: Path, config: ArchiveConfig, weights: RewardWeights,
                 on_window: Callable[[float, int], None] | None = None) -> None:  # fmt: skip
        self.dir = Path(data_dir) / DIR_NAME
        self.config = config
        self.weights = weights
        self.on_window = on_window  # (mean reward, rows) of each window, for metrics
        self.rows_written = 0
        self._queue: queue.SimpleQueue[tuple[list[dict[str, Any]], float, float] | None]
        self._queue = queue.SimpleQueue()
        self._air: dict[str, _ShapeAir] = {}
        self._buffer: list[dict[str, Any]] = []
        self._buffer_since = 0.0
        self._seq = 0
        self._thread = threading.Thread(target=self._run, name="sqlx-archive", daemon=True)
        self._thread.start()

    def submit(self, rows: list[dict[str, Any]], start: float, end: float) -> None:
        """A closed window (epoch seconds): never blocks the caller."""
        if rows:
            self._queue.put((rows, start, end))

    def close(self) -> None:
        """Write what is queued and buffered, then stop."""
        self._queue.put(None)
        self._thread.join(timeout=30)

    # --- the writer thread ------------------------------------------------------------

    def _run(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        while True:
            try:
                item = self._queue.get(timeout=self.config.flush_s)
            except queue.Empty:
                item = ()  # type: ignore[assignment]
            if item is None:
                self._flush()
                return
            try:
                if item:
                    self._add(*item)
                age = time.monotonic() - self._buffer_since
                full = len(self._buffer) >= self.config.max_rows_per_file
                if self._buffer and (full or age >= self.config.flush_s):
                    self._flush()
            except Exception:  # the archive must never take the proxy down
                log.exception("archive write failed")
                self._buffer = []

    def _add(self, rows: list[dict[str, Any]], start: float, end: float) -> None:
        if not self._buffer:
            self._buffer_since = time.monotonic()
        total_reward = 0.0
        for row in rows:
            air = self._air.get(row["fingerprint"])
            if air is None:
                if len(self._air) >= 100_000:
                    self._air.clear()
                air = self._air[row["fingerprint"]] = _ShapeAir(row["text"])
            window = Window(row["calls"], row["latency_ms_mean"], row["errors"], row["denied"],
                            row["connection_errors"], row.get("prepared", 0))  # fmt: skip
            parts = components(window)
            value = reward(window, self.weights)
            total_reward += value * row["calls"]
            self._buffer.append({
                "window_start": dt.datetime.fromtimestamp(start, dt.UTC),
                "window_end": dt.datetime.fromtimestamp(end, dt.UTC),
                "fingerprint": row["fingerprint"], "air_hash": air.hash, "kind": row["kind"],
                "summary": air.summary, "text": row["text"],
                "features_version": FEATURES_VERSION, "features": air.features,
                "calls": row["calls"], "latency_ms_mean": row["latency_ms_mean"],
                "latency_ms_p50": row["latency_ms_p50"], "latency_ms_p95": row["latency_ms_p95"],
                "latency_ms_max": row["latency_ms_max"], "rows": row["rows"],
                "errors": row["errors"], "error_rate": parts["error_rate"],
                "error_class": row["error_class"], "verdict": row["verdict"],
                "plan_hash": row.get("plan_hash"), "strategy": row.get("strategy", "forward"),
                "plan_features": row.get("plan_features", NO_PLAN),
                "cache_hit_ratio": parts["cache_hit_ratio"],
                "policy_compliance": parts["policy_compliance"],
                "availability": parts["availability"], "reward": value,
            })  # fmt: skip
        if self.on_window is not None:
            calls = sum(r["calls"] for r in rows)
            self.on_window(total_reward / max(calls, 1), len(rows))

    def _flush(self) -> None:
        if not self._buffer:
            return
        rows, self._buffer = self._buffer, []
        self._seq += 1
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
        path = self.dir / f"ats-{stamp}-{self._seq:06d}.parquet"
        tmp = path.with_suffix(".parquet.tmp")
        pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), tmp, compression="zstd")
        tmp.rename(path)  # readers only ever see whole files
        self.rows_written += len(rows)
        self._expire()

    def _expire(self) -> None:
        files = sorted(self.dir.glob("ats-*.parquet"))
        cutoff = time.time() - self.config.retention_days * 86400
        total = sum(f.stat().st_size for f in files)
        for f in files:
            if f.stat().st_mtime < cutoff or total > self.config.max_bytes:
                total -= f.stat().st_size
                f.unlink(missing_ok=True)


def read(data_dir: Path) -> pa.Table:
    """Every complete archive file under `data_dir` (or a folder of them), as one table."""
    folder = Path(data_dir)
    if (folder / DIR_NAME).is_dir():
        folder = folder / DIR_NAME
    files = sorted(folder.glob("ats-*.parquet"))
    if not files:
        return SCHEMA.empty_table()
    return pa.concat_tables([pq.read_table(f, schema=SCHEMA) for f in files])
