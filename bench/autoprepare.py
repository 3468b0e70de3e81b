"""`sqlxos bench autoprepare`: simple-protocol pgbench with auto-prepare on and off.

One run starts a throwaway PostgreSQL (scale 10), PgBouncer (session mode)
and two full-pipeline proxies (the bench policy pack, telemetry at its
defaults, the plan cache and the shipped reward model) that differ only in
`aif.auto_prepare.enabled`. For `-S -M simple` and the TPC-B script with
`-M simple`, at each client count, the four targets run in rotating order
round by round. Besides TPS it reports the PostgreSQL server's CPU time per
transaction: the CPU of every process of the cluster over the run (the
postmaster's reaped children plus the live ones), from /proc. It also
times the plan cache inline (a hit, a miss that scores a new shape with
the ONNX model) and reads the shipped model's training time and size.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from sqlx.bench.pgbench import _machine, _pgbench, _start_sqlx, _stop, bench_servers
from sqlx.bench.report import update_section
from sqlx.proxy.embedded import LocalCluster

TARGETS = ("direct", "pgbouncer", "sqlx-ap-off", "sqlx-ap-on")
SCRIPTS = {"select-only": ("-S",), "tpcb": ()}
_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str]:
    raw = Path(f"/proc/{pid}/stat").read_text()
    return raw[raw.rindex(")") + 2 :].split()  # fields from the 3rd (state) on


def server_cpu_s(postmaster: int) -> tuple[float, dict[int, float]]:
    """(the postmaster's own and its reaped children's CPU, each live child's CPU), seconds."""
    fields = _stat(postmaster)
    # utime, stime, cutime, cstime are fields 14-17: indexes 11-14 from the 3rd field.
    reaped = sum(int(f) for f in fields[11:15]) / _TICK
    live: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            child = _stat(int(entry.name))
        except (OSError, ValueError):
            continue
        if int(child[1]) == postmaster:
            live[int(entry.name)] = (int(child[11]) + int(child[12])) / _TICK
    return reaped, live


def cpu_between(before: tuple[float, dict[int, float]],
                after: tuple[float, dict[int, float]]) -> float:  # fmt: skip
    """CPU the cluster used between two readings: an exited child's whole time is in the
    reaped total at the end, so its time at the start is taken off."""
    return after[0] - before[0] + sum(after[1].values()) - sum(before[1].values())


def _postmaster(cluster: LocalCluster) -> int:
    return int((cluster.datadir / "postmaster.pid").read_text().split()[0])


def inline_costs() -> dict[str, float]:
    """The plan cache on the hot path's loop: a hit, a scoring with the ONNX model, and a
    miss (a new shape: lowered, scored), in µs."""
    from sqlx.agents.plan_cache import PlanCache
    from sqlx.config.schema import ModelsConfig, PlanCacheConfig, RewardWeights
    from sqlx.models.registry import SHIPPED, Registry
    from sqlx.models.serving import load

    plans = PlanCache(PlanCacheConfig(explain=False), ModelsConfig(), RewardWeights())
    loaded = load(Registry(SHIPPED), ModelsConfig().reward_regressor)
    plans.serve(loaded.model)
    n = 2000
    started = time.perf_counter()
    for i in range(n):
        plans.lookup(None, f"fp{i}", f"SELECT a, b FROM t{i} WHERE id = $1 AND c > $2", "SELECT",
                     "postgres")  # fmt: skip
    miss = (time.perf_counter() - started) / n * 1e6
    entry = plans.entries["fp0"]
    started = time.perf_counter()
    for _ in range(n):
        plans.score(entry)
    score = (time.perf_counter() - started) / n * 1e6
    entry.expires = time.monotonic() + 3600
    started = time.perf_counter()
    for _ in range(n * 50):
        plans.lookup(entry, "fp0", "", "SELECT", "postgres")
    hit = (time.perf_counter() - started) / (n * 50) * 1e6
    return {"hit_us": hit, "score_us": score, "miss_us": miss,
            "model": loaded.model.version if loaded.model else "heuristic"}  # fmt: skip


def run(rounds: int, seconds: int, clients: list[int]) -> dict:
    workdir, cluster, bouncer, bouncer_port = bench_servers("sqlx-bench-ap-")
    procs: list[subprocess.Popen] = [bouncer]
    samples: list[dict] = []
    try:
        dsn = cluster.dsn()
        off, off_port = _start_sqlx(workdir, dsn, full=True, name="ap-off",
                                    env={"SQLX_AIF__AUTO_PREPARE__ENABLED": "false"})  # fmt: skip
        on, on_port = _start_sqlx(workdir, dsn, full=True, name="ap-on")
        procs += [off, on]
        ports = {"direct": cluster.port, "pgbouncer": bouncer_port, "sqlx-ap-off": off_port,
                 "sqlx-ap-on": on_port}  # fmt: skip
        postmaster = _postmaster(cluster)
        for r in range(rounds):
            for script, flags in SCRIPTS.items():
                for c in clients:
                    k = r % len(TARGETS)
                    for target in TARGETS[k:] + TARGETS[:k]:
                        before = server_cpu_s(postmaster)
                        res = _pgbench(ports[target], "simple", c, seconds, flags)
                        time.sleep(0.5)  # the run's backends exit and are reaped
                        cpu = cpu_between(before, server_cpu_s(postmaster))
                        res["server_cpu_us_per_tx"] = cpu * 1e6 / max(res["transactions"], 1)
                        samples.append({"round": r, "script": script, "clients": c,
                                        "target": target, **res})  # fmt: skip
                        print(f"round {r} {script:11} c={c:<3} {target:11} "
                              f"tps={res['tps']:.0f} server={res['server_cpu_us_per_tx']:.1f}"
                              "us/tx", flush=True)  # fmt: skip
    finally:
        for p in procs:
            _stop(p)
        cluster.stop("immediate")
        shutil.rmtree(workdir, ignore_errors=True)
    return {"samples": samples, "inline": inline_costs()}


def _median(samples: list[dict], script: str, clients: int, target: str, key: str) -> float:
    return statistics.median(s[key] for s in samples
                             if (s["script"], s["clients"], s["target"]) ==
                             (script, clients, target))  # fmt: skip


def write_results(result: dict, args: argparse.Namespace, command: str, out_dir: Path) -> str:
    from sqlx.models.registry import SHIPPED, Registry

    samples = result["samples"]
    clients = [int(c) for c in args.clients.split(",")]
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    lines = [
        "## Auto-prepare: pgbench -M simple, direct vs PgBouncer vs sqlx-os (auto-prepare off/on)",
        "",
        f"- date: {stamp}",
        f"- machine: {_machine()}",
        f"- command: `{command}`",
        f"- pgbench -M simple, scale 10, {args.rounds} rounds x {args.seconds} s per cell, "
        "targets alternated in rotating order; medians over rounds.",
        "- both sqlx-os targets run the full pipeline (the bench policy pack, telemetry, plan "
        "cache, shipped reward model); they differ only in `aif.auto_prepare.enabled`.",
        "- server CPU: CPU seconds of every PostgreSQL process over the run (/proc), per "
        "transaction. pgbench, the proxies and PostgreSQL share the machine's cores.",
        "",
        "| script | clients | direct TPS | PgBouncer TPS | ap off TPS | ap on TPS | "
        "on/off | on/PgBouncer | on/direct | server µs/tx direct | PgBouncer | ap off | ap on | "
        "on/direct server CPU |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | "
        "---: | ---: |",
    ]
    for script in SCRIPTS:
        for c in clients:
            d, b, off, on = (_median(samples, script, c, t, "tps") for t in TARGETS)
            cd, cb, coff, con = (_median(samples, script, c, t, "server_cpu_us_per_tx")
                                 for t in TARGETS)  # fmt: skip
            lines.append(f"| {script} | {c} | {d:.0f} | {b:.0f} | {off:.0f} | {on:.0f} | "
                         f"{on / off:.2f}x | {on / b:.2f}x | {on / d:.2f}x | {cd:.1f} | "
                         f"{cb:.1f} | {coff:.1f} | {con:.1f} | {con / cd:.2f}x |")  # fmt: skip
    failed = sum(s["failed"] for s in samples)
    inline = result["inline"]
    lines += ["", f"Failed transactions over the whole run: {failed}.", "",
              f"Plan cache inline ({inline['model']}): hit {inline['hit_us']:.2f} µs; "
              f"scoring a shape with the ONNX model {inline['score_us']:.1f} µs; a miss "
              f"(new shape: AIR lowered from its text, features, scored) "
              f"{inline['miss_us']:.0f} µs. A miss happens once per shape and model version "
              "(and after the TTL), on the event loop after the statement's I/O."]  # fmt: skip
    shipped = Registry(SHIPPED).entries()
    if shipped:
        m = shipped[-1].metrics
        lines += ["", f"Shipped model {shipped[-1].ref}: trained in {m.get('train_s', 0):.2f} s "
                  f"on {m.get('rows', 0):.0f} archive rows ({m.get('shapes', 0):.0f} shapes), "
                  f"{m.get('size_bytes', 0):.0f} bytes, held-out MAE "
                  f"{m.get('held_out_mae_ms', 0):.3f} ms (R² {m.get('held_out_r2', 0):.3f} on "
                  "log latency); rebuilt with `sqlxos bench model --seconds 60`."]  # fmt: skip
    text = "\n".join(lines) + "\n"
    (out_dir / "results").mkdir(parents=True, exist_ok=True)
    (out_dir / "results" / f"autoprepare-{stamp.replace(':', '')}.json").write_text(
        json.dumps({"date": stamp, "machine": _machine(), "command": command, **result}, indent=1)
    )
    return text


def run_from_args(args: argparse.Namespace) -> int:
    clients = [int(c) for c in args.clients.split(",")]
    out_dir = Path(args.out)
    result = run(args.rounds, args.seconds, clients)
    command = "sqlxos bench autoprepare " + " ".join(sys.argv[3:])
    text = write_results(result, args, command.strip(), out_dir)
    update_section(out_dir / "RESULTS.md", "autoprepare", text)
    print(text)
    return 0
