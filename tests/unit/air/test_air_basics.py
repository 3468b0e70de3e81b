"""AIR lowering, emission, identity and JSON on small, explicit cases."""

from __future__ import annotations

import pglast
import pytest

from sqlx import air
from sqlx.air import pg
from sqlx.air.api import clear_memos
from sqlx.air.model import AIRGraph


def _pg_tree(sql: str):
    return pg.strip_positions(pg.parse(sql))


def test_spec_round_trip_example_mysql_to_postgres() -> None:
    g = air.lower("SELECT name, age FROM users WHERE age > 30 LIMIT 10;", "mysql")
    assert g.kind == "SELECT"
    kinds = {n.kind for n in g.walk()}
    assert {"COLUMN", "WHERE", "GT", "LIMIT", "INTEGER"} <= kinds
    (limit,) = [n for n in g.walk() if n.kind == "LIMIT"]
    assert limit.type == "clause" and limit.value == 10
    out = air.emit(g, "postgres")
    assert _pg_tree(out) == _pg_tree("SELECT name, age FROM users WHERE age > 30 LIMIT 10")


@pytest.mark.parametrize(
    ("sql", "dialect"),
    [
        ("SELECT a FROM t LIMIT 10 OFFSET 5", "postgres"),
        ("SELECT a FROM t FETCH FIRST 10 ROWS ONLY", "postgres"),
        ("SELECT a FROM t LIMIT 5, 10", "mysql"),
        ("SELECT TOP 10 a FROM t", "tsql"),
        ("SELECT a FROM t FETCH FIRST 10 ROWS ONLY", "oracle"),
    ],
)
def test_every_limit_form_is_one_limit_node(sql: str, dialect: str) -> None:
    g = air.lower(sql, dialect)
    limits = [n for n in g.walk() if n.kind == "LIMIT"]
    assert len(limits) == 1 and limits[0].type == "clause"
    assert air.emit(g)  # re-emits in its own dialect


@pytest.mark.parametrize("dialect", ["postgres", "snowflake"])
def test_ilike_is_like_case_insensitive(dialect: str) -> None:
    g = air.lower("SELECT a FROM t WHERE b ILIKE 'x%'", dialect)
    (like,) = [n for n in g.walk() if n.kind == "LIKE"]
    assert like.attr("case_insensitive") is True


@pytest.mark.parametrize(
    ("sql", "scalar"),
    [("SELECT d -> 'k' FROM t", False), ("SELECT d ->> 'k' FROM t", True),
     ("SELECT d #>> '{a,b}' FROM t", True)],
)  # fmt: skip
def test_json_access_is_json_extract(sql: str, scalar: bool) -> None:
    g = air.lower(sql)
    (node,) = [n for n in g.walk() if n.kind == "JSON_EXTRACT"]
    assert node.attr("scalar") is scalar
    assert _pg_tree(air.emit(g)) == _pg_tree(sql)


@pytest.mark.parametrize("sql", ["SAVEPOINT sp1", "RELEASE SAVEPOINT sp1", "SAVEPOINT `a b`"])
@pytest.mark.parametrize("dialect", ["postgres", "mysql"])
def test_savepoints_are_transaction_statements_in_every_dialect(sql: str, dialect: str) -> None:
    if dialect == "postgres":
        sql = sql.replace("`", '"')
    graph = air.lower(sql, dialect)
    assert graph.kind == "TRANSACTION"
    assert air.emit(air.lower(air.emit(graph), dialect)) == air.emit(graph)
    assert "sp1" in air.emit(graph) or "a b" in air.emit(graph)


def test_parameters_are_nodes() -> None:
    g = air.lower("SELECT * FROM t WHERE a = $1 AND b = $2")
    assert sorted(n.value for n in g.walk() if n.kind == "PARAM") == [1, 2]
    g = air.lower("SELECT * FROM t WHERE a = ?", "mysql")
    assert [n.kind for n in g.walk() if n.kind == "PARAM"] == ["PARAM"]


def test_shared_subexpressions_are_one_node() -> None:
    g = air.lower("SELECT a + 1, a + 1 FROM t")
    adds = [n for n in g.walk() if n.kind == "ADD"]
    (target_list_parent,) = g.parents(adds[0].id)
    assert len(adds) == 1 and g[target_list_parent].kind == "TARGET"


def test_json_round_trip_and_emission_from_json() -> None:
    g = air.lower("WITH x AS (SELECT 1 AS v) SELECT v FROM x WHERE v IN (1, 2) ORDER BY v")
    data = g.to_json()
    assert list(data) == ["version", "root", "nodes"] and data["version"] == "4.0"
    back = AIRGraph.from_json(data)
    assert back == g
    assert air.emit(back) == air.emit(g)


def test_identity_hash_fingerprint_and_literals() -> None:
    a = air.lower("SELECT * FROM users WHERE id = 42")
    b = air.lower("select *  from users where id = 42")
    c = air.lower("SELECT * FROM users WHERE id = 7")
    assert a.hash64 == b.hash64 != c.hash64
    assert air.fingerprint(a) == air.fingerprint(c)
    assert air.fingerprint(a) == pglast.parser.fingerprint("SELECT * FROM users WHERE id = 42")
    assert air.literals(a) == [42] and air.literals(c) == [7]


def test_ids_do_not_depend_on_what_the_process_has_lowered_before() -> None:
    """The memos behind fast lowering never change an id: 1, 1.0 and true stay apart."""
    statements = ["SELECT 1 FROM t WHERE a = 1", "SELECT 1.0 FROM t WHERE a = 1.0",
                  "SELECT true FROM t WHERE a = true", "SELECT '1' FROM t WHERE a = '1'",
                  "SELECT 0 FROM t WHERE a = -0.0", "SELECT 0 FROM t WHERE a = 0.0"]  # fmt: skip
    warm = [air.lower(sql).to_json() for sql in statements * 2]
    clear_memos()
    cold = [air.lower(sql).to_json() for sql in statements * 2]
    assert warm == cold
    roots = {g["root"] for g in warm}
    assert len(roots) == len(statements)


def test_invalid_sql_is_a_lowering_error_with_position() -> None:
    with pytest.raises(air.LoweringError) as err:
        air.lower("SELECT FROM WHERE")
    assert err.value.position is not None and "syntax error" in err.value.message
    with pytest.raises(air.LoweringError):
        air.lower("SELECT (1", "mysql")


def test_multi_statement_needs_lower_all() -> None:
    graphs = air.lower_all("BEGIN; UPDATE t SET a = 1 WHERE id = 2; COMMIT")
    assert [g.kind for g in graphs] == ["TRANSACTION", "UPDATE", "TRANSACTION"]
    with pytest.raises(air.LoweringError, match="lower_all"):
        air.lower("SELECT 1; SELECT 2")


def test_cross_dialect_uses_target_forms() -> None:
    g = air.lower("SELECT a FROM t WHERE b ILIKE 'x%' LIMIT 10")
    tsql = air.emit(g, "tsql")
    assert "TOP 10" in tsql and "ILIKE" not in tsql.upper()
    assert "FETCH FIRST 10 ROWS ONLY" in air.emit(g, "oracle")


@pytest.mark.parametrize(
    ("sql", "target", "reason"),
    [
        ("SELECT * FROM t FOR UPDATE SKIP LOCKED", "sqlite", "FOR UPDATE"),
        ("SELECT a FROM t ORDER BY a FETCH FIRST 3 ROWS WITH TIES", "mysql", "WITH TIES"),
        ("CREATE TABLESPACE fast LOCATION '/ssd'", "tsql", "not modelled"),
    ],
)
def test_cross_dialect_emission_refuses_what_it_cannot_express(
    sql: str, target: str, reason: str
) -> None:
    with pytest.raises(air.EmissionError, match=reason):
        air.emit(air.lower(sql), target)


def test_with_ties_is_refused_whatever_the_origin_dialect() -> None:
    g = air.lower("SELECT a FROM t ORDER BY a FETCH FIRST 3 ROWS WITH TIES", "oracle")
    assert "WITH TIES" in air.emit(g, "postgres")
    with pytest.raises(air.EmissionError, match="WITH TIES"):
        air.emit(g, "mysql")
