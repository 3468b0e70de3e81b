"""The inline decider's caching: by text, and by shape when literals cannot matter."""

from __future__ import annotations

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
    return d.decide(Statement(sql, Path.SIMPLE, FACTS, False, dialect="mysql"))


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


def test_mysql_rewrites_and_texts_read_by_sql_mode_are_not_shared_by_shape() -> None:
    d = _mysql_decider()
    one = _mysql(d, "SELECT email FROM customers WHERE id = 1")
    two = _mysql(d, "SELECT email FROM customers WHERE id = 2")
    assert one.verdict is two.verdict is Verdict.REWRITE
    assert "id = 1" in (one.sql or "") and "id = 2" in (two.sql or "")
    # `"x"` is a string or (ANSI_QUOTES) a name: such a text is decided on its own.
    _mysql(d, 'SELECT note FROM orders WHERE note = "a"')
    _mysql(d, 'SELECT note FROM orders WHERE note = "b"')
    assert d.misses == 4 and d.hits == 0
