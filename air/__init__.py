"""AIR: the dialect-neutral SQL graph (spec: shared/specs/air-spec.md).

Owns SQL meaning: lowering, normalisation, emission, hashing. Pure; no I/O.
The lowering itself arrives with its own issue; the proxy does not import it yet.
"""
