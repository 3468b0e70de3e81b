"""The inline decider's caching: by text, and by shape when literals cannot matter."""

from __future__ import annotations

import pytest

from sqlx.agents.catalog import CatalogStore
from sqlx.agents.decider import PolicyDecider
from sqlx.agents.policy import Catalog
from sqlx.config.policy import Policy
from sqlx.proxy.decision import Decision, Path, SessionFacts, Statement, Verdict

POLICY = Policy.model_validate({
    "tags": {"customers.email": {"pii": "yes"}},
    "rules": [{"name": "mask", "action": "mask", "when": {"tags": {"pii": "yes"}}},
              {"name": "no-payroll", "action": "deny", "when": {"tables": ["payroll"]}}],
})  # fmt: skip
FACTS = SessionFacts("app", "shop", "", "127.0.0.1", False)


def _decider() -> PolicyDecider:
    store = CatalogStore({})
    store._catalogs["shop"] = Catalog(
        columns={"public.customers": ("id", "email"), "public.payroll": ("id",)},
        builtin_functions=frozenset(("set_config", "count")), version=1)  # fmt: skip
    return PolicyDecider(POLICY, store, None)


def _decide(d: PolicyDecider, sql: str, facts: SessionFacts = FACTS) -> Decision:
    return d.decide(Statement(sql, Path.SIMPLE, facts, False))


def test_a_new_literal_in_a_known_shape_is_not_evaluated_again() -> None:
    d = _decider()
    assert _decide(d, "SELECT id FROM payroll WHERE id = 1").verdict is Verdict.DENY
    assert _decide(d, "SELECT id FROM payroll WHERE id = 2").verdict is Verdict.DENY
    assert (d.misses, d.hits) == (1, 1)
    # Another user is another key: one user's verdict is never reused for another.
    other = SessionFacts("boss", "shop", "", "127.0.0.1", False)
    _decide(d, "SELECT id FROM payroll WHERE id = 3", other)
    assert d.misses == 2


def test_rewrites_and_literal_dependent_verdicts_are_cached_by_text_only() -> None:
    d = _decider()
    one = _decide(d, "SELECT email FROM customers WHERE id = 1")
    two = _decide(d, "SELECT email FROM customers WHERE id = 2")
    assert one.verdict is two.verdict is Verdict.REWRITE
    assert "id = 1" in (one.sql or "") and "id = 2" in (two.sql or "")
    assert _decide(d, "SELECT set_config('role', 'x', false)").verdict is Verdict.DENY
    assert _decide(d, "SELECT set_config('work_mem', '64MB', false)").verdict is Verdict.ALLOW


def test_a_rewrite_is_a_template_its_literals_fill() -> None:
    d = _decider()
    texts = ["SELECT email, 'tag' FROM customers WHERE id = {} LIMIT 5",
             "SELECT c.email FROM customers c WHERE c.id IN ({}, 7) /* note */",
             "SELECT email FROM customers WHERE id = {} ORDER BY id"]  # fmt: skip
    for text in texts:
        _decide(d, text.format(1))
        misses = d.misses
        for n in (2, 30, "'x'"):
            sql = text.format(n)
            got, fresh = _decide(d, sql), _decide(_decider(), sql)
            assert got.verdict is fresh.verdict is Verdict.REWRITE and got.sql == fresh.sql, sql
        assert d.misses == misses + 1, text  # the string for a number: another shape
    # What the deparser writes differently from the client gets no template: per text.
    for sql in ("SELECT email FROM customers WHERE id = $$1$$",
                "SELECT email FROM customers WHERE id = $$2$$",
                "SELECT id, email FROM customers ORDER BY 2",
                "SELECT id, email FROM customers ORDER BY 1"):  # fmt: skip
        got, fresh = _decide(d, sql), _decide(_decider(), sql)
        assert got.verdict is fresh.verdict and got.sql == fresh.sql, sql
    assert d.misses == misses + 1 + 4


def _mysql_decider() -> PolicyDecider:
    from sqlx.agents.decider import MYSQL_CATALOG

    d = PolicyDecider(POLICY, None, None)
    d.mysql_catalogs = CatalogStore({})
    d.mysql_catalogs._catalogs[MYSQL_CATALOG] = Catalog(
        columns={"shop.customers": ("id", "email"), "shop.payroll": ("id",),
                 "shop.orders": ("id", "note")},
        dialect="mysql", read_ok=True, version=1)  # fmt: skip
    return d


def _mysql(d: PolicyDecider, sql: str) -> Decision:
    return d.decide(Statement(sql, Path.SIMPLE, FACTS, False, escapes=True, dialect="mysql"))


def test_a_mysql_shape_shares_verdicts_no_literal_can_change() -> None:
    d = _mysql_decider()
    assert _mysql(d, "SELECT id FROM payroll WHERE id = 1").verdict is Verdict.DENY
    assert _mysql(d, "SELECT id FROM payroll WHERE id = 22 /* again */").verdict is Verdict.DENY
    assert _mysql(d, "SELECT note FROM orders WHERE note = 'a'").verdict is Verdict.ALLOW
    assert _mysql(d, "SELECT note FROM orders WHERE note = 'it''s'").verdict is Verdict.ALLOW
    assert (d.misses, d.hits) == (2, 2)
    # Anything but a literal is another shape: a name, a keyword, a comment that runs.
    assert _mysql(d, "SELECT id FROM orders WHERE id = 1").verdict is Verdict.ALLOW
    assert _mysql(d, "SELECT note FROM orders WHERE note = 'a' --\nUNION SELECT id FROM "
                     "payroll").verdict is Verdict.DENY  # fmt: skip
    assert d.misses == 4
    # An executable comment runs: this is the statement before, in other clothes.
    assert _mysql(d, "SELECT note FROM orders WHERE note = 'b' /*! UNION SELECT id FROM "
                     "payroll */").verdict is Verdict.DENY  # fmt: skip
    assert (d.misses, d.hits) == (4, 3)


def test_a_mysql_rewrite_is_a_template_its_literals_fill() -> None:
    d = _mysql_decider()
    texts = ["SELECT email, id, 'it''s' FROM customers WHERE id = {} AND id <> 'x'",
             "SELECT c.email FROM customers c WHERE c.id IN ({}, 7) -- note",
             "UPDATE customers SET id = {} WHERE id = 3"]  # fmt: skip
    for text in texts:
        first = _mysql(d, text.format(1))
        misses = d.misses
        for n in (2, 30, "'x'"):
            sql = text.format(n)
            got = _mysql(d, sql)
            fresh = _mysql(_mysql_decider(), sql)  # what a rewrite of this very text is
            assert got.verdict is fresh.verdict is first.verdict, (sql, got.reason)
            assert got.sql == fresh.sql, sql
        assert d.misses == misses + 1, text  # the string for a number: another shape
    assert _mysql(d, texts[0].format(5)).sql.count("'****'") == 1  # type: ignore[union-attr]


def test_a_rewrite_whose_literals_choose_columns_is_made_per_text() -> None:
    d = _mysql_decider()
    # ORDER BY 2 sorts by another column than ORDER BY 1: each is rewritten on its own.
    for n in (1, 2):
        got = _mysql(d, f"SELECT id, email FROM customers ORDER BY {n}")
        assert got.verdict is Verdict.REWRITE and (got.sql or "").endswith(f"ORDER BY {n}")
    assert d.misses == 2


def test_mysql_texts_read_by_sql_mode_are_not_shared_by_shape() -> None:
    d = _mysql_decider()
    # `"x"` is a string or (ANSI_QUOTES) a name, `\\` an escape or not (sql_mode): such
    # a text is decided on its own.
    for sql in ('SELECT note FROM orders WHERE note = "a"', 'SELECT note FROM orders WHERE '
                'note = "b"', "SELECT email FROM customers WHERE email = 'a\\\\'",
                "SELECT email FROM customers WHERE email = 'b\\\\'"):  # fmt: skip
        _mysql(d, sql)
    assert d.misses == 4 and d.hits == 0


def _orders_decider() -> PolicyDecider:
    d = _decider()
    assert d.catalogs is not None
    d.catalogs._catalogs["shop"] = Catalog(
        columns={"public.customers": ("id", "email"), "public.orders": ("id", "note")},
        builtin_functions=frozenset(("count",)), version=1)  # fmt: skip
    return d


def test_a_name_is_never_left_out_of_a_shape() -> None:
    """An alias chooses what a name reads: `email` inside is the derived table's column
    in the first text and the masked customers.email in the second."""
    reads_own = "SELECT (SELECT email FROM (SELECT id AS {} FROM orders) d LIMIT 1) FROM customers"
    d = _orders_decider()
    assert _decide(d, reads_own.format("email")).verdict is Verdict.ALLOW
    second, fresh = (
        _decide(d, reads_own.format("x")),
        _decide(_orders_decider(), reads_own.format("x")),
    )
    assert second.verdict is fresh.verdict is Verdict.REWRITE and second.sql == fresh.sql


@pytest.mark.parametrize("first,second", [
    # MySQL takes a string as an alias, and names a subquery's column after a literal.
    ("SELECT (SELECT email FROM (SELECT id AS 'email' FROM orders) d LIMIT 1) FROM customers",
     "SELECT (SELECT email FROM (SELECT id AS 'x' FROM orders) d LIMIT 1) FROM customers"),
    ("SELECT (SELECT email FROM (SELECT id 'email' FROM orders) d LIMIT 1) FROM customers",
     "SELECT (SELECT email FROM (SELECT id 'x' FROM orders) d LIMIT 1) FROM customers"),
    ("SELECT c.id FROM customers c WHERE EXISTS (SELECT 1 FROM (SELECT 'email' FROM orders) d "
     "WHERE email LIKE 'a%')", "SELECT c.id FROM customers c WHERE EXISTS (SELECT 1 FROM "
     "(SELECT 'x' FROM orders) d WHERE email LIKE 'a%')"),
    # `9e` is a name to MySQL, a number to sqlglot: not a literal of the shape.
    ("SELECT id FROM orders WHERE id > NOW() - INTERVAL 0 DAY",
     "SELECT id FROM orders WHERE id > NOW() - INTERVAL 9e DAY"),
])  # fmt: skip
def test_a_mysql_literal_that_may_name_something_is_kept_in_its_shape(
    first: str, second: str
) -> None:
    d = _mysql_decider()
    _mysql(d, first)
    got, fresh = _mysql(d, second), _mysql(_mysql_decider(), second)
    assert got.verdict is fresh.verdict and got.sql == fresh.sql, (got.reason, fresh.reason)


def test_a_number_a_rewrite_writes_inside_quotes_gets_no_template() -> None:
    rule = {"name": "mine", "action": "filter", "predicate": "id < 100",
            "when": {"tables": ["orders"]}}  # fmt: skip
    policy = Policy.model_validate({"rules": [rule]})
    d = _mysql_decider()
    d.policy = policy
    _mysql(d, "UPDATE orders SET note = NOW() + INTERVAL .5 DAY WHERE id = 1")
    got = _mysql(d, "UPDATE orders SET note = NOW() + INTERVAL .5e1 DAY WHERE id = 1")
    fresh_d = _mysql_decider()
    fresh_d.policy = policy
    assert got.sql == _mysql(fresh_d, "UPDATE orders SET note = NOW() + INTERVAL .5e1 DAY "
                                      "WHERE id = 1").sql  # fmt: skip


def test_a_search_path_change_is_followed_with_its_own_value() -> None:
    """`SET search_path TO 'a'` and `... 'b'` differ only in a literal, but the session
    must follow each text's own path: a shared verdict would carry the other's."""
    from sqlx.proxy.decision import Outcome

    policy = Policy.model_validate({"tags": {"public.customers.email": {"pii": "yes"}},
                                    "rules": [POLICY.rules[0]]})  # fmt: skip
    store = CatalogStore({})
    store._catalogs["shop"] = Catalog(
        columns={"public.customers": ("id", "email"), "scratch.customers": ("id", "email")},
        builtin_functions=frozenset(("count",)), version=1)  # fmt: skip
    d = PolicyDecider(policy, store, None)

    def run(sql: str, facts: SessionFacts) -> Decision:
        statement = Statement(sql, Path.SIMPLE, facts, False)
        decision = d.decide(statement)
        d.observe(Outcome((statement,), decision, 0.0, None))
        return decision

    run("SET search_path TO 'scratch'", SessionFacts("app", "shop", "", "127.0.0.1", False))
    me = SessionFacts("app", "shop", "", "127.0.0.1", False)
    run("SET search_path TO 'public'", me)
    assert run("SELECT email FROM customers", me).verdict is Verdict.REWRITE
