"""Process-wide settings the proxy applies once, before it accepts connections.

Garbage collection: lowering a statement allocates thousands of small
containers (parse-tree dicts, node tuples) that die young. CPython's default
first-generation threshold (700) runs a collection several times per large
statement, and each full collection walks every long-lived object (the
parsers' modules, caches). Freezing what exists at startup and raising the
first threshold keeps collections rare and cheap; reference counting still
frees the garbage itself at once.
"""

from __future__ import annotations

import gc

GC_THRESHOLDS = (10_000, 10, 10)


def tune_gc() -> None:
    """Freeze the objects alive now out of collections; collect young objects less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
