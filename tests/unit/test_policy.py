"""Policy packs and their evaluation: AIR graphs and session facts in, a verdict out."""

from __future__ import annotations

from pathlib import Path

import pytest

from sqlx import air
from sqlx.agents.policy import Catalog, Who, evaluate, function_call, unparsable
from sqlx.config.policy import Policy, PolicyError, load_pack, load_policy

PACK = Path(__file__).resolve().parents[2] / "config" / "packs" / "example.yaml"
CATALOG = Catalog(
    columns={"public.customers": ("id", "name", "email", "phone"),
             "public.payroll": ("id", "amount")},
    builtin_functions=frozenset(("lower", "count", "row_to_json", "now", "set_config")),
)  # fmt: skip
APP = Who("app", "shop")
ADMIN = Who("admin", "shop")
US = Who("app_us", "shop")


def _verdict(sql: str, who: Who = APP) -> tuple[str, set[str]]:
    out = evaluate(air.lower_all(sql), who, load_policy([PACK]), CATALOG)
    return out.action, {f.rule for f in out.findings}


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT email FROM customers",
        "SELECT c.email AS e FROM customers c",
        "SELECT * FROM customers",
        "SELECT c.* FROM customers c",
        "SELECT c FROM customers c",
        "SELECT row_to_json(customers) FROM customers",
        "WITH x AS (SELECT email FROM customers) SELECT * FROM x",
        "SELECT name FROM customers UNION SELECT email FROM customers",
        "COPY customers TO STDOUT",
        "COPY (SELECT phone FROM customers) TO STDOUT",
        "UPDATE customers SET name = 'x' WHERE id = 1 RETURNING email",
        "EXPLAIN ANALYZE SELECT email FROM customers",
        "PREPARE p AS SELECT email FROM customers",
        "DECLARE c CURSOR FOR SELECT email FROM customers",
    ],
)
def test_pii_is_masked_whatever_the_form(sql: str) -> None:
    assert _verdict(sql) == ("mask", {"mask-pii"})
    assert _verdict(sql, ADMIN)[0] == "allow"


def test_any_read_of_a_masked_table_is_rewritten_whatever_names_its_columns() -> None:
    """A reference that resolves to no tagged column (a column alias list, a join alias,
    a merged USING column) still reads the table: the table itself is masked."""
    for sql in ("SELECT e FROM customers AS c(i, n, e)",
                "SELECT j.email FROM (customers c JOIN payroll p ON p.id = c.id) AS j",
                "SELECT email FROM customers NATURAL JOIN (SELECT NULL::text AS email) t",
                ):  # fmt: skip
        assert _verdict(sql)[0] == "mask", sql
    assert _verdict("SELECT id, name FROM customers")[0] == "allow"  # nothing masked read
    assert _verdict("SELECT id FROM payroll") == ("audit", {"audit-payroll"})


def test_deny_beats_mask_and_audit() -> None:
    action, rules = _verdict("SELECT amount FROM payroll", US)
    assert action == "deny" and rules == {"payroll-eu-only", "audit-payroll"}
    assert _verdict("SELECT amount FROM payroll", APP) == ("audit", {"audit-payroll"})
    out = evaluate(air.lower_all("SELECT * FROM payroll"), US, load_policy([PACK]), CATALOG)
    assert out.reason == "payroll data stays with EU staff"


@pytest.mark.parametrize("dialect", ["postgres", "mysql"])
def test_a_default_reason_names_what_was_read_and_never_says_none(dialect: str) -> None:
    policy = Policy.model_validate({"rules": [
        {"name": "no-orders", "action": "deny", "when": {"tables": ["orders"]}}]})  # fmt: skip
    catalog = Catalog(columns={"public.orders": ("id", "total")}, search_path=("public",),
                      read_ok=True, dialect=dialect)  # fmt: skip
    for sql, named in (("SELECT * FROM orders", "(*)"), ("SELECT o.* FROM orders o", "o.*"),
                       ("SELECT total FROM orders", "(total)")):  # fmt: skip
        out = evaluate(air.lower_all(sql, dialect), APP, policy, catalog)
        assert out.action == "deny" and named in out.reason and "None" not in out.reason, (
            out.reason)  # fmt: skip


def test_unbounded_writes_are_denied() -> None:
    assert _verdict("DELETE FROM orders")[0] == "deny"
    assert _verdict("UPDATE orders SET total = 0")[0] == "deny"
    assert _verdict("DELETE FROM orders WHERE id = 1")[0] == "allow"
    assert _verdict("WITH d AS (DELETE FROM orders RETURNING id) SELECT * FROM d")[0] == "deny"


def test_what_cannot_be_seen_through_is_denied_for_guarded_sessions() -> None:
    policy = load_policy([PACK])
    assert unparsable(policy, APP, "syntax error").action == "deny"
    assert function_call(policy, APP).action == "deny"
    assert _verdict("SET ROLE admin")[0] == "deny"
    assert _verdict("SELECT set_config('role', 'admin', false)")[0] == "deny"
    assert _verdict("RESET ROLE")[0] == "allow"
    assert _verdict("SELECT query_to_xml('select email from customers', true, true, '')")[0] == (
        "deny")  # fmt: skip
    assert _verdict("SELECT my_udf(id) FROM customers")[0] == "deny"
    assert _verdict("SELECT * FROM pg_stats")[0] == "deny"
    assert _verdict("DO $$ BEGIN PERFORM 1; END $$")[0] == "deny"
    for reader in ("schema_to_xml_and_xmlschema('public', true, true, '')",
                   "database_to_xml_and_xmlschema(true, true, '')",
                   "* FROM pg_logical_slot_peek_changes('s', NULL, NULL)"):  # fmt: skip
        assert _verdict(f"SELECT {reader}")[0] == "deny", reader
    assert _verdict("SELECT lower(name) FROM customers")[0] == "allow"
    # The admin is outside every guarding rule: nothing is hidden from them.
    assert _verdict("SELECT my_udf(id) FROM customers", ADMIN)[0] == "allow"


def test_who_conditions() -> None:
    policy = load_policy([PACK])
    cidr = policy.model_copy(update={"rules": (policy.rules[1].model_copy(
        update={"when": policy.rules[1].when.model_copy(
            update={"users": (), "clients": ("10.0.0.0/8",)})}),)})  # fmt: skip
    graphs = air.lower_all("SELECT 1 FROM payroll")
    assert evaluate(graphs, Who("x", "d", "", "10.1.2.3"), cidr, CATALOG).action == "deny"
    assert evaluate(graphs, Who("x", "d", "", "192.168.1.1"), cidr, CATALOG).action == "allow"


def test_a_bad_pack_is_refused_with_the_key_path(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("policy:\n  rules:\n    - {name: r, when: {tabels: [t]}, action: deny}\n")
    with pytest.raises(PolicyError, match=r"bad.yaml: policy.rules.0.when.tabels"):
        load_pack(bad)
    bad.write_text("policy:\n  rules:\n    - name: r\n      action: mask\n      mask: blur\n")
    with pytest.raises(PolicyError, match="mask must be one of"):
        load_pack(bad)
    bad.write_text("policy:\n  rules:\n    - {name: r, action: filter}\n")
    with pytest.raises(PolicyError, match="needs predicate"):
        load_pack(bad)


TWO_SCHEMAS = Catalog(
    columns={"public.people": ("id", "name"), "crm.people": ("id", "name", "ssn")},
    builtin_functions=frozenset(("now",)),
)
SSN_PACK = """
policy:
  tags: {crm.people.ssn: {sensitivity: pii}}
  rules: [{name: mask-pii, when: {tags: {sensitivity: pii}}, action: mask}]
"""


@pytest.mark.parametrize("sql", ["SELECT * FROM people", "SELECT p FROM people p",
                                 "COPY people TO STDOUT"])  # fmt: skip
def test_an_unqualified_name_follows_the_search_path(tmp_path: Path, sql: str) -> None:
    (tmp_path / "p.yaml").write_text(SSN_PACK)
    policy = load_pack(tmp_path / "p.yaml")

    def action(path: tuple[str, ...] | None) -> str:
        return evaluate(air.lower_all(sql), APP, policy, TWO_SCHEMAS.with_path(path)).action

    assert action(("public",)) == "allow"
    assert action(("crm", "public")) == "mask"
    # Unknown path: the name stands for both tables, the masked column included.
    assert action(None) == "mask"


def test_search_path_settings_parse_as_the_server_reads_them() -> None:
    from sqlx.agents.facts import parse_search_path
    from sqlx.agents.search_path import from_startup

    assert parse_search_path('"$user", public', "ann") == ("ann", "public")
    assert parse_search_path('crm, "A, b"', "ann") == ("crm", "a, b")
    assert from_startup((("options", r"-c search_path=crm,public -c x=1"),), "ann") == (
        "crm", "public")  # fmt: skip
    assert from_startup((("options", "--search-path=crm"),), "ann") == ("crm",)
    assert from_startup((("search_path", "crm"),), "ann") == ("crm",)
    assert from_startup((("options", "-c work_mem=1MB"),), "ann") is None
    assert TWO_SCHEMAS.with_path(("crm",)).resolve("people") == "crm.people"
    assert TWO_SCHEMAS.with_path(("other",)).resolve("people") == "people"
    assert TWO_SCHEMAS.resolve("people") == "people"


@pytest.mark.parametrize("sql", [
    "SELECT * FROM staff",
    "SELECT s FROM staff s",
    "SELECT x FROM (SELECT amount AS x FROM staff UNION SELECT note FROM staff) u",
])  # fmt: skip
def test_columns_with_different_values_of_one_tag_are_each_masked(tmp_path: Path,
                                                                  sql: str) -> None:  # fmt: skip
    """`*` stands for both columns: each one's own value of `sensitivity` must be seen."""
    from sqlx.agents import mask

    (tmp_path / "p.yaml").write_text("""
policy:
  tags:
    public.staff.amount: {sensitivity: pii}
    public.staff.note: {sensitivity: hashed}
  rules:
    - {name: redact-pii, when: {tags: {sensitivity: pii}}, action: mask, mask: redact}
    - {name: hash-notes, when: {tags: {sensitivity: hashed}}, action: mask, mask: hash}
""")
    policy = load_pack(tmp_path / "p.yaml")
    catalog = Catalog(columns={"public.staff": ("id", "amount", "note")},
                      builtin_functions=frozenset(("now",)))  # fmt: skip
    graphs = air.lower_all(sql)
    out = evaluate(graphs, APP, policy, catalog)
    names = {f.rule for f in out.findings}
    assert names == {"redact-pii", "hash-notes"}
    rewritten = mask.rewrite(graphs, policy, APP, catalog, names)
    assert "'****'" in rewritten and "sha256" in rewritten
