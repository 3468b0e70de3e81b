"""`sqlxos bench model`: the workload the shipped reward model is trained on, and the training.

A throwaway PostgreSQL with pgbench's tables (scale 1) and one proxy whose
archive closes a window every second. Three workloads run through it in
turn: pgbench -S (point selects), the TPC-B script (short writes), and a
script of heavier reads (scans, joins, aggregates, sorts) over the same
tables. The archive is then used to train a version into the registry in
`--registry` (default: the package's `models/`), which is promoted with
the sign-off of whoever runs this command: that is how the shipped default
model is rebuilt:

    sqlxos bench model --seconds 60
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from sqlx.bench.pgbench import _pgbench, _start_sqlx, _stop
from sqlx.models.registry import SHIPPED, Registry
from sqlx.models.train import train
from sqlx.proxy.embedded import LocalCluster, client_binary

HEAVY_SCRIPT = """
\\set aid random(1, 100000)
\\set bid random(1, 1)
SELECT count(*), avg(abalance) FROM pgbench_accounts WHERE abalance > -:aid;
SELECT a.bid, sum(a.abalance) FROM pgbench_accounts a JOIN pgbench_branches b ON a.bid = b.bid
  WHERE a.aid < :aid GROUP BY a.bid;
SELECT aid, abalance FROM pgbench_accounts WHERE aid BETWEEN :aid AND :aid + 500
  ORDER BY abalance DESC LIMIT 10;
SELECT t.tid, count(h.*) FROM pgbench_tellers t LEFT JOIN pgbench_history h ON h.tid = t.tid
  GROUP BY t.tid ORDER BY 2 DESC;
SELECT * FROM pgbench_branches WHERE bid = :bid;
"""


def run(seconds: int, registry_dir: Path) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="sqlx-model-"))
    os.chmod(workdir, 0o755)
    cluster = LocalCluster(workdir / "pgdata")
    cluster.start()
    proc = None
    try:
        dsn = cluster.dsn()
        subprocess.run([client_binary("pgbench"), "-i", "-s", "1", "-q", dsn], check=True,
                       capture_output=True)  # fmt: skip
        env = {"SQLX_AIF__ARCHIVE__WINDOW_S": "1", "SQLX_AIF__ARCHIVE__FLUSH_S": "5"}
        proc, port = _start_sqlx(workdir, dsn, full=True, name="model", env=env)
        script = workdir / "heavy.sql"
        script.write_text(HEAVY_SCRIPT)
        share = max(seconds // 3, 1)
        for label, flags in (("select-only", ("-S",)), ("tpcb", ()),
                             ("heavy", ("-f", str(script)))):  # fmt: skip
            result = _pgbench(port, "simple", 4, share, flags)
            print(f"{label}: {result['tps']:.0f} tps, {result['failed']} failed", flush=True)
        _stop(proc)
        proc = None
        archive = workdir / "var-model" / "ats"
        started = time.monotonic()
        registry = Registry(registry_dir)
        entry, metrics = train(archive, registry, "sqlx-reward-regressor-v1")
        metrics["train_wall_s"] = round(time.monotonic() - started, 3)
        promoted = registry.promote(entry.ref, approve=True)
        print(f"{promoted.ref}: stage {promoted.stage}, approved {promoted.approved}")
        print(json.dumps(metrics, indent=2))
        return {"entry": promoted.ref, "metrics": metrics}
    finally:
        if proc is not None:
            _stop(proc)
        cluster.stop("immediate")
        shutil.rmtree(workdir, ignore_errors=True)


def run_from_args(args: argparse.Namespace) -> int:
    run(args.seconds, Path(args.registry) if args.registry else SHIPPED)
    return 0
