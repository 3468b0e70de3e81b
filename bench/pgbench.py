"""`sqlxos bench pgbench`: pgbench -S direct, through PgBouncer and through sqlx-os.

One run starts a throwaway PostgreSQL, PgBouncer (Debian package, session
mode) and two proxies on free ports — pass-through (no policy, telemetry
off) and the full pipeline (a policy pack tagging pgbench's tables in ways
pgbench's own query does not touch, telemetry at its defaults) — then
alternates the four targets round by round so that drift on the machine
hits them alike. It writes medians and ratios to bench/RESULTS.md and the
raw samples to bench/results/*.json. With --profile it also runs the full
pipeline under cProfile for one extra pass and records where its time goes
(measured separately: the profiler slows it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import pstats
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sqlx.bench.report import update_section
from sqlx.proxy.embedded import LocalCluster, client_binary, free_port

TARGETS = ("direct", "pgbouncer", "sqlx", "sqlx-full")
# Tags and rules on pgbench's tables that `SELECT abalance ... WHERE aid = ?` does not
# trigger: every statement is still lowered (once per shape), evaluated and counted.
BENCH_PACK = """
policy:
  fail_closed: true
  tags:
    public.pgbench_accounts.filler: {sensitivity: pii}
    public.pgbench_branches: {region: eu}
  rules:
    - {name: mask-pii, when: {tags: {sensitivity: pii}}, action: mask}
    - {name: branches-eu-only, when: {tables: [public.pgbench_branches], users: [app_us]},
       action: deny}
    - {name: no-unbounded-delete, when: {statements: [DELETE, UPDATE], has_where: false},
       action: deny}
    - {name: audit-history, when: {tables: [public.pgbench_history]}, action: audit}
"""


def _machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem_gb:.0f} GiB, {platform.platform()}"


def _pgbouncer_bin() -> str:
    found = shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
    )
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "pgbouncer"], check=True, env=env)
        return "/usr/sbin/pgbouncer"
    raise SystemExit("pgbouncer is not installed (Debian: apt-get install pgbouncer)")


def _wait_port(port: int, timeout: float = 30) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def _start_pgbouncer(workdir: Path, upstream_port: int, account: str | None) -> tuple:
    port = free_port()
    ini = workdir / "pgbouncer.ini"
    ini.write_text(
        "[databases]\n"
        f"* = host=127.0.0.1 port={upstream_port}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\n"
        f"unix_socket_dir =\nauth_type = trust\nauth_file = {workdir / 'users.txt'}\n"
        "pool_mode = session\nmax_client_conn = 200\ndefault_pool_size = 50\n"
        f"logfile = {workdir / 'pgbouncer.log'}\npidfile = {workdir / 'pgbouncer.pid'}\n"
        "ignore_startup_parameters = extra_float_digits\n"
    )
    (workdir / "users.txt").write_text('"postgres" ""\n')
    cmd = [_pgbouncer_bin(), str(ini)]
    if os.geteuid() == 0 and account:
        import pwd

        entry = pwd.getpwnam(account)
        for f in workdir.iterdir():
            os.chown(f, entry.pw_uid, entry.pw_gid)
        os.chown(workdir, entry.pw_uid, entry.pw_gid)
        cmd = [cmd[0], "-u", account, str(ini)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_port(port)
    return proc, port


def _start_sqlx(workdir: Path, upstream_dsn: str, full: bool, profile_to: Path | None = None,
                name: str | None = None, env: dict[str, str] | None = None) -> tuple:  # fmt: skip
    """The proxy: pass-through (no policy, telemetry and auto-prepare off), or the full
    pipeline (with `env` overrides)."""
    port = free_port()
    cmd = [sys.executable]
    if profile_to is not None:
        cmd += ["-m", "cProfile", "-o", str(profile_to)]
    name = name or ("full" if full else "pass")
    cmd += ["-m", "sqlx.cli.main", "proxy", "--upstream", upstream_dsn,
            "--listen", f"127.0.0.1:{port}", "--http-listen", f"127.0.0.1:{free_port()}",
            "--data-dir", str(workdir / f"var-{name}")]  # fmt: skip
    environ = {**os.environ, "SQLX_LOG__LEVEL": "warning", **(env or {})}
    if full:
        pack = workdir / "bench-pack.yaml"
        pack.write_text(BENCH_PACK)
        cmd += ["--policy", str(pack)]
    else:
        environ["SQLX_TELEMETRY__ENABLED"] = "false"
        environ["SQLX_AIF__AUTO_PREPARE__ENABLED"] = "false"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=environ)  # fmt: skip
    _wait_port(port)
    return proc, port


def _pgbench(port: int, mode: str, clients: int, seconds: int,
             script: tuple[str, ...] = ("-S",)) -> dict[str, float]:  # fmt: skip
    dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres?sslmode=disable"
    jobs = min(clients, os.cpu_count() or 1)
    out = subprocess.run(
        [client_binary("pgbench"), "-n", *script, "-M", mode, "-c", str(clients), "-j", str(jobs),
         "-T", str(seconds), dsn],
        capture_output=True, text=True, timeout=seconds + 60,
    )  # fmt: skip
    if out.returncode:
        raise RuntimeError(f"pgbench failed on port {port}: {out.stderr}")
    tps = float(re.search(r"tps = ([\d.]+)", out.stdout)[1])
    lat = float(re.search(r"latency average = ([\d.]+) ms", out.stdout)[1])
    failed = re.search(r"number of failed transactions: (\d+)", out.stdout)
    done = re.search(r"actually processed: (\d+)", out.stdout)
    return {"tps": tps, "latency_ms": lat, "failed": int(failed[1]) if failed else 0,
            "transactions": int(done[1]) if done else 0}  # fmt: skip


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _profile(workdir: Path, dsn: str, seconds: int) -> list[str]:
    stats_file = workdir / "proxy.prof"
    proc, port = _start_sqlx(workdir, dsn, full=True, profile_to=stats_file)
    try:
        _pgbench(port, "simple", 16, seconds)
    finally:
        _stop(proc)
    stats = pstats.Stats(str(stats_file))
    total = stats.total_tt  # type: ignore[attr-defined]
    rows = []
    for (file, line, func), (_cc, nc, tt, _ct, _callers) in sorted(
        stats.stats.items(),  # type: ignore[attr-defined]
        key=lambda kv: kv[1][2],
        reverse=True,
    )[:15]:
        where = f"{Path(file).name}:{line}" if line else file
        rows.append(f"| {func} | {where} | {nc} | {tt:.2f} | {100 * tt / total:.1f}% |")
    return rows


def bench_servers(prefix: str) -> tuple[Path, LocalCluster, subprocess.Popen, int]:
    """A throwaway PostgreSQL with pgbench's tables (scale 10) and PgBouncer in front of it:
    (work folder, cluster, PgBouncer, PgBouncer's port)."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(workdir, 0o755)
    cluster = LocalCluster(workdir / "pgdata", settings={"max_connections": "100",
                                                         "shared_buffers": "256MB"})  # fmt: skip
    cluster.start()
    try:
        subprocess.run([client_binary("pgbench"), "-i", "-s", "10", "-q", cluster.dsn()],
                       check=True, capture_output=True)  # fmt: skip
        bouncer_dir = workdir / "pgbouncer"
        bouncer_dir.mkdir()
        account = cluster.account.pw_name if cluster.account else None
        bouncer, bouncer_port = _start_pgbouncer(bouncer_dir, cluster.port, account)
    except BaseException:
        cluster.stop("immediate")
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    return workdir, cluster, bouncer, bouncer_port


def run(rounds: int, seconds: int, clients: list[int], modes: list[str], profile: bool,
        out_dir: Path) -> dict:  # fmt: skip
    workdir, cluster, bouncer, bouncer_port = bench_servers("sqlx-bench-")
    procs: list[subprocess.Popen] = [bouncer]
    try:
        dsn = cluster.dsn()
        sqlx, sqlx_port = _start_sqlx(workdir, dsn, full=False)
        full, full_port = _start_sqlx(workdir, dsn, full=True)
        procs += [sqlx, full]
        ports = {"direct": cluster.port, "pgbouncer": bouncer_port, "sqlx": sqlx_port,
                 "sqlx-full": full_port}  # fmt: skip
        samples: list[dict] = []
        for r in range(rounds):
            for mode in modes:
                for c in clients:
                    # Rotate the order each round so no target always runs first.
                    k = r % len(TARGETS)
                    order = TARGETS[k:] + TARGETS[:k]
                    for target in order:
                        res = _pgbench(ports[target], mode, c, seconds)
                        samples.append({"round": r, "mode": mode, "clients": c,
                                        "target": target, **res})  # fmt: skip
                        print(f"round {r} {mode:8} c={c:<3} {target:9} tps={res['tps']:.0f}",
                              flush=True)  # fmt: skip
        profile_rows = _profile(workdir, dsn, seconds) if profile else []
    finally:
        for p in procs:
            _stop(p)
        cluster.stop("immediate")
        shutil.rmtree(workdir, ignore_errors=True)
    return {"samples": samples, "profile": profile_rows}


def _median(samples: list[dict], mode: str, clients: int, target: str, key: str) -> float:
    return statistics.median(
        s[key] for s in samples if (s["mode"], s["clients"], s["target"]) == (mode, clients, target)
    )


def write_results(result: dict, args: argparse.Namespace, command: str, out_dir: Path) -> str:
    samples = result["samples"]
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    lines = [
        "## Wire proxy: pgbench -S, direct vs PgBouncer vs sqlx-os (pass-through and full)",
        "",
        f"- date: {stamp}",
        f"- machine: {_machine()}",
        f"- command: `{command}`",
        f"- pgbench -S (select-only, scale 10), {args.rounds} rounds x {args.seconds} s per "
        "cell, targets alternated in rotating order; figures are medians over rounds.",
        "- all targets, pgbench and PostgreSQL share the same machine.",
        "- pass-through: no policy, telemetry off. full: a policy pack tagging pgbench's "
        "tables (its query triggers no rule, but every statement is decided and counted), "
        "metrics, spans at the default 1 % sampling, fingerprint statistics.",
        "",
        "### pgbench -S throughput (TPS, median)",
        "",
        "| mode | clients | direct | PgBouncer | sqlx-os pass-through | sqlx-os full | "
        "full/pass-through | pass-through/PgBouncer | full/PgBouncer |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    modes = args.modes.split(",")
    clients = [int(c) for c in args.clients.split(",")]
    for mode in modes:
        for c in clients:
            d, b, s, f = (_median(samples, mode, c, t, "tps") for t in TARGETS)
            lines.append(f"| {mode} | {c} | {d:.0f} | {b:.0f} | {s:.0f} | {f:.0f} | "
                         f"{f / s:.2f}x | {s / b:.2f}x | {f / b:.2f}x |")  # fmt: skip
    lines += ["", "### Added latency per statement at 1 client (median, µs)", "",
              "| mode | direct latency | PgBouncer added | pass-through added | full added |",
              "| --- | ---: | ---: | ---: | ---: |"]  # fmt: skip
    if 1 in clients:
        for mode in modes:
            d, b, s, f = (_median(samples, mode, 1, t, "latency_ms") * 1000 for t in TARGETS)
            lines.append(f"| {mode} | {d:.0f} | {b - d:+.0f} | {s - d:+.0f} | {f - d:+.0f} |")
    failed = sum(s["failed"] for s in samples)
    lines += ["", f"Failed transactions over the whole run: {failed}."]
    if result["profile"]:
        lines += ["", "### Where the full pipeline's time goes (cProfile, simple, 16 clients, "
                  "separate pass)", "", "| function | where | calls | self s | share |",
                  "| --- | --- | ---: | ---: | ---: |", *result["profile"]]  # fmt: skip
    text = "\n".join(lines) + "\n"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results").mkdir(exist_ok=True)
    (out_dir / "results" / f"pgbench-{stamp.replace(':', '')}.json").write_text(
        json.dumps({"date": stamp, "machine": _machine(), "command": command, **result}, indent=1)
    )
    return text


def run_from_args(args: argparse.Namespace) -> int:
    clients = [int(c) for c in args.clients.split(",")]
    modes = args.modes.split(",")
    out_dir = Path(args.out)
    result = run(args.rounds, args.seconds, clients, modes, args.profile, out_dir)
    command = "sqlxos bench pgbench " + " ".join(sys.argv[3:])
    text = write_results(result, args, command.strip(), out_dir)
    update_section(out_dir / "RESULTS.md", "pgbench", text)
    print(text)
    return 0
