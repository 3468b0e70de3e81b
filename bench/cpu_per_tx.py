"""`sqlxos bench cpu`: the proxy's CPU per transaction, part by part.

Throughput through the proxy follows its CPU per transaction when the
machine is shared with pgbench and PostgreSQL, so this measures that
directly: for each configuration (pass-through; telemetry without spans;
telemetry at its defaults; a policy pack alone; the full pipeline) it runs
`pgbench -n -S -c 16 -j 2` through a fresh proxy and reads the proxy's
utime+stime from /proc before and after. Configurations run one after the
other, twice, in alternating order; the table has the medians.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from sqlx.bench.pgbench import BENCH_PACK, _machine, _pgbench, _stop, _wait_port
from sqlx.bench.report import update_section
from sqlx.proxy.embedded import LocalCluster, client_binary, free_port

CONFIGS: dict[str, tuple[dict[str, str], bool]] = {
    "pass-through (no policy, telemetry off)": ({"SQLX_TELEMETRY__ENABLED": "false"}, False),
    "telemetry on, no spans (sampling_ratio 0)": ({"SQLX_TELEMETRY__SAMPLING_RATIO": "0"}, False),
    "telemetry on, spans at the default 1 %": ({}, False),
    "policy pack, telemetry off": ({"SQLX_TELEMETRY__ENABLED": "false"}, True),
    "full pipeline (policy + telemetry)": ({}, True),
}


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime, after the command name


def _one(workdir: Path, dsn: str, env: dict[str, str], policy: bool, mode: str,
         seconds: int) -> tuple[float, float]:  # fmt: skip
    """(CPU µs per transaction, TPS) of one proxy process under one pgbench run."""
    port = free_port()
    cmd = [sys.executable, "-m", "sqlx.cli.main", "proxy", "--upstream", dsn, "--listen",
           f"127.0.0.1:{port}", "--http-listen", f"127.0.0.1:{free_port()}",
           "--data-dir", str(workdir / f"var-{port}")]  # fmt: skip
    if policy:
        pack = workdir / "pack.yaml"
        pack.write_text(BENCH_PACK)
        cmd += ["--policy", str(pack)]
    proc = subprocess.Popen(cmd, env={**os.environ, "SQLX_LOG__LEVEL": "warning", **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        _wait_port(port)
        before = _cpu_ticks(proc.pid)
        result = _pgbench(port, mode, 16, seconds)
        after = _cpu_ticks(proc.pid)
    finally:
        _stop(proc)
    cpu_s = (after - before) / os.sysconf("SC_CLK_TCK")
    return cpu_s * 1e6 / max(result["transactions"], 1), result["tps"]


def run(seconds: int, rounds: int) -> dict[tuple[str, str], list[float]]:
    workdir = Path(tempfile.mkdtemp(prefix="sqlx-cpu-"))
    os.chmod(workdir, 0o755)
    cluster = LocalCluster(workdir / "pgdata", settings={"max_connections": "100"})
    cluster.start()
    samples: dict[tuple[str, str], list[float]] = {}
    try:
        dsn = cluster.dsn()
        subprocess.run([client_binary("pgbench"), "-i", "-s", "1", "-q", dsn], check=True,
                       capture_output=True)  # fmt: skip
        names = list(CONFIGS)
        for r in range(rounds):
            for mode in ("simple", "prepared"):
                for name in names if r % 2 == 0 else reversed(names):
                    env, policy = CONFIGS[name]
                    cpu, tps = _one(workdir, dsn, env, policy, mode, seconds)
                    samples.setdefault((name, mode), []).append(cpu)
                    print(f"round {r} {mode:8} {name:45} {cpu:6.1f} µs/tx  tps={tps:.0f}",
                          flush=True)  # fmt: skip
    finally:
        cluster.stop("immediate")
        shutil.rmtree(workdir, ignore_errors=True)
    return samples


def run_from_args(args: argparse.Namespace) -> int:
    samples = run(args.seconds, args.rounds)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    lines = ["## Proxy CPU per transaction, part by part", "", f"- date: {stamp}",
             f"- machine: {_machine()}",
             f"- command: `sqlxos bench cpu --seconds {args.seconds} --rounds {args.rounds}`",
             "- pgbench -S, 16 clients, scale 1; the proxy's utime+stime per transaction, "
             "median over rounds; a fresh proxy per measurement.", "",
             "| configuration | simple: CPU µs/tx | prepared: CPU µs/tx |",
             "| --- | ---: | ---: |"]  # fmt: skip
    for name in CONFIGS:
        simple = statistics.median(samples[(name, "simple")])
        prepared = statistics.median(samples[(name, "prepared")])
        lines.append(f"| {name} | {simple:.1f} | {prepared:.1f} |")
    text = "\n".join(lines) + "\n"
    update_section(Path(args.out) / "RESULTS.md", "cpu", text)
    print(text)
    return 0
