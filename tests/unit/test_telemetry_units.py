"""The parts of telemetry and the explanation log that need no server."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sqlx.agents.explain import Explanation, ExplanationLog, read
from sqlx.air.parameters import placeholder_text
from sqlx.proxy.decision import traceparent_of
from sqlx.proxy.telemetry import LatencyTable, statement_kind


def test_statement_kind_is_a_bounded_label() -> None:
    assert statement_kind("select 1") == "SELECT"
    assert statement_kind("  /* app=x */ -- note\n  WITH a AS (SELECT 1) SELECT * FROM a") == "WITH"
    assert statement_kind("frobnicate the database") == "OTHER"
    assert statement_kind("") == "FUNCTION_CALL"


def test_query_text_has_no_literals_and_no_comments() -> None:
    sql = "/*traceparent='00-ab-cd-01',user='x'*/ SELECT * FROM t WHERE a = 'secret' AND b = 42"
    assert placeholder_text(sql) == "SELECT * FROM t WHERE a = $1 AND b = $2"
    assert placeholder_text("not sql at all ((") == ""


def test_traceparent_is_read_from_a_sqlcommenter_comment() -> None:
    tid = "4bf92f3577b34da6a3ce929d0e0e4736"
    found = traceparent_of(f"SELECT 1 /*traceparent='00-{tid}-00f067aa0ba902b7-01'*/")
    assert found == (f"00-{tid}-00f067aa0ba902b7-01", tid, True)
    assert traceparent_of("SELECT 'traceparent'") is None


def test_latency_table_is_a_prometheus_histogram() -> None:
    table = LatencyTable((1.0, 10.0))
    for ms in (0.5, 1.0, 5.0, 50.0):
        table.add("SELECT", "allow", ms)
    registry = CollectorRegistry()
    registry.register(table)
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(registry)
                                                                   .decode())}  # fmt: skip
    buckets = {s.labels["le"]: s.value for s in families["sqlx_exec_latency_ms"].samples
               if s.name.endswith("_bucket")}  # fmt: skip
    assert buckets == {"1.0": 2.0, "10.0": 3.0, "+Inf": 4.0}
    (total,) = [s for s in families["sqlx_statements"].samples if s.name.endswith("_total")]
    assert total.value == 4 and total.labels == {"kind": "SELECT", "verdict": "allow"}


def test_the_explanation_log_rotates_by_size_and_expires_by_age(tmp_path: Path) -> None:
    old = tmp_path / "explanations.jsonl.4"
    old.write_text("{}\n")
    past = time.time() - 40 * 86400
    os.utime(old, (past, past))
    log = ExplanationLog(tmp_path, max_bytes=4096, keep=2, retention_days=30)
    for i in range(60):
        log.write(Explanation(id=f"ex_{i:04d}", decision="deny", reason="x" * 100))
    log.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["explanations.jsonl", "explanations.jsonl.1", "explanations.jsonl.2"]
    assert all(p.stat().st_size <= 4096 for p in tmp_path.iterdir())
    ids = [r["id"] for r in read(tmp_path)]
    assert ids == sorted(ids) and ids[-1] == "ex_0059"  # oldest first, newest kept
    assert json.loads((tmp_path / "explanations.jsonl").read_text().splitlines()[-1])["id"] == (
        "ex_0059")  # fmt: skip


def test_reward_follows_spec_4_1() -> None:
    from sqlx.agents.reward import Window, components, reward
    from sqlx.config.schema import RewardWeights

    w = Window(calls=10, latency_ms=2.0, errors=1, denied=2, connection_errors=1, cache_hits=5)
    assert components(w) == {"latency_ms": 2.0, "error_rate": 0.1, "policy_compliance": 0.8,
                             "cache_hit_ratio": 0.5, "availability": 0.9}  # fmt: skip
    weights = RewardWeights(latency=0.5, error_rate=2, policy_compliance=1, cache_hit_ratio=4,
                            availability=3)  # fmt: skip
    assert reward(w, weights) == pytest.approx(-1.0 - 0.2 + 0.8 + 2.0 + 2.7)
    slower = Window(10, 4.0, 1, 2, 1, 5)
    assert reward(slower, weights) < reward(w, weights)


def test_shape_windows_close_with_their_percentiles() -> None:
    from sqlx.proxy.telemetry import FingerprintStats

    stats = FingerprintStats()
    for ms in (0.1, 0.2, 0.3, 5.0):
        stats.add("SELECT 1", ms, None, "allow", 1)
    stats.add("SELECT 2", 1.0, "08006", "allow")
    (row,) = [r for r in stats.close_window() if r["errors"]]
    assert row["connection_errors"] == 1 and row["error_class"] == "08"
    (ok,) = [r for r in stats.close_window() if r["calls"]] or [None]
    assert ok is None  # a closed window starts empty
    stats.add("SELECT 3", 0.2, None, "deny")
    (denied,) = stats.close_window()
    assert denied["denied"] == 1 and denied["verdict"] == "deny"
