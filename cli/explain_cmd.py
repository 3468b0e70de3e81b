"""`sqlxos explain tail [-f] [--json]` and `sqlxos explain show ID`: read the explanation log.

The data dir comes from `--data-dir`, else from the config file (`--config`),
else `./var`. Output is one readable line per record, coloured on a
terminal; `--json` prints the records as they are stored.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from sqlx.agents.explain import FILE_NAME, read
from sqlx.config import ConfigError, load_config

_COLOURS = {"deny": "31", "mask": "33", "filter": "33", "audit": "36", "allow": "32"}


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("explain", help="read the explanation log")
    p.add_argument("--data-dir", help="state folder (default: the config's, else ./var)")
    p.add_argument("--config", help="YAML config file, for its data_dir")
    esub = p.add_subparsers(dest="explain", required=True)
    tail = esub.add_parser("tail", help="the latest records; -f to follow")
    tail.add_argument("-f", "--follow", action="store_true")
    tail.add_argument("-n", "--lines", type=int, default=20)
    tail.add_argument("--json", action="store_true", help="records as stored, one per line")
    show = esub.add_parser("show", help="one record, whole")
    show.add_argument("id")


def _data_dir(args: argparse.Namespace) -> Path:
    if args.data_dir:
        return Path(args.data_dir)
    try:
        return load_config(args.config).data_dir
    except ConfigError as exc:
        raise SystemExit(f"sqlxos: invalid configuration: {exc}") from exc


def line(record: dict[str, Any], colour: bool) -> str:
    """One record as a readable line: time, decision, who, what, why, id."""
    decision = str(record.get("decision", "?"))
    tag = f"{decision.upper():6}"
    if colour:
        tag = f"\033[{_COLOURS.get(decision, '0')};1m{tag}\033[0m"
    evidence = record.get("evidence") or {}
    what = record.get("summary") or ""
    cols = ", ".join(evidence.get("columns") or evidence.get("tables") or [])
    who = f"{record.get('user', '?')}@{record.get('database', '?')}"
    rule = evidence.get("rule", "")
    parts = [str(record.get("time", "")), tag, who, what + (f" [{cols}]" if cols else ""),
             f"rule={rule}" if rule else "", "-", str(record.get("reason", "")),
             f"({record.get('id', '')})"]  # fmt: skip
    return " ".join(p for p in parts if p)


def _follow(path: Path, start: int) -> Iterator[dict[str, Any]]:
    """New records as they are appended (across a rotation)."""
    position = start
    while True:
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            size = 0
        if size < position:  # rotated: the file was replaced by a new, shorter one
            position = 0
        if size > position:
            with path.open(encoding="utf-8") as fh:
                fh.seek(position)
                chunk = fh.read()
            complete = chunk.rsplit("\n", 1)[0] if "\n" in chunk else ""
            position += len(complete.encode("utf-8")) + (1 if complete else 0)
            for text in complete.splitlines():
                if text.strip():
                    try:
                        yield json.loads(text)
                    except json.JSONDecodeError:
                        continue
        else:
            time.sleep(0.2)


def _print(record: dict[str, Any], as_json: bool, out: TextIO) -> None:
    colour = out.isatty() and not as_json
    out.write((json.dumps(record, ensure_ascii=False) if as_json else line(record, colour)) + "\n")
    out.flush()


def run(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    data_dir = _data_dir(args)
    if args.explain == "show":
        for record in read(data_dir):
            if record.get("id") == args.id:
                out.write(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
                if record.get("trace_id"):
                    out.write(f"trace: {record['trace_id']}\n")
                return 0
        print(f"sqlxos: no explanation {args.id} in {data_dir}", file=sys.stderr)
        return 1
    records = list(read(data_dir))
    for record in records[-args.lines :] if args.lines > 0 else []:
        _print(record, args.json, out)
    if args.follow:
        path = data_dir / FILE_NAME
        start = path.stat().st_size if path.exists() else 0
        try:
            for record in _follow(path, start):
                _print(record, args.json, out)
        except KeyboardInterrupt:
            return 0
    return 0
