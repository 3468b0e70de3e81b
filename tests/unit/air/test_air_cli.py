"""`sqlxos air` from the command line."""

from __future__ import annotations

import json
import subprocess
import sys


def sqlxos(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sqlx.cli.main", "air", *args], input=stdin,
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def test_lower_then_emit_through_a_pipe() -> None:
    lowered = sqlxos("lower", "--dialect", "mysql", "SELECT name FROM users LIMIT 10")
    assert lowered.returncode == 0 and json.loads(lowered.stdout)["version"] == "4.0"
    emitted = sqlxos("emit", "--to", "tsql", "-", stdin=lowered.stdout)
    assert emitted.stdout.strip() == "SELECT TOP 10 name FROM users;"


def test_transpile_plan_hash_features_validate() -> None:
    out = sqlxos("transpile", "--from", "postgres", "--to", "oracle", "SELECT a FROM t LIMIT 2")
    assert out.stdout.strip() == "SELECT a FROM t FETCH FIRST 2 ROWS ONLY;"
    assert json.loads(sqlxos("plan", "SELECT a FROM t").stdout)["steps"][0]["op"] == "scan"
    assert json.loads(sqlxos("hash", "SELECT 1 FROM t WHERE a = 9").stdout)["literals"] == [1, 9]
    assert json.loads(sqlxos("features", "SELECT a FROM t").stdout)["vector"]["tables"] == 1
    assert sqlxos("validate", "SELECT 1").stdout.strip() == "[]"


def test_invalid_sql_exits_2_with_the_parsers_message() -> None:
    out = sqlxos("lower", "SELEC 1")
    assert out.returncode == 2 and 'syntax error at or near "SELEC"' in out.stderr
