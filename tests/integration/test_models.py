"""The plan cache and the reward model's lifecycle, against a real server and real files.

A proxy runs a workload and archives it; `sqlxos models train` trains a
version from that archive (staging, unapproved: not served); `promote
--approve` makes a running proxy serve it (spans, SHOW FINGERPRINTS and the
log say so); a byte flipped in the artifact makes `verify` fail and the
proxy refuse the model while it goes on answering queries.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psycopg
import pytest

from sqlx.models.registry import Registry
from tests.fixtures.fix_pg import PgServer
from tests.fixtures.fix_proxy import ProxyProcess, start_proxy

MODEL = "sqlx-reward-regressor-v1"


def _sqlxos(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sqlx.cli.main", *args], capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def _workload(proxy: ProxyProcess, rounds: int = 40) -> None:
    with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS m_items (id int PRIMARY KEY, v text)")
        conn.execute("INSERT INTO m_items SELECT g, 'v' || g FROM generate_series(1, 2000) g "
                     "ON CONFLICT DO NOTHING")  # fmt: skip
        for i in range(rounds):
            conn.execute(f"SELECT v FROM m_items WHERE id = {i + 1}").fetchall()
            conn.execute(f"SELECT count(*) FROM m_items WHERE v LIKE 'v{i}%'").fetchall()
            join = ("SELECT a.id FROM m_items a JOIN m_items b ON a.id = b.id + 1 "
                    f"WHERE a.id < {i * 10 + 5} ORDER BY a.v DESC LIMIT 3")  # fmt: skip
            conn.execute(join).fetchall()
            conn.execute(f"UPDATE m_items SET v = v WHERE id = {i + 1}")
            time.sleep(0.01)


def _wait_for(path: Path, text: str, timeout: float = 15) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = path.read_text() if path.exists() else ""
        if text in body:
            return body
        time.sleep(0.2)
    raise AssertionError(f"{text!r} not in {path}")


def _config(registry: Path) -> dict:
    return {"aif": {"archive": {"window_s": 0.3, "flush_s": 0.5},
                    "models": {"registry": str(registry)},
                    "plan_cache": {"ttl_s": 600}},
            "telemetry": {"sampling_ratio": 1.0}}  # fmt: skip


@pytest.fixture(scope="module")
def archive(pg: PgServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The archive of a real run through the proxy."""
    tmp = tmp_path_factory.mktemp("archive-run")
    proxy = start_proxy(tmp, pg, _config(tmp / "unused-registry"))
    try:
        _workload(proxy)
        time.sleep(1.0)
    finally:
        proxy.signal(signal.SIGTERM)
        assert proxy.stop() == 0
    return tmp / "var" / "ats"


def test_the_plan_cache_knows_each_shape(pg: PgServer, tmp_path: Path) -> None:
    proxy = start_proxy(
        tmp_path, pg, {**_config(tmp_path / "reg"), "admin": {"users": ["postgres"]}}
    )
    try:
        _workload(proxy, rounds=10)
        time.sleep(1.0)  # plans are sampled in the background
        with psycopg.connect(proxy.dsn(database="sqlx"), autocommit=True) as console:
            cur = console.execute("SHOW FINGERPRINTS")
            names = [c.name for c in cur.description]
            rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
        point = next(r for r in rows if r["query"] == "SELECT v FROM m_items WHERE id = $1")
        assert point["calls"] == "10" and point["strategy"] == "auto-prepare"
        assert int(point["prepared"]) >= 7  # all but the executions before the threshold
        assert point["plan_hash"] and point["class"] == "latency-sensitive"
        assert point["model"] == "sqlx-reward-regressor-v1@1.0.0"  # the shipped model, seeded
        join = next(r for r in rows if "JOIN" in r["query"])
        assert join["plan_hash"] and join["plan_hash"] != point["plan_hash"]
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{proxy.http_port}/metrics").read()
        ratio = next(line for line in metrics.decode().splitlines()
                     if line.startswith("sqlx_plan_cache_hit_ratio "))  # fmt: skip
        assert float(ratio.split()[1]) > 0.8  # 4 shapes, 40 statements: misses are first sights
    finally:
        proxy.signal(signal.SIGTERM)
        assert proxy.stop() == 0


def test_a_model_is_trained_approved_served_and_refused_when_tampered(
        pg: PgServer, archive: Path, tmp_path: Path) -> None:  # fmt: skip
    registry = tmp_path / "registry"
    trained = _sqlxos("models", "--registry", str(registry), "train", "--from", str(archive))
    assert trained.returncode == 0, trained.stderr
    assert "training [" in trained.stderr and "held_out_mae_ms" in trained.stdout
    (entry,) = Registry(registry).entries()
    assert (entry.stage, entry.approved) == ("staging", False)
    assert set(json.loads((registry / "registry.json").read_text())[0]) == {
        "model_id",
        "version",
        "sha256",
        "created",
        "metrics",
        "approved",
        "stage",
    }
    listed = _sqlxos("models", "--registry", str(registry), "list")
    assert f"{MODEL}@1.0.0" in listed.stdout and "staging" in listed.stdout

    proxy = start_proxy(tmp_path / "proxy", pg, _config(registry))
    spans = tmp_path / "proxy" / "var" / "spans.jsonl"
    try:
        assert "no prod, approved version" in proxy.log()  # staging: not served
        with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
            conn.execute("SELECT v FROM m_items WHERE id = 1").fetchall()
        assert '"sqlx.copilot.model": "heuristic"' in _wait_for(spans, "sqlx.copilot.score")

        refused = _sqlxos("models", "--registry", str(registry), "promote", entry.ref)
        assert refused.returncode == 1 and "--approve" in refused.stderr
        promoted = _sqlxos("models", "--registry", str(registry), "promote", entry.ref,
                           "--approve")  # fmt: skip
        assert promoted.returncode == 0, promoted.stderr
        proxy.signal(signal.SIGHUP)
        _wait_for(proxy.logfile, f'"served": "{entry.ref}"')
        with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
            conn.execute("SELECT v FROM m_items WHERE id = 2").fetchall()
        body = _wait_for(spans, f'"sqlx.copilot.model": "{entry.ref}"')
        span = json.loads(next(line for line in body.splitlines()
                               if f'"sqlx.copilot.model": "{entry.ref}"' in line))  # fmt: skip
        assert span["attributes"]["sqlx.copilot.class"] in ("latency-sensitive", "heavy")
        assert isinstance(span["attributes"]["sqlx.copilot.score"], float)
        assert "ai.model.update" in proxy.log()
        explained = (tmp_path / "proxy" / "var" / "explanations.jsonl").read_text()
        assert '"decision": "model-update"' in explained and entry.ref in explained

        artifact = Registry(registry).artifact(entry)
        data = bytearray(artifact.read_bytes())
        data[len(data) // 2] ^= 0xFF
        artifact.write_bytes(bytes(data))
        verify = _sqlxos("models", "--registry", str(registry), "verify")
        assert verify.returncode == 1 and "FAILED" in verify.stdout
        # A changed registry file is noticed; so is SIGHUP. The file changed: reload.
        proxy.signal(signal.SIGHUP)
        log = _wait_for(proxy.logfile, "refused: artifact")
        assert "sha256" in log
        with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
            assert conn.execute("SELECT v FROM m_items WHERE id = 3").fetchone() == ("v3",)
        assert '"served": "heuristic"' in proxy.log()
    finally:
        proxy.signal(signal.SIGTERM)
        assert proxy.stop() == 0
