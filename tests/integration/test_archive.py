"""The ATS archive of a real run: Parquet rows per query shape and window, no literal in them.

Statements of a few shapes (with literals a user would not want archived) go
through a real proxy to a real server; once the proxy has stopped, the
archive on disk holds one row per shape per window whose counts add up to
what ran, the shape's AIR features and reward, and none of the literals.
"""

from __future__ import annotations

import math
import secrets
import signal
import time
import urllib.request
from pathlib import Path

import psycopg
import pyarrow.compute as pc
import pytest

from sqlx.agents.archive import read
from sqlx.air.features import FEATURES
from tests.fixtures.fix_pg import PgServer
from tests.fixtures.fix_proxy import start_proxy

LITERAL = f"zz-literal-{secrets.token_hex(4)}-zz"
NUMBER = 918273645


def test_the_archive_holds_every_shape_and_no_literal(pg: PgServer, tmp_path: Path) -> None:
    config = {"aif": {"archive": {"window_s": 0.5, "flush_s": 1.0},
                      "reward": {"latency": 0.1}}}  # fmt: skip
    proxy = start_proxy(tmp_path, pg, config)
    try:
        with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
            for i in range(30):
                conn.execute(f"SELECT {NUMBER + i}, '{LITERAL}' || 'x'")
            for i in range(12):
                conn.execute("SELECT %s::int + 1", (NUMBER + i,), prepare=True)
            with pytest.raises(psycopg.errors.DivisionByZero):
                conn.execute(f"SELECT {NUMBER} / 0")
            time.sleep(1.2)  # a window closes while the proxy runs
        url = f"http://127.0.0.1:{proxy.http_port}/metrics"
        deadline = time.monotonic() + 10
        while "sqlx_archive_rows " not in (body := urllib.request.urlopen(url).read().decode()):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert "sqlx_reward " in body
    finally:
        proxy.signal(signal.SIGTERM)
        assert proxy.stop() == 0
    table = read(tmp_path / "var")
    assert "ai.reward.emit" in proxy.log()
    rows = table.to_pylist()
    by_text: dict[str, list[dict]] = {}
    for row in rows:
        by_text.setdefault(row["text"], []).append(row)
    concat = "SELECT $1, $2 || $3"
    assert sum(r["calls"] for r in by_text[concat]) == 30
    assert sum(r["calls"] for r in by_text["SELECT $1::int + $2"]) == 12
    (failed,) = by_text["SELECT $1 / $2"]
    assert failed["errors"] == 1 and failed["error_class"] == "22" and failed["error_rate"] == 1.0
    for row in rows:
        assert len(row["features"]) == len(FEATURES) and row["air_hash"]
        assert math.isfinite(row["reward"]) and row["latency_ms_p95"] >= 0
        assert row["window_start"] <= row["window_end"] and row["verdict"] == "allow"
    ok = by_text[concat][0]
    assert ok["summary"] == "SELECT" and ok["features"][FEATURES.index("literals")] == 0
    assert ok["reward"] > failed["reward"]
    # Nothing a statement carried as a value reached the archive.
    for column in table.column_names:
        values = table.column(column)
        if values.type == "string":
            assert not pc.any(pc.match_substring(values, LITERAL)).as_py(), column
            assert not pc.any(pc.match_substring(values, str(NUMBER)[:6])).as_py(), column
