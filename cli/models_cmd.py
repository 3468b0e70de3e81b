"""`sqlxos models train|list|verify|promote`: the reward model's lifecycle.

The registry is `<data_dir>/<aif.models.registry>` (default `./var/models`),
or `--registry DIR`. `train` reads the ATS archive (`--from DIR`, default
`<data_dir>/ats`) and registers a staging, unapproved version; `promote ID
--approve` is the person's sign-off that makes it the version the proxy
serves. `verify` checks every artifact's sha256 and exits 1 on a mismatch.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sqlx.config import ConfigError, load_config
from sqlx.models.registry import Registry, RegistryError


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("models", help="train, list, verify and promote the reward model")
    p.add_argument("--data-dir", help="state folder (default: the config's, else ./var)")
    p.add_argument("--config", help="YAML config file, for data_dir and aif.models")
    p.add_argument("--registry", help="registry folder (default <data_dir>/models)")
    msub = p.add_subparsers(dest="models", required=True)
    train = msub.add_parser("train", help="train a new version from the ATS archive")
    train.add_argument("--from", dest="source", help="archive folder (default <data_dir>/ats)")
    train.add_argument("--model-id", help="default: aif.models.reward_regressor")
    msub.add_parser("list", help="every registered version")
    msub.add_parser("verify", help="check every artifact's sha256 against the registry")
    promote = msub.add_parser("promote", help="make a version prod (needs --approve)")
    promote.add_argument("id", help="MODEL_ID@VERSION, or VERSION")
    promote.add_argument("--approve", action="store_true", help="the sign-off: required")


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config, {"data_dir": args.data_dir} if args.data_dir else {})
    except ConfigError as exc:
        print(f"sqlxos: invalid configuration: {exc}", file=sys.stderr)
        return 2
    registry = Registry(Path(args.registry) if args.registry
                        else config.data_dir / config.aif.models.registry)  # fmt: skip
    try:
        if args.models == "train":
            from sqlx.models.train import TrainingError, train

            source = Path(args.source) if args.source else config.data_dir / "ats"
            model_id = args.model_id or config.aif.models.reward_regressor
            try:
                entry, metrics = train(source, registry, model_id)
            except TrainingError as exc:
                print(f"sqlxos: cannot train: {exc}", file=sys.stderr)
                return 1
            print(f"registered {entry.ref} (stage {entry.stage}, approved {entry.approved})")
            print(json.dumps(metrics, indent=2))
            print(f"to serve it: sqlxos models promote {entry.ref} --approve")
            return 0
        if args.models == "list":
            for e in registry.entries():
                metrics = ", ".join(f"{k}={v}" for k, v in e.metrics.items()
                                    if k.startswith("held_out") or k == "rows")  # fmt: skip
                print(f"{e.ref:40} {e.stage:9} approved={str(e.approved).lower():5} "
                      f"{e.created} sha256={e.sha256[:12]} {metrics}")  # fmt: skip
            return 0
        if args.models == "verify":
            bad = 0
            for e in registry.entries():
                problem = registry.check(e)
                print(f"{e.ref}: {'FAILED: ' + problem if problem else 'ok'}")
                bad += problem is not None
            return 1 if bad else 0
        if args.models == "promote":
            entry = registry.promote(args.id, args.approve)
            print(f"{entry.ref} is prod and approved; a running proxy serves it within seconds")
            return 0
    except RegistryError as exc:
        print(f"sqlxos: {exc}", file=sys.stderr)
        return 1
    return 2
