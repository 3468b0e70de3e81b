"""`sqlxos air`: lower, emit, transpile, plan, validate, hash and features from a terminal.

SQL comes as an argument or `-` for standard input; `emit` and `validate`
also read AIR JSON (what `lower` prints). Output is JSON unless it is SQL.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from sqlx import air
from sqlx.air.features import FEATURES, features, tokens
from sqlx.air.model import AIRGraph
from sqlx.air.plan import plan
from sqlx.air.validate import validate


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("air", help="the AIR SQL graph: lower, emit, transpile, plan ...")
    asub = p.add_subparsers(dest="air_command", required=True)
    for name, text in (("lower", "SQL -> AIR JSON"), ("plan", "SQL -> logical plan"),
                       ("hash", "SQL -> hash64 and fingerprint"),
                       ("features", "SQL -> feature vector and tokens"),
                       ("validate", "SQL or AIR JSON -> diagnostics"),
                       ("emit", "AIR JSON (or SQL) -> SQL in a dialect"),
                       ("transpile", "SQL in one dialect -> SQL in another")):  # fmt: skip
        c = asub.add_parser(name, help=text)
        c.add_argument("input", nargs="?", default="-", help="SQL, AIR JSON, or - for stdin")
        c.add_argument("--dialect", "--from", dest="dialect", default="postgres")
        if name in ("emit", "transpile"):
            c.add_argument("--to", required=True, help="postgres, mysql, sqlite, tsql, oracle ...")


def _graphs(text: str, dialect: str) -> list[AIRGraph]:
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        data = json.loads(stripped)
        return [AIRGraph.from_json(d) for d in (data if isinstance(data, list) else [data])]
    return air.lower_all(text, dialect)


def _one_or_many(items: list[Any]) -> Any:
    return items[0] if len(items) == 1 else items


def run(args: argparse.Namespace) -> int:
    text = sys.stdin.read() if args.input == "-" else args.input
    try:
        graphs = _graphs(text, args.dialect)
        cmd = args.air_command
        if cmd in ("emit", "transpile"):
            for g in graphs:
                print(air.emit(g, args.to) + ";")
            return 0
        if cmd == "lower":
            out: Any = _one_or_many([g.to_json() for g in graphs])
        elif cmd == "plan":
            out = _one_or_many([plan(g).to_json() for g in graphs])
        elif cmd == "hash":
            out = _one_or_many([{"hash64": f"{g.hash64:016x}", "fingerprint": air.fingerprint(g),
                                 "literals": air.literals(g)} for g in graphs])  # fmt: skip
        elif cmd == "features":
            out = _one_or_many([{"vector": dict(zip(FEATURES, features(g).tolist(), strict=True)),
                                 "tokens": tokens(g)} for g in graphs])  # fmt: skip
        else:
            diags = [[d.to_json() for d in validate(g)] for g in graphs]
            print(json.dumps(_one_or_many(diags), indent=2))
            return 1 if any(d["severity"] == "error" for ds in diags for d in ds) else 0
        print(json.dumps(out, indent=2, ensure_ascii=False, default=str))
        return 0
    except (air.LoweringError, air.EmissionError, ValueError) as exc:
        print(f"sqlxos air: {exc}", file=sys.stderr)
        return 2
