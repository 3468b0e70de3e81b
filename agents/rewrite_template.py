"""A statement's rewrite (masks and filters applied) as a template its literals fill.

A rewrite carries the client's literals, so it used to be made again for every new
literal: a lowering, an evaluation and a rewrite (about 2 ms) for each point query of
a masked session. A template is made once per text shape (the text with each literal
cut out) and checked before it is trusted:

1. The statement is rewritten again with every literal replaced by a sentinel of its
   kind (a string or an integer found nowhere else in the text). The verdict must be
   the same, and each sentinel must come out exactly once: the rewrite then carries
   each literal through unread, to one place.
2. The template filled with the statement's own literals must give, byte for byte,
   the rewrite made of the statement itself.

A text with a position in ORDER BY or GROUP BY (`ORDER BY 2`: the number chooses a
column) gets no template, nor one with literals of other kinds (hex, bit, national
strings), which have no sentinel here. What is not templated is rewritten per text.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlx.air.scan import NUMBER, STRING, Shape, has_ordinals

# Kinds of literal a sentinel of the same kind can stand for.
_KINDS = frozenset((STRING, NUMBER))
HOLE = "\x00"  # where a literal was cut out of a text shape (no SQL text holds it)
_QUOTES = frozenset(("'", '"', "`"))


@dataclass(frozen=True, slots=True)
class Template:
    parts: tuple[str, ...]  # the rewrite's text around the literals (one more than slots)
    slots: tuple[int, ...]  # which of the statement's literals goes in each gap, in order

    def fill(self, literals: Sequence[str]) -> str:
        out = [self.parts[0]]
        for slot, part in zip(self.slots, self.parts[1:], strict=True):
            out.append(literals[slot])
            out.append(part)
        return "".join(out)


def cut(text: str, shape: Shape) -> str:
    """`text` with each literal a HOLE."""
    pieces, cursor = [], 0
    for start, end, _ in shape.literals:
        pieces.append(text[cursor:start])
        cursor = end
    pieces.append(text[cursor:])
    return HOLE.join(pieces)


def templatable(text: str, shape: Shape) -> bool:
    return (bool(shape.literals) and HOLE not in text
            and all(kind in _KINDS for kind in shape.kinds)
            and not has_ordinals(text, shape.dialect))  # fmt: skip


def build(text: str, shape: Shape, rewritten: str,
          rewrite: Callable[[str], str | None]) -> Template | None:  # fmt: skip
    """The template of `text`'s rewrite (`rewritten`), or None if it cannot be trusted.
    `rewrite(other_text)` rewrites another text as `text` was, None if its verdict or
    refusal differs."""
    if not templatable(text, shape):
        return None
    nonce = secrets.randbelow(10**8)
    while str(nonce) in text or str(nonce) in rewritten:
        nonce = secrets.randbelow(10**8)
    sentinels = [f"'sqlx{nonce}s{i}'" if kind == STRING else f"7{nonce:08d}{i:04d}"
                 for i, (_, _, kind) in enumerate(shape.literals)]  # fmt: skip
    pieces = cut(text, shape).split(HOLE)
    probe = pieces[0] + "".join(s + p for s, p in zip(sentinels, pieces[1:], strict=True))
    out = rewrite(probe)
    if out is None:
        return None
    found = [(m.start(), m.end(), sentinels.index(m.group(0)))
             for m in re.finditer("|".join(re.escape(s) for s in sentinels), out)]  # fmt: skip
    if sorted(i for _, _, i in found) != list(range(len(sentinels))):
        return None  # a literal dropped, copied or changed on its way
    for start, end, i in found:
        # A number written out again inside quotes (sqlglot's `INTERVAL '5' DAY`) would
        # be read another way with another number's text (`'.5e1'` is not 5).
        if sentinels[i][0] != "'" and (out[start - 1 : start] in _QUOTES
                                       or out[end : end + 1] in _QUOTES):  # fmt: skip
            return None
    parts, cursor = [], 0
    for start, end, _ in found:
        parts.append(out[cursor:start])
        cursor = end
    parts.append(out[cursor:])
    template = Template(tuple(parts), tuple(i for _, _, i in found))
    return template if template.fill(shape.values(text)) == rewritten else None
