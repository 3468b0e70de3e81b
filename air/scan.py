"""Where a statement's literals are, as the scanner that lowers it reads them.

PostgreSQL's text is read by its own scanner (pglast), every other dialect's by
sqlglot's tokenizer: the same readers `air.lower` uses, so a text's shape here
and its graph agree. A shape is the text's tokens with each literal's value left
out: two texts of one shape differ in literal values only, and lower to the same
graph but for those values.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from pglast import parser as pg_parser
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import TokenError
from sqlglot.tokens import TokenType


class Shape(NamedTuple):
    key: tuple[object, ...]  # the tokens, each literal's value left out
    literals: tuple[tuple[int, int, str], ...]  # each literal's [start, end), and its kind
    dialect: str

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(kind for _, _, kind in self.literals)

    def values(self, text: str) -> tuple[str, ...]:
        """The literals' own texts, as `text` (this shape's) spells them."""
        return tuple(text[start:end] for start, end, _ in self.literals)


STRING, NUMBER = "STRING", "NUMBER"

# Token -> (literal kind or None, role in a list: by, (, ), comma, end, item-end, other).
_SG_LITERALS = {TokenType.STRING: STRING, TokenType.NUMBER: NUMBER,
                TokenType.HEX_STRING: "HEX", TokenType.BIT_STRING: "BIT",
                TokenType.NATIONAL_STRING: "NATIONAL", TokenType.BYTE_STRING: "BYTE"}  # fmt: skip
_SG_ROLES = {TokenType.ORDER_BY: "by", TokenType.GROUP_BY: "by", TokenType.L_PAREN: "(",
             TokenType.R_PAREN: ")", TokenType.COMMA: ",", TokenType.LIMIT: "end",
             TokenType.HAVING: "end", TokenType.WINDOW: "end", TokenType.UNION: "end",
             TokenType.SEMICOLON: "end", TokenType.ASC: "item-end", TokenType.DESC: "item-end",
             TokenType.WITH: "item-end", TokenType.DISTINCT: "distinct",
             TokenType.ON: "on"}  # fmt: skip
_PG_LITERALS = {"SCONST": STRING, "ICONST": NUMBER, "FCONST": NUMBER, "BCONST": "BIT",
                "XCONST": "HEX", "USCONST": "UNICODE"}  # fmt: skip
_PG_ROLES = {"BY": "by", "ASCII_40": "(", "ASCII_41": ")", "ASCII_44": ",", "ASCII_59": "end",
             "LIMIT": "end", "OFFSET": "end", "FETCH": "end", "HAVING": "end", "WINDOW": "end",
             "UNION": "end", "INTERSECT": "end", "EXCEPT": "end", "FOR": "end",
             "ASC": "item-end", "DESC": "item-end", "NULLS_P": "item-end",
             "USING": "item-end", "DISTINCT": "distinct", "ON": "on"}  # fmt: skip
_PG_COMMENTS = frozenset(("SQL_COMMENT", "C_COMMENT"))
_DIALECTS: dict[str, Dialect] = {}

# One token: (key entry, literal kind or None, role, start, end).
_Token = tuple[object, str | None, str, int, int]


def shape_of(sql: str, dialect: str) -> Shape | None:
    """`sql`'s shape, or None if its scanner cannot read it."""
    if dialect == "postgres":
        return _pg_shape(sql)
    tokens = _sg_tokens(sql, dialect)
    if tokens is None:
        return None
    literals = tuple((start, end, kind) for _, kind, _, start, end in tokens if kind)
    return Shape(tuple(entry for entry, *_ in tokens), literals, dialect)


def has_ordinals(sql: str, dialect: str) -> bool:
    """A bare number in an ORDER BY, GROUP BY or DISTINCT ON list: a position, so its
    value chooses which column is read, unlike any other literal's."""
    if dialect == "postgres":
        try:
            tokens: list[_Token] | None = _pg_tokens(sql, pg_parser.scan(sql))
        except pg_parser.ParseError:
            return False
    else:
        tokens = _sg_tokens(sql, dialect)
    return tokens is not None and _has_ordinals(tokens)


def _pg_shape(sql: str) -> Shape | None:
    """PostgreSQL names nothing after a literal's value, so its shape is its text with
    the literals cut out (comments and spacing kept: stricter than tokens, and cheaper
    on the hot path than a token per entry)."""
    try:
        tokens = pg_parser.scan(sql)
    except pg_parser.ParseError:
        return None
    pieces, literals, cursor = [], [], 0
    for t in tokens:
        kind = _PG_LITERALS.get(t.name)
        if kind:
            pieces.append(sql[cursor : t.start])
            literals.append((t.start, t.end + 1, kind))
            cursor = t.end + 1
    pieces.append(sql[cursor:])
    kinds = tuple(kind for _, _, kind in literals)
    return Shape(("\x00".join(pieces), kinds), tuple(literals), "postgres")


def _sg_tokens(sql: str, dialect: str) -> list[_Token] | None:
    reader = _DIALECTS.get(dialect)
    if reader is None:
        reader = _DIALECTS[dialect] = Dialect.get_or_raise(dialect)
    try:
        tokens = reader.tokenize(sql)
    except (TokenError, ValueError):
        return None
    out: list[_Token] = []
    selecting = [False]  # per parenthesis depth: inside a select list
    plain = bool(tokens) and tokens[0].token_type in _SG_QUERY_STARTS
    for i, t in enumerate(tokens):
        kind = _SG_LITERALS.get(t.token_type)
        if kind and _names_something(tokens, i, kind, selecting[-1] and (
                len(selecting) > 1 or not plain)):  # fmt: skip
            kind = None
        entry = t.token_type if kind else (t.token_type, t.text)
        out.append((entry, kind, _SG_ROLES.get(t.token_type, ""), t.start, t.end + 1))
        if t.token_type is TokenType.L_PAREN:
            selecting.append(False)
        elif t.token_type is TokenType.R_PAREN and len(selecting) > 1:
            selecting.pop()
        elif t.token_type is TokenType.SELECT:
            selecting[-1] = True
        elif t.token_type in _SG_SELECT_ENDS:
            selecting[-1] = False
    return out


# MySQL names a column after a literal's text (`SELECT 'email'`, `SELECT 1+1`) and takes
# a string as an alias (`id AS 'email'`, `id 'email'`): there a literal's value is a
# name, which chooses what an outer reference reads. Such a literal is kept whole in a
# shape: in a select list whose names can be read (a subquery's, a CTE's, a view's, an
# INSERT's, not a top-level query's, whose names only the client reads), or where an
# alias can stand. So is a "number" MySQL may read as a name (`9e`, `1e`).
_SG_QUERY_STARTS = frozenset((TokenType.SELECT,))
_SG_SELECT_ENDS = frozenset((TokenType.FROM, TokenType.WHERE, TokenType.GROUP_BY,
                             TokenType.ORDER_BY, TokenType.HAVING, TokenType.LIMIT,
                             TokenType.UNION, TokenType.INTO, TokenType.WINDOW,
                             TokenType.SEMICOLON))  # fmt: skip
_SG_VALUE_ENDS = frozenset((TokenType.VAR, TokenType.IDENTIFIER, TokenType.R_PAREN,
                            TokenType.NULL, TokenType.TRUE, TokenType.FALSE, TokenType.STAR,
                            TokenType.END, *_SG_LITERALS))  # fmt: skip
_NUMBER_TEXT = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def _names_something(tokens: list, i: int, kind: str, named_list: bool) -> bool:
    if named_list:
        return True
    if kind == NUMBER:
        return not _NUMBER_TEXT.fullmatch(tokens[i].text)
    before = tokens[i - 1].token_type if i else None
    return before is TokenType.ALIAS or before in _SG_VALUE_ENDS


def _pg_tokens(sql: str, tokens: list) -> list[_Token]:
    out: list[_Token] = []
    for t in tokens:
        if t.name in _PG_COMMENTS:
            continue
        kind = _PG_LITERALS.get(t.name)
        text = sql[t.start : t.end + 1]
        out.append((kind or (t.name, text), kind, _PG_ROLES.get(t.name, ""), t.start, t.end + 1))
    return out


def _has_ordinals(tokens: list[_Token]) -> bool:
    in_list = [False]  # per parenthesis depth: inside an ORDER/GROUP BY list
    distinct_on = False
    for i, (_, kind, role, _, _) in enumerate(tokens):
        if kind == NUMBER and in_list[-1]:
            before = tokens[i - 1][2] if i else ""
            after = tokens[i + 1][2] if i + 1 < len(tokens) else "end"
            if before in ("by", ",", "(") and after in ("by", ",", ")", "end", "item-end"):
                return True
        if role == "(":
            in_list.append(distinct_on)
            distinct_on = False
        elif role == ")" and len(in_list) > 1:
            in_list.pop()
        elif role == "by":
            in_list[-1] = True
        elif role == "end":
            in_list[-1] = False
        distinct_on = role == "on" and i > 0 and tokens[i - 1][2] == "distinct"
    return False
