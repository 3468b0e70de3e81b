"""Typed configuration: the schema, the loader and the built-in defaults.

Imports nothing else of sqlx. Callers hold one `Config` snapshot and replace
it whole on reload (DESIGN.md: config is swapped, never edited in place).
"""

from sqlx.config.loader import ConfigError, load_config
from sqlx.config.schema import Config

__all__ = ["Config", "ConfigError", "load_config"]
