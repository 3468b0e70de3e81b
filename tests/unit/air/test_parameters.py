"""Literals cut out of statement texts, and the one parse that vouches for a template."""

from __future__ import annotations

from sqlx.air.parameters import INT4, INT8, NUMERIC, UNKNOWN, param_values, parameterize, split


def _prepare(sql: str):
    cut = split(sql)
    assert cut is not None
    return cut, parameterize(sql, cut)


def test_literals_are_typed_as_postgresql_types_them() -> None:
    cut, template = _prepare("SELECT 1, 3000000000, 99999999999999999999, 1.5, 'it''s' FROM t")
    assert template is not None
    assert template.text == "SELECT $1, $2, $3, $4, $5 FROM t"
    assert template.types == (INT4, INT8, NUMERIC, NUMERIC, UNKNOWN)
    assert param_values(template, cut) == ("1", "3000000000", "99999999999999999999", "1.5", "it's")


def test_texts_of_one_template_share_a_key_and_differ_in_values() -> None:
    a, b = split("SELECT * FROM t WHERE id = 1"), split("SELECT * FROM t WHERE id = 22")
    assert a is not None and b is not None
    assert a.key == b.key and a.values != b.values
    # A literal of another type class is another template.
    c = split("SELECT * FROM t WHERE id = 3000000000")
    assert c is not None and c.key != a.key


def test_a_unary_minus_is_folded_into_the_value_as_the_grammar_does() -> None:
    cut, template = _prepare("SELECT -2147483648, a - 5 FROM t")
    assert template is not None
    assert template.text == "SELECT $1, a - $2 FROM t"
    assert template.types == (INT4, INT4)  # -2147483648 is an int4 constant
    assert param_values(template, cut) == ("-2147483648", "5")


def test_constants_the_grammar_needs_stay_in_the_text() -> None:
    cut, template = _prepare(
        "SELECT date '2020-01-01', 'x'::varchar(10), a FROM t GROUP BY 3 ORDER BY 1 LIMIT 5"
    )
    assert template is not None
    assert template.text == (
        "SELECT date '2020-01-01', $1::varchar(10), a FROM t GROUP BY 3 ORDER BY 1 LIMIT $2"
    )
    other = split(
        "SELECT date '2021-01-01', 'x'::varchar(10), a FROM t GROUP BY 3 ORDER BY 1 LIMIT 5"
    )
    assert other is not None and other.key == cut.key
    assert param_values(template, other) is None  # a kept literal differs: not this statement


def test_what_the_cut_cannot_vouch_for_is_never_prepared() -> None:
    for sql in (
        "SELECT $1",
        "SELECT $$x$$",
        "SELECT a \\ b",
        "SELECT /* /* nested */ */ 1",
        "SELECT 'unterminated",
    ):
        assert split(sql) is None, sql
    for sql in (
        "SELECT E'x', 1",
        "SELECT 'a'\n'b'",
        "SELECT U&'x', 1",
        "SET work_mem = 5",
        "SELECT set_config('a', 'b', false)",
        "SELECT 1 INTO t2",
        "SELECT 1; SELECT 2",
        "CREATE TABLE t (a int DEFAULT 5)",
    ):
        cut = split(sql)
        assert cut is None or parameterize(sql, cut) is None, sql


def test_non_ascii_text_maps_characters_to_the_parsers_bytes() -> None:
    cut, template = _prepare("SELECT 'é', 'ü' || name, 7 FROM t")
    assert template is not None
    assert template.text == "SELECT $1, $2 || name, $3 FROM t"
    assert param_values(template, cut) == ("é", "ü", "7")


def test_comments_and_quoted_names_hide_no_literal() -> None:
    cut, template = _prepare("SELECT \"it's\" -- 'no'\nFROM t /* 5 */ WHERE a = 'yes'")
    assert template is not None
    assert param_values(template, cut) == ("yes",)


def test_a_mysql_shape_text_keeps_everything_the_server_runs() -> None:
    from sqlx.air.parameters import mysql_placeholder_text

    # `--` then a newline is an empty comment: the next line is code (as sqlglot reads it).
    assert mysql_placeholder_text("SELECT 1 --\nUNION SELECT email FROM customers") == (
        "SELECT ? UNION SELECT email FROM customers")  # fmt: skip
    assert mysql_placeholder_text("SELECT 1 -- note\nFROM t") == "SELECT ? FROM t"
    assert mysql_placeholder_text("SELECT 1--1, 'a' # x") == "SELECT ?--?, ?"
    assert mysql_placeholder_text("SELECT /*!50000 email, */ 2 FROM c") == "SELECT email, ? FROM c"
