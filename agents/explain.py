"""The explanation log: one JSON line per action the proxy or the copilot takes.

Fields follow the copilot spec §8 (decision, reason, evidence, confidence,
policy impact) plus what an operator needs to find the statement again: id,
time, trace id, AIR id, fingerprint, user, database, statement summary. No
literal value ever appears: statements are named by their summary and
fingerprint, never by their text.

Records are queued by the hot path and written by a background thread, so a
slow disk never holds a statement. `explanations.jsonl` in the data dir is
rotated by size (`explanations.jsonl.1`, ... up to `keep` files) and files
older than the retention are removed.
"""

from __future__ import annotations

import json
import queue
import secrets
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FILE_NAME = "explanations.jsonl"


def new_id() -> str:
    return "ex_" + secrets.token_hex(6)


@dataclass(frozen=True)
class Explanation:
    id: str
    decision: str  # allow | deny | mask | filter | audit | ...
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)
    confidence: float = 1.0
    policy_impact: str = ""
    trace_id: str | None = None
    air_id: str | None = None
    fingerprint: str | None = None
    user: str | None = None
    database: str | None = None
    summary: str | None = None
    agent: str = "policy"
    time: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["time"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(self.time)) + (
            f".{int(self.time * 1000) % 1000:03d}Z")  # fmt: skip
        return {k: v for k, v in out.items() if v not in (None, "", {})}


class ExplanationLog:
    """Appends explanations off the hot path; keeps the latest in memory for `SHOW`."""

    def __init__(self, data_dir: Path, max_bytes: int = 64 << 20, keep: int = 5,
                 retention_days: float = 30.0, recent: int = 1000) -> None:  # fmt: skip
        self.path = Path(data_dir) / FILE_NAME
        self.max_bytes = max_bytes
        self.keep = keep
        self.retention_s = retention_days * 86400
        self.recent: deque[Explanation] = deque(maxlen=recent)
        self._queue: queue.SimpleQueue[Explanation | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="sqlx-explain", daemon=True)
        self._thread.start()

    def write(self, explanation: Explanation) -> None:
        self.recent.append(explanation)
        self._queue.put(explanation)

    def close(self) -> None:
        """Write what is queued, then stop the writer."""
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._expire()
        while True:
            item = self._queue.get()
            batch = [item]
            while not self._queue.empty() and len(batch) < 512:
                batch.append(self._queue.get())
            lines = [json.dumps(e.to_json(), ensure_ascii=False) + "\n" for e in batch
                     if e is not None]  # fmt: skip
            if lines:
                self._append(lines)
            if None in batch:
                return

    def _append(self, lines: list[str]) -> None:
        """Append, rotating whenever the next line would take the file past `max_bytes`."""
        try:
            size = self.path.stat().st_size if self.path.exists() else 0
            chunk: list[str] = []
            for line in lines:
                n = len(line.encode("utf-8"))
                if size and size + n > self.max_bytes:
                    self._write(chunk)
                    chunk, size = [], 0
                    self._rotate()
                chunk.append(line)
                size += n
            self._write(chunk)
        except OSError:
            pass  # the log must never stop the proxy; the records stay in `recent`

    def _write(self, chunk: list[str]) -> None:
        if chunk:
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write("".join(chunk))

    def _rotate(self) -> None:
        for n in range(self.keep - 1, 0, -1):
            older = self.path.with_name(f"{FILE_NAME}.{n}")
            if older.exists():
                older.replace(self.path.with_name(f"{FILE_NAME}.{n + 1}"))
        self.path.replace(self.path.with_name(f"{FILE_NAME}.1"))
        stale = self.path.with_name(f"{FILE_NAME}.{self.keep + 1}")
        if stale.exists():
            stale.unlink()
        self._expire()

    def _expire(self) -> None:
        cutoff = time.time() - self.retention_s
        for old in self.path.parent.glob(f"{FILE_NAME}.*"):
            try:
                if old.stat().st_mtime < cutoff:
                    old.unlink()
            except OSError:
                pass


def read(data_dir: Path) -> Iterator[dict[str, Any]]:
    """Every record on disk, oldest first (rotated files included)."""
    base = Path(data_dir) / FILE_NAME
    rotated = sorted(base.parent.glob(f"{FILE_NAME}.*"),
                     key=lambda p: -int(p.suffix[1:]) if p.suffix[1:].isdigit() else 0)  # fmt: skip
    for path in [*rotated, base]:
        if not path.exists():
            continue
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if line:
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError:
                        continue
