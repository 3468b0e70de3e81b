"""Load a `Config` from YAML, environment variables and command-line overrides.

Precedence, lowest first: built-in defaults, the YAML file, `SQLX_...`
environment variables, explicit overrides. An environment variable names a
key path with `__` between levels: `SQLX_PROXY__LISTEN=0.0.0.0:6432`,
`SQLX_UPSTREAM__DSN=postgresql://app@db:5432/app`, `SQLX_DATA_DIR=/data`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from sqlx.config.schema import Config

ENV_PREFIX = "SQLX_"


class ConfigError(Exception):
    """A configuration that cannot be used; the message names the key path."""


def _set_path(tree: dict[str, Any], path: list[str], value: Any) -> None:
    node = tree
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[path[-1]] = value


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name.startswith(ENV_PREFIX + "TEST_"):
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX) :].split("__")]
        # YAML parsing gives env values the same types a config file would.
        _set_path(tree, path, yaml.safe_load(raw) if raw else raw)
    return tree


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _describe(err: ValidationError) -> str:
    lines = []
    for item in err.errors():
        path = ".".join(str(p) for p in item["loc"]) or "<root>"
        lines.append(f"{path}: {item['msg']}")
    return "; ".join(lines)


def load_config(
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Build one validated snapshot. A missing file means the built-in defaults."""
    tree: dict[str, Any] = {}
    if path is not None and Path(path).exists():
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
        tree = loaded
    tree = _merge(tree, _env_overrides(os.environ if environ is None else environ))
    tree = _merge(tree, overrides or {})
    try:
        return Config.model_validate(tree)
    except ValidationError as exc:
        where = f"{path}: " if path else ""
        raise ConfigError(f"{where}{_describe(exc)}") from exc
