"""`sqlxos`: the command line. Subcommands arrive with the parts they drive."""

from __future__ import annotations

import argparse
import sys


def _proxy_args(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("proxy", help="run the wire-protocol proxy")
    p.add_argument("--config", help="YAML config file (missing file: built-in defaults)")
    p.add_argument("--listen", help="PostgreSQL listener HOST:PORT (default 127.0.0.1:6432)")
    p.add_argument(
        "--upstream",
        help="postgresql://user@host:port/db of the real server; "
        "unset: start an embedded PostgreSQL in the data dir",
    )
    p.add_argument("--data-dir", help="state folder (default ./var)")
    p.add_argument("--http-listen", help="health/metrics HOST:PORT (default 127.0.0.1:9187)")
    p.add_argument("--mysql-listen", help="MySQL listener HOST:PORT (default 127.0.0.1:6033)")
    p.add_argument(
        "--mysql-upstream",
        help="mysql://user[:password]@host:port[/db]; set: the MySQL listener runs",
    )
    p.add_argument("--policy", action="append", metavar="FILE",
                   help="a policy pack file (repeatable; replaces policy.packs)")  # fmt: skip


def _bench_args(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("bench", help="benchmarks: direct vs PgBouncer vs sqlx-os")
    bsub = p.add_subparsers(dest="bench", required=True)
    pg = bsub.add_parser("pgbench", help="pgbench -S, alternating direct/PgBouncer/sqlx-os")
    pg.add_argument("--rounds", type=int, default=3)
    pg.add_argument("--seconds", type=int, default=15)
    pg.add_argument("--clients", default="1,16")
    pg.add_argument("--modes", default="simple,prepared")
    pg.add_argument("--profile", action="store_true", help="also profile the proxy under load")
    pg.add_argument("--out", default="bench")
    cpu = bsub.add_parser("cpu", help="the proxy's CPU per transaction, part by part")
    cpu.add_argument("--seconds", type=int, default=8)
    cpu.add_argument("--rounds", type=int, default=2)
    cpu.add_argument("--out", default="bench")
    ap = bsub.add_parser("autoprepare", help="pgbench -M simple, auto-prepare off and on")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--clients", default="8,16")
    ap.add_argument("--out", default="bench")
    my = bsub.add_parser("mysql", help="sysbench against MariaDB, direct vs sqlx-os")
    my.add_argument("--rounds", type=int, default=3)
    my.add_argument("--seconds", type=int, default=10)
    my.add_argument("--threads", type=int, default=8)
    my.add_argument("--out", default="bench")
    model = bsub.add_parser("model", help="run the reward model's workload and train on it")
    model.add_argument("--seconds", type=int, default=60)
    model.add_argument("--registry", help="registry folder (default: the shipped models/)")
    dc = bsub.add_parser("decide", help="deciding statements with new literals, in process")
    dc.add_argument("--runs", type=int, default=1000)
    dc.add_argument("--out", default="bench")
    ab = bsub.add_parser("air", help="AIR lowering, planning and emission times")
    ab.add_argument("--runs", type=int, default=2000)
    ab.add_argument("--out", default="bench")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sqlxos", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _proxy_args(sub)
    _bench_args(sub)
    from sqlx.cli import air_cmd, explain_cmd, models_cmd

    air_cmd.add_parser(sub)
    explain_cmd.add_parser(sub)
    models_cmd.add_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "proxy":
        from sqlx.cli.run_proxy import run_proxy

        return run_proxy(args)
    if args.command == "air":
        return air_cmd.run(args)
    if args.command == "explain":
        return explain_cmd.run(args)
    if args.command == "models":
        return models_cmd.run(args)
    if args.command == "bench" and args.bench == "cpu":
        from sqlx.bench.cpu_per_tx import run_from_args as run_cpu

        return run_cpu(args)
    if args.command == "bench" and args.bench == "autoprepare":
        from sqlx.bench.autoprepare import run_from_args as run_autoprepare

        return run_autoprepare(args)
    if args.command == "bench" and args.bench == "mysql":
        from sqlx.bench.sysbench_mysql import run_from_args as run_mysql

        return run_mysql(args)
    if args.command == "bench" and args.bench == "model":
        from sqlx.bench.model_workload import run_from_args as run_model

        return run_model(args)
    if args.command == "bench" and args.bench == "decide":
        from sqlx.bench.decide_bench import run_from_args as run_decide

        return run_decide(args)
    if args.command == "bench" and args.bench == "air":
        from sqlx.bench.air_bench import run_from_args as run_air

        return run_air(args)
    if args.command == "bench":
        from sqlx.bench.pgbench import run_from_args

        return run_from_args(args)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
