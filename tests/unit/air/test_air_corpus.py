"""The corpora: every statement lowers; modelled statements round-trip losslessly.

Lossless for PostgreSQL means the emitted SQL parses (pglast) to the same
tree as the original, locations aside. A statement AIR does not model
becomes OPAQUE (exact text kept); the share of those is reported and bounded.
"""

from __future__ import annotations

from pathlib import Path

import pglast
import pytest

from sqlx import air
from sqlx.air import pg
from tests.corpus.generate import corpus

CORPUS = Path(__file__).resolve().parents[2] / "corpus"


def _handwritten(name: str) -> list[str]:
    text = (CORPUS / name).read_text()
    return [s.strip() for s in pglast.split(text, with_parser=False) if s.strip()]


def _lower_each(statements: list[str], dialect: str) -> tuple[list, list[tuple[str, str]]]:
    graphs, failures = [], []
    for sql in statements:
        try:
            graphs.append((sql, air.lower(sql, dialect)))
        except Exception as exc:  # the test reports every failure, of any kind
            failures.append((sql, f"{type(exc).__name__}: {exc}"))
    return graphs, failures


def test_postgres_corpus_size() -> None:
    assert len(_handwritten("postgres_handwritten.sql")) + len(corpus("postgres")) >= 1500


@pytest.mark.parametrize("source", ["handwritten", "generated"])
def test_every_postgres_statement_lowers_and_round_trips(source: str) -> None:
    statements = (_handwritten("postgres_handwritten.sql") if source == "handwritten"
                  else corpus("postgres"))  # fmt: skip
    graphs, failures = _lower_each(statements, "postgres")
    assert failures == []
    opaque = [sql for sql, g in graphs if g.kind == "OPAQUE"]
    assert len(opaque) <= len(graphs) // 100, opaque  # at least 99 % modelled
    dml_words = ("SELECT", "INSERT", "UPDATE", "DELETE", "WITH", "MERGE")
    dml = [sql for sql in opaque if sql.split()[0].upper() in dml_words]
    assert dml == []
    for sql, g in graphs:
        if g.kind != "OPAQUE":
            assert _pglast_tree(air.emit(g)) == _pglast_tree(sql)


def _pglast_tree(sql: str) -> object:
    """pglast's own parse tree (its AST, not the JSON reader AIR uses), positions aside."""
    return pg.strip_positions(tuple(raw(skip_none=True) for raw in pglast.parse_sql(sql)))


def test_json_reader_gives_pglast_trees() -> None:
    """AIR reads libpg_query's JSON with pglast's layout: the same tree, field for field."""
    for sql in _handwritten("postgres_handwritten.sql") + corpus("postgres"):
        ours = pg.parse(sql)
        assert ours == tuple(raw(skip_none=True) for raw in pglast.parse_sql(sql)), sql


def _mysql_handwritten() -> list[str]:
    text = (CORPUS / "mysql_handwritten.sql").read_text()
    lines = [ln for ln in text.splitlines() if not ln.startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";\n") if s.strip().rstrip(";")]


@pytest.mark.parametrize("source", ["handwritten", "generated"])
def test_every_mysql_statement_lowers_and_re_emits(source: str) -> None:
    statements = _mysql_handwritten() if source == "handwritten" else corpus("mysql")
    graphs, failures = _lower_each(statements, "mysql")
    assert failures == []
    modelled = [(sql, g) for sql, g in graphs if g.kind != "OPAQUE"]
    assert len(modelled) >= 0.9 * len(graphs), [s for s, g in graphs if g.kind == "OPAQUE"]
    # sqlglot writes some forms canonically (`->` as JSON_EXTRACT, `LIMIT 20, 10` as
    # LIMIT ... OFFSET): lossless here means emission is a fixed point.
    for sql, g in modelled:
        once = air.emit(g)
        assert air.emit(air.lower(once, "mysql")) == once, sql
