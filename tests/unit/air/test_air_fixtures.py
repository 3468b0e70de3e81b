"""AIR fixture files: input, expected canonical kinds, expected SQL per target dialect."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sqlx import air
from sqlx.air import pg

FIXTURES = Path(__file__).resolve().parents[2] / "corpus" / "fixtures"
CASES = [case for f in sorted(FIXTURES.glob("*.yaml")) for case in yaml.safe_load(f.read_text())]


def _same(dialect: str, got: str, expected: str) -> bool:
    if dialect == "postgres":  # compare PostgreSQL by parse tree, as lossless is defined
        return pg.strip_positions(pg.parse(got)) == pg.strip_positions(pg.parse(expected))
    return got.strip().rstrip(";") == expected


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_fixture(case: dict) -> None:
    g = air.lower(case["sql"], case["dialect"])
    kinds = {n.kind for n in g.walk()}
    assert set(case["kinds"]) <= kinds
    assert not set(case.get("absent", [])) & kinds
    if "limit" in case:
        (limit,) = [n for n in g.walk() if n.kind == "LIMIT"]
        assert limit.value == case["limit"]
    for dialect, expected in case.get("emit", {}).items():
        assert _same(dialect, air.emit(g, dialect), expected), (dialect, air.emit(g, dialect))
