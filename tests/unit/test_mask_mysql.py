"""Masks and filters written in MySQL's dialect (`agents.mask_mysql`), on a fixed catalog."""

from __future__ import annotations

import pytest

from sqlx.agents import mask_mysql
from sqlx.agents import policy as pol
from sqlx.agents.facts import Catalog, Who
from sqlx.agents.mask import Refused
from sqlx.air.api import lower_all
from sqlx.config.policy import Policy

POLICY = Policy.model_validate({
    "fail_closed": True,
    "tags": {"customers.email": {"sensitivity": "pii"}},
    "rules": [
        {"name": "mask-pii", "when": {"tags": {"sensitivity": "pii"}}, "action": "mask"},
        {"name": "small", "when": {"tables": ["orders"]}, "action": "filter",
         "predicate": "total < 6"},
    ],
})  # fmt: skip
CATALOG = Catalog(
    columns={"shop.customers": ("id", "name", "email"), "shop.orders": ("id", "total")},
    types={"shop.customers.email": ("varchar(64)", True)},
    spelled={"shop.customers.email": "Email"},
    dialect="mysql", read_ok=True, search_path=("shop",),
)  # fmt: skip
WHO = Who("app", "shop")
MASK = "CASE WHEN `{}` IS NULL THEN NULL ELSE '****' END AS `{}`"


def _rewrite(sql: str) -> str:
    graphs = lower_all(sql, "mysql")
    outcome = pol.evaluate(graphs, WHO, POLICY, CATALOG)
    assert outcome.action in ("mask", "filter"), outcome
    return mask_mysql.rewrite(graphs, POLICY, WHO, CATALOG, {f.rule for f in outcome.findings},
                              sql)  # fmt: skip


def test_only_the_table_reference_is_replaced_in_the_clients_text() -> None:
    sql = "select count(*), c.email, 1+1 from shop.customers c force index (a, b) where id = ?"
    derived = (f"(SELECT `id`, `name`, {MASK.format('email', 'email')} FROM `shop`.`customers` "
               "FORCE INDEX (a, b)) AS `c`")  # fmt: skip
    assert _rewrite(sql) == sql.replace("shop.customers c force index (a, b)", derived)


def test_a_column_is_spelled_as_the_table_spells_it_unless_the_statement_names_it() -> None:
    assert MASK.format("Email", "Email") in _rewrite("SELECT * FROM customers")
    assert MASK.format("EMAIL", "EMAIL") in _rewrite("SELECT EMAIL FROM customers")


def test_a_cte_hides_a_table_only_where_it_is_visible() -> None:
    out = _rewrite("WITH customers AS (SELECT * FROM customers) SELECT * FROM customers")
    assert out.count("'****'") == 1 and out.endswith(") SELECT * FROM customers")


def test_each_statement_of_a_string_is_rewritten_on_its_own() -> None:
    out = _rewrite("SELECT 1; SELECT total FROM orders;")
    first, second = out.split(";\n")
    assert first == "SELECT 1" and "WHERE (total < 6)) AS `orders`" in second


def test_writes_get_the_filter_qualified_with_their_alias() -> None:
    out = _rewrite("DELETE o FROM orders o JOIN customers c ON c.id = o.id WHERE c.id = ?")
    assert out.endswith("WHERE c.id = ? AND (`o`.total < 6)")
    assert _rewrite("UPDATE orders SET total = 1").endswith("WHERE (`orders`.total < 6)")


@pytest.mark.parametrize("sql", [
    "SELECT id FROM customers WHERE email = 'x'",
    "UPDATE customers SET name = email WHERE id = 1",
    "INSERT INTO orders VALUES (1, 2) ON DUPLICATE KEY UPDATE total = 3",
    "TRUNCATE orders",
    "DELETE FROM customers WHERE id = 1 RETURNING email",
])  # fmt: skip
def test_what_cannot_be_rewritten_safely_is_refused(sql: str) -> None:
    with pytest.raises(Refused):
        _rewrite(sql)


def test_mask_kinds_in_mysqls_dialect() -> None:
    rule = POLICY.rules[0]
    for kind, expected in (("hash", "SHA2(CONVERT(`c` USING utf8mb4), 256)"),
                           ("null", "NULL")):  # fmt: skip
        assert mask_mysql.mask_sql(rule.model_copy(update={"mask": kind}), "c") == expected
    assert mask_mysql.mask_sql(rule, "c", ("int", False)) == "NULL"  # redact of a number
