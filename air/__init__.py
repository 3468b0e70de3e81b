"""AIR: the dialect-neutral SQL graph (spec: shared/specs/air-spec.md).

Owns SQL meaning: lowering, normalisation, emission, identity. Pure: SQL in,
values out; no I/O. Entry points:

    graph = sqlx.air.lower("SELECT ...", dialect="postgres")
    sqlx.air.emit(graph, "tsql"); graph.to_json(); graph.hash64; sqlx.air.fingerprint(graph)
"""

from sqlx.air.api import emit, fingerprint, literals, lower, lower_all, transpile
from sqlx.air.errors import EmissionError, LoweringError
from sqlx.air.model import AIRCaps, AIRContext, AIRGraph, AIRNode, AIRTrace

__all__ = [
    "AIRCaps", "AIRContext", "AIRGraph", "AIRNode", "AIRTrace", "EmissionError",
    "LoweringError", "emit", "fingerprint", "literals", "lower", "lower_all", "transpile",
]  # fmt: skip
