"""`sqlxos bench mysql`: sysbench oltp_read_only and oltp_point_select, direct vs sqlx-os.

One run uses the MariaDB/MySQL at 127.0.0.1:3306 (else a throwaway MariaDB),
prepares sysbench's tables in a database of its own, starts a proxy with the
MySQL listener (telemetry at its defaults, a policy pack whose rules do not
apply to the benchmark's user, so statements are counted and traced but not
evaluated), and alternates direct and proxied runs round by round. sysbench
uses server-side prepared statements, so COM_STMT_PREPARE/EXECUTE go through
the proxy. Medians and ratios go to bench/RESULTS.md, raw samples to
bench/results/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import pymysql

from sqlx.bench.mariadb import local_or_throwaway
from sqlx.bench.pgbench import _machine, _stop, _wait_port
from sqlx.bench.report import update_section
from sqlx.proxy.embedded import free_port

TESTS = ("oltp_point_select", "oltp_read_only")
TARGETS = ("direct", "sqlx-os")
DATABASE = "sqlx_sysbench"
PACK = """
policy:
  rules:
    - {name: audit-other-user, when: {users: [someone_else]}, action: audit}
"""


def _sysbench(test: str, port: int, threads: int, seconds: int, *extra: str) -> str:
    cmd = ["sysbench", test, "--db-driver=mysql", "--mysql-host=127.0.0.1",
           f"--mysql-port={port}", "--mysql-user=root", f"--mysql-db={DATABASE}",
           "--tables=4", "--table-size=10000", f"--threads={threads}", f"--time={seconds}",
           "--report-interval=0", *extra]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120)
    if out.returncode:
        raise RuntimeError(f"sysbench {test} failed on port {port}: {out.stderr or out.stdout}")
    return out.stdout


def _figures(output: str) -> dict[str, float]:
    def number(pattern: str) -> float:
        found = re.search(pattern, output)
        return float(found[1]) if found else 0.0

    return {"tps": number(r"transactions:\s+\d+\s+\(([\d.]+) per sec"),
            "qps": number(r"queries:\s+\d+\s+\(([\d.]+) per sec"),
            "latency_ms_avg": number(r"avg:\s+([\d.]+)"),
            "latency_ms_p95": number(r"95th percentile:\s+([\d.]+)"),
            "errors": number(r"ignored errors:\s+(\d+)")}  # fmt: skip


def run(rounds: int, seconds: int, threads: int) -> list[dict]:
    workdir = Path(tempfile.mkdtemp(prefix="sqlx-bench-mysql-"))
    os.chmod(workdir, 0o755)
    server, port = local_or_throwaway(workdir)
    proxy = None
    samples: list[dict] = []
    try:
        with pymysql.connect(host="127.0.0.1", port=port, user="root", autocommit=True) as conn:
            conn.cursor().execute(f"DROP DATABASE IF EXISTS {DATABASE}")
            conn.cursor().execute(f"CREATE DATABASE {DATABASE}")
        _sysbench("oltp_read_only", port, 4, 1, "prepare")
        pack = workdir / "pack.yaml"
        pack.write_text(PACK)
        proxy_port = free_port()
        # Only the MySQL listener is measured: the PostgreSQL side points nowhere (a DSN
        # keeps the proxy from starting its embedded PostgreSQL).
        cmd = [sys.executable, "-m", "sqlx.cli.main", "proxy", "--upstream",
               "postgresql://127.0.0.1:1/none", "--listen", f"127.0.0.1:{free_port()}",
               "--http-listen", f"127.0.0.1:{free_port()}", "--data-dir", str(workdir / "var"),
               "--policy", str(pack), "--mysql-listen", f"127.0.0.1:{proxy_port}",
               "--mysql-upstream", f"mysql://root@127.0.0.1:{port}"]  # fmt: skip
        env = {**os.environ, "SQLX_LOG__LEVEL": "warning"}
        proxy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 env=env)  # fmt: skip
        _wait_port(proxy_port)
        ports = {"direct": port, "sqlx-os": proxy_port}
        for r in range(rounds):
            for test in TESTS:
                order = TARGETS if r % 2 == 0 else TARGETS[::-1]
                for target in order:
                    figures = _figures(_sysbench(test, ports[target], threads, seconds, "run"))
                    samples.append({"round": r, "test": test, "target": target, **figures})
                    print(f"round {r} {test:18} {target:8} tps={figures['tps']:.0f} "
                          f"qps={figures['qps']:.0f}", flush=True)  # fmt: skip
    finally:
        if proxy is not None:
            _stop(proxy)
        with pymysql.connect(host="127.0.0.1", port=port, user="root", autocommit=True) as conn:
            conn.cursor().execute(f"DROP DATABASE IF EXISTS {DATABASE}")
        if server is not None:
            server.terminate()
            server.wait(30)
        shutil.rmtree(workdir, ignore_errors=True)
    return samples


def write_results(samples: list[dict], args: argparse.Namespace, command: str,
                  out_dir: Path) -> str:  # fmt: skip
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def median(test: str, target: str, key: str) -> float:
        return statistics.median(s[key] for s in samples
                                 if s["test"] == test and s["target"] == target)  # fmt: skip

    lines = [
        "## MySQL listener: sysbench, direct vs sqlx-os",
        "",
        f"- date: {stamp}",
        f"- machine: {_machine()}",
        f"- command: `{command}`",
        f"- sysbench 1.0 against MariaDB, 4 tables x 10,000 rows, {args.threads} threads, "
        f"{args.rounds} rounds x {args.seconds} s per cell, direct and proxied alternated; "
        "medians over rounds. sysbench uses server-side prepared statements.",
        "- sqlx-os: the MySQL listener with telemetry at its defaults and a policy pack whose "
        "rules do not apply to the benchmark's user (statements are counted and traced).",
        "",
        "| test | direct TPS | sqlx-os TPS | ratio | direct QPS | sqlx-os QPS | "
        "direct p95 ms | sqlx-os p95 ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for test in TESTS:
        d, p = median(test, "direct", "tps"), median(test, "sqlx-os", "tps")
        dq, pq = median(test, "direct", "qps"), median(test, "sqlx-os", "qps")
        d95 = median(test, "direct", "latency_ms_p95")
        p95 = median(test, "sqlx-os", "latency_ms_p95")
        lines.append(f"| {test} | {d:.0f} | {p:.0f} | {p / d:.2f}x | {dq:.0f} | {pq:.0f} | "
                     f"{d95:.2f} | {p95:.2f} |")  # fmt: skip
    errors = sum(s["errors"] for s in samples)
    lines += ["", f"Errors over the whole run: {errors:.0f}."]
    text = "\n".join(lines) + "\n"
    (out_dir / "results").mkdir(parents=True, exist_ok=True)
    (out_dir / "results" / f"mysql-{stamp.replace(':', '')}.json").write_text(
        json.dumps({"date": stamp, "machine": _machine(), "command": command,
                    "samples": samples}, indent=1))  # fmt: skip
    return text


def run_from_args(args: argparse.Namespace) -> int:
    if shutil.which("sysbench") is None:
        print("sysbench is not installed: apt-get install sysbench (Debian's package)",
              file=sys.stderr)  # fmt: skip
        return 2
    out_dir = Path(args.out)
    samples = run(args.rounds, args.seconds, args.threads)
    command = "sqlxos bench mysql " + " ".join(sys.argv[3:])
    text = write_results(samples, args, command.strip(), out_dir)
    update_section(out_dir / "RESULTS.md", "mysql", text)
    print(text)
    return 0
