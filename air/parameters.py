"""A PostgreSQL statement's literals as parameters: the text with `$n` in their place.

Two steps with different costs:

- `split(sql)` runs per execution (microseconds, one regex pass): it cuts
  every plain string and unsigned number out of the text and keys what is
  left (the template) with each literal's type class. It knows no grammar;
  anything it cannot vouch for (`$`, a backslash outside a string, a nested
  comment) gives None. Strings are read as standard-conforming: a session
  whose `standard_conforming_strings` is off is never cut.
- `parameterize(sql, split)` runs once per template: PostgreSQL's own
  parser checks that each cut-out span is exactly one constant of the
  statement, with the value the cut says, and decides which constants stay
  in the text (a type name's argument `date '...'`, a type modifier, an
  ORDER BY/GROUP BY position), which absorb a unary minus, and whether the
  statement may be prepared at all (one SELECT without INTO, INSERT, UPDATE
  or DELETE, and no `set_config`).

Two texts with the same key differ only inside the cut spans, and the
spans are the same classes of token in the same places, so PostgreSQL
reads them the same way: the one parse of the first text vouches for all.
Each parameter is typed as PostgreSQL types the literal it replaces
(integers int4, int8 or numeric by size, other numbers numeric, strings
`unknown`), so the statement means the same with `$n` as with the literal.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, NamedTuple

import pglast

from sqlx.air.errors import LoweringError
from sqlx.air.pg import parse_json

INT4, INT8, NUMERIC, UNKNOWN = 23, 20, 1700, 705
_INT4_MAX, _INT8_MAX = 2**31 - 1, 2**63 - 1

# Strings, numbers, and what may hide a quote or a digit (quoted names, names,
# comments): those are matched only to be stepped over.
_TOKENS = re.compile(
    r"""'((?:[^']|'')*)'(?!')"""  # group 1: a plain string's body
    r"|((?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)(?![\w.])"  # group 2: an unsigned number
    r'|"(?:[^"]|"")*"|[^\W\d]\w*|--[^\n]*|/\*(?:[^*/]|\*(?!/)|/(?!\*))*\*/'
    r"|(['$\\]|/\*)",  # group 3: what the cut cannot vouch for
    re.DOTALL,
)
_STATEMENTS = frozenset(("SelectStmt", "InsertStmt", "UpdateStmt", "DeleteStmt"))
# Lists whose bare integers are positions in the select list (GROUP BY 1).
_POSITIONAL = frozenset(("groupClause", "distinctClause"))
# Functions whose effect lasts beyond the statement, and that the proxy follows.
_SESSION_FUNCTIONS = frozenset(("set_config",))


class Split(NamedTuple):
    """A statement cut at its literals: `key` is the same for every text of one template."""

    key: tuple[str, tuple[int, ...]]
    values: tuple[str, ...]  # each literal's text (strings unescaped)
    spans: tuple[tuple[int, int], ...]  # each literal's (start, end) in the text


class Template(NamedTuple):
    """How to run every statement of one key as a prepared statement."""

    text: str  # with $1..$n for the parameters
    params: tuple[int, ...]  # which literals of the split are parameters, in $n order
    negated: tuple[bool, ...]  # per parameter: a unary minus folded into its value
    types: tuple[int, ...]  # per parameter: the type OID PostgreSQL gives the literal
    # Literals left in the text (`date '2024-01-01'`, ORDER BY 1): another text of the
    # key runs this way only if it has the same values there.
    kept: tuple[tuple[int, str], ...] = ()
    plain: bool = False  # every literal is a parameter, none negated: the values are the cut's


def placeholder_text(sql: str) -> str:
    """`sql` with every literal a placeholder and every comment removed: what may be
    shown or stored of a statement ("" if PostgreSQL cannot parse it)."""
    try:
        text = pglast.parser.normalize(sql)
        for comment in pglast.parser.comments(text):
            text = text.replace(comment.str, " ", 1)
        return " ".join(text.split())
    except pglast.parser.ParseError:
        return ""


# MySQL's lexing, for a shape's text: strings in either quote with backslash escapes,
# hex/bit literals, numbers; names in backquotes and comments are stepped over.
_MYSQL_LITERALS = re.compile(
    r"""[xXbB]?'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.|"")*"|`(?:[^`]|``)*`"""
    r"|#[^\n]*|--(?=\s)[^\n]*|/\*.*?\*/|(?<![\w.$])(?:0x[0-9a-fA-F]+|\d+\.?\d*(?:[eE][+-]?\d+)?"
    r"|\.\d+(?:[eE][+-]?\d+)?)(?![\w$])|['\"]",
    re.DOTALL,
)


# `/*! ... */`, `/*!50110 ... */`, MariaDB's `/*M!100100 ... */`: the server runs what is
# inside (when its version is at least the number; every version is assumed).
_EXECUTABLE = re.compile(r"/\*M?!\d*(.*?)\*/", re.DOTALL)


def mysql_executed_text(sql: str) -> str:
    """What a MySQL server runs of `sql`: executable comments opened up."""
    return _EXECUTABLE.sub(lambda m: f" {m.group(1)} ", sql) if "/*" in sql else sql


def mysql_fingerprint(sql: str, dialect: str = "mysql") -> tuple[str, str]:
    """A MySQL statement's shape id (`mysql:<hash of its placeholder text>`), and that
    text: one id for every statement that differs only in literals."""
    text = mysql_placeholder_text(sql)
    if not text:
        return f"{dialect}:unparsable", text
    return f"{dialect}:{hashlib.blake2b(text.encode(), digest_size=8).hexdigest()}", text


def mysql_placeholder_text(sql: str) -> str:
    """A MySQL statement with every literal a `?` and comments removed: what may be shown
    or stored of it. An unterminated quote makes it "" (nothing of it is shown)."""
    sql = mysql_executed_text(sql)
    out: list[str] = []
    cursor = 0
    for found in _MYSQL_LITERALS.finditer(sql):
        token = found.group(0)
        start, end = found.span()
        out.append(sql[cursor:start])
        cursor = end
        if token[0] == "`":
            out.append(token)
        elif token[0] in "#-/":
            out.append(" ")
        elif token in ("'", '"'):
            return ""
        else:
            out.append("?")
    out.append(sql[cursor:])
    return " ".join("".join(out).split())


def _number_type(text: str) -> int:
    if text.isdigit():
        value = int(text)
        return INT4 if value <= _INT4_MAX else INT8 if value <= _INT8_MAX else NUMERIC
    return NUMERIC


# A text with every digit made 0 -> how its cut went, for texts whose digits are all in
# literals: another text with the same digit-less form is the same template with other
# numbers, cut at the same places (a number's type is read again: 10 digits may be int8).
_DIGITS = str.maketrans("123456789", "000000000")
_SHORTCUTS: dict[str, tuple[tuple[str, tuple[int, ...]], tuple[tuple[int, int], ...],
                            tuple[int, ...]]] = {}  # fmt: skip
_SHORTCUTS_MAX = 10_000
_WIDE = 10  # digits from which an integer's type depends on its value


def split(sql: str) -> Split | None:
    """Cut `sql` at its literals; None if the text holds something the cut cannot read."""
    form = sql.translate(_DIGITS)
    shortcut = _SHORTCUTS.get(form)
    if shortcut is not None:
        key, spans, kinds = shortcut
        values = []
        for (start, end), kind in zip(spans, kinds, strict=True):
            if kind == UNKNOWN:
                body = sql[start + 1 : end - 1]
                values.append(body.replace("''", "'") if "''" in body else body)
            elif kind == INT4 and end - start >= _WIDE:
                return _cut(sql, form)  # the type may differ: cut it properly
            else:
                values.append(sql[start:end])
        return Split(key, tuple(values), spans)
    return _cut(sql, form)


def _cut(sql: str, form: str) -> Split | None:
    pieces: list[str] = []
    types: list[int] = []
    values: list[str] = []
    spans: list[tuple[int, int]] = []
    cursor = 0
    for found in _TOKENS.finditer(sql):
        body = found.group(1)
        if body is not None:
            values.append(body.replace("''", "'") if "''" in body else body)
            types.append(UNKNOWN)
        else:
            number = found.group(2)
            if number is None:
                if found.group(3) is not None:
                    return None
                continue
            values.append(number)
            types.append(_number_type(number))
        start, end = found.span()
        pieces.append(sql[cursor:start])
        spans.append((start, end))
        cursor = end
    if not spans:
        return None
    pieces.append(sql[cursor:])
    cut = Split(("\x00".join(pieces), tuple(types)), tuple(values), tuple(spans))
    if not any(c.isdigit() for piece in pieces for c in piece):
        if len(_SHORTCUTS) >= _SHORTCUTS_MAX:
            _SHORTCUTS.clear()
        # An integer's type is read from its value: any width of digits is kind INT4.
        kinds = tuple(INT4 if t != UNKNOWN and values[i].isdigit() else t
                      for i, t in enumerate(types))  # fmt: skip
        _SHORTCUTS[form] = (cut.key, cut.spans, kinds)
    return cut


def _signed_type(value: str) -> int:
    digits = value[1:] if value.startswith("-") else value
    if not digits.isdigit():
        return NUMERIC
    number = int(value)
    if -_INT4_MAX - 1 <= number <= _INT4_MAX:
        return INT4
    return INT8 if -_INT8_MAX - 1 <= number <= _INT8_MAX else NUMERIC


def param_values(template: Template, cut: Split) -> tuple[str, ...] | None:
    """The parameter values of one execution; None if it cannot run as `template`
    (a literal left in the text differs, or a folded minus changes a type)."""
    if template.plain:
        return cut.values
    for index, value in template.kept:
        if cut.values[index] != value:
            return None
    out = []
    for index, negated, type_ in zip(template.params, template.negated, template.types,
                                     strict=True):  # fmt: skip
        value = cut.values[index]
        if negated:
            value = "-" + value
            if _signed_type(value) != type_:
                return None
        out.append(value)
    return tuple(out)


# --- the one parse per template ------------------------------------------------------------


class _Const(NamedTuple):
    value: str | None  # the constant as text (None: not a number or a string)
    keep: bool  # it must stay a literal


def _const_value(node: dict[str, Any]) -> str | None:
    if "ival" in node:
        return str(node["ival"].get("ival", 0))
    if "fval" in node:
        return str(node["fval"]["fval"])
    if "sval" in node:
        return str(node["sval"].get("sval", ""))
    return None


def _constants(tree: Any, found: dict[int, _Const], keep: bool = False) -> bool:
    """Collect every A_Const by byte location; False if the statement may not be prepared."""
    if isinstance(tree, list):
        return all(_constants(item, found, keep) for item in tree)
    if not isinstance(tree, dict):
        return True
    for cls, body in tree.items():
        if not isinstance(body, dict):
            if not _constants(body, found, keep):
                return False
            continue
        if cls == "A_Const":
            found[body.get("location", -1)] = _Const(_const_value(body), keep)
            continue
        if cls == "FuncCall":
            name = body["funcname"][-1]["String"]["sval"]
            if name in _SESSION_FUNCTIONS:
                return False
        if cls == "SelectStmt" and "intoClause" in body:
            return False
        for field, value in body.items():
            # A type's modifiers (`varchar(10)`) are constants by the grammar.
            inner = keep or field in ("typeName", "typmods")
            if cls == "TypeCast" and field == "arg":
                # `date '...'`: the type name is written before its string, which must stay one.
                inner = keep or body["typeName"].get("location", -1) < _location(value)
            elif cls == "SortBy" and field == "node":
                inner = keep or _is_const(value)  # a position in the select list
            elif field in _POSITIONAL and isinstance(value, list):
                if not all(_constants(item, found, keep or _is_const(item)) for item in value):
                    return False
                continue
            if not _constants(value, found, inner):
                return False
    return True


def _location(node: Any) -> int:
    if isinstance(node, dict) and len(node) == 1:
        body = next(iter(node.values()))
        if isinstance(body, dict):
            return int(body.get("location", -1))
    return -1


def _is_const(node: Any) -> bool:
    return isinstance(node, dict) and "A_Const" in node


def dml_statement(sql: str) -> dict[str, Any] | None:
    """The parse tree of `sql` if it is exactly one SELECT, INSERT, UPDATE or DELETE."""
    try:
        statements = parse_json(sql)
    except LoweringError:
        return None
    if len(statements) != 1:
        return None
    stmt: dict[str, Any] = statements[0]["stmt"]
    return stmt if next(iter(stmt)) in _STATEMENTS else None


def parameterize(sql: str, cut: Split) -> Template | None:
    """The prepared form of every text with `cut.key`; None if they cannot be prepared."""
    stmt = dml_statement(sql)
    if stmt is None:
        return None
    constants: dict[int, _Const] = {}
    if not _constants(stmt, constants):
        return None
    encoded = sql.encode()
    # libpg_query's locations count bytes; the cut counts characters.
    byte_at = (lambda i: i) if len(encoded) == len(sql) else (lambda i: len(sql[:i].encode()))
    text: list[str] = []
    params: list[int] = []
    negated: list[bool] = []
    types: list[int] = []
    kept: list[tuple[int, str]] = []
    cursor = 0
    for index, (start, end) in enumerate(cut.spans):
        value, type_ = cut.values[index], cut.key[1][index]
        const = constants.get(byte_at(start))
        minus = None
        if const is None:
            # A unary minus is folded into the constant, which then starts at the '-'.
            before = sql[:start].rstrip()
            if before.endswith("-"):
                minus = len(before) - 1
                const = constants.get(byte_at(minus))
        if const is None or const.value is None:
            return None
        if minus is not None:
            signed = "-" + value
            if const.value not in (signed, str(int(signed)) if signed[1:].isdigit() else None):
                return None
            type_ = _signed_type(signed)
        elif const.value != value and not (value.isdigit() and const.value == str(int(value))):
            return None
        if const.keep:
            kept.append((index, value))
            continue
        text.append(sql[cursor : minus if minus is not None else start])
        params.append(index)
        negated.append(minus is not None)
        types.append(type_)
        text.append(f"${len(params)}")
        cursor = end
    if not params:
        return None
    text.append(sql[cursor:])
    plain = not kept and not any(negated) and len(params) == len(cut.spans)
    return Template("".join(text), tuple(params), tuple(negated), tuple(types), tuple(kept),
                    plain)  # fmt: skip
