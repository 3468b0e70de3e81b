"""Masks and row filters as statement rewrites (checked as text; the integration tests
run the rewritten statements on a real server)."""

from __future__ import annotations

import pytest

from sqlx import air
from sqlx.agents import mask
from sqlx.agents.policy import Catalog, Who, evaluate
from sqlx.config.policy import Policy

CATALOG = Catalog(columns={"public.customers": ("id", "email"), "public.orders": ("id", "total")},
                  builtin_functions=frozenset(("count", "lower", "length")))  # fmt: skip
WHO = Who("app", "shop")


def _policy(**rule: object) -> Policy:
    return Policy.model_validate({"tags": {"customers.email": {"pii": "yes"}}, "rules": [
        {"name": "r", "when": {"tags": {"pii": "yes"}}, **rule}]})  # fmt: skip


def _rewrite(sql: str, policy: Policy) -> str:
    graphs = air.lower_all(sql)
    outcome = evaluate(graphs, WHO, policy, CATALOG)
    return mask.rewrite(graphs, policy, WHO, CATALOG, {f.rule for f in outcome.findings})


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("redact", "ELSE '****' END AS email"),
        ("null", "CAST(NULL AS text) AS email"),
        ("hash", "encode(sha256(convert_to(CAST(email AS text), 'UTF8')), 'hex') AS email"),
        ("partial", '"left"(CAST(email AS text), 2) || repeat('),
        ("sql:upper({col})", "upper(email) AS email"),
    ],
)
def test_each_mask_kind(kind: str, expected: str) -> None:
    out = _rewrite("SELECT email FROM customers", _policy(action="mask", mask=kind))
    assert expected in out and out.endswith("AS customers")


def test_filters_reach_reads_and_writes() -> None:
    policy = Policy.model_validate({"rules": [{"name": "own-rows", "action": "filter",
        "when": {"tables": ["public.orders"]}, "predicate": "total < 100"}]})  # fmt: skip
    out = _rewrite("SELECT count(*) FROM orders o", policy)
    assert out == ("SELECT count(*) FROM (SELECT id, total FROM public.orders WHERE total < 100)"
                   " AS o")  # fmt: skip
    assert _rewrite("DELETE FROM orders WHERE id = 1", policy) == (
        "DELETE FROM orders WHERE id = 1 AND total < 100")  # fmt: skip
    assert _rewrite("UPDATE orders SET total = 1", policy).endswith("WHERE total < 100")


def test_what_cannot_be_rewritten_is_refused() -> None:
    policy = _policy(action="mask")
    with pytest.raises(mask.Refused, match="cannot rewrite"):
        _rewrite("SELECT email FROM customers TABLESAMPLE SYSTEM (50)", policy)
    with pytest.raises(mask.Refused, match="whole-row"):
        _rewrite("UPDATE customers SET id = id RETURNING customers", policy)
    with pytest.raises(mask.Refused, match="filter, join, group or sort"):
        _rewrite("SELECT id FROM customers c JOIN orders o ON o.id = length(c.email)", policy)
    allowed = _policy(action="mask", on_inference="allow")
    assert "****" in _rewrite("SELECT id FROM customers WHERE email = 'x'", allowed)
    graphs = air.lower_all("SELECT email FROM customers")
    with pytest.raises(mask.Refused, match="catalog"):
        mask.rewrite(graphs, policy, WHO, Catalog(), {"r"})


def test_a_cte_named_like_a_masked_table_is_left_alone() -> None:
    out = _rewrite("WITH customers AS (SELECT 1 AS email) SELECT email FROM customers",
                   _policy(action="mask"))  # fmt: skip
    assert out == "WITH customers AS (SELECT 1 AS email) SELECT email FROM customers"
