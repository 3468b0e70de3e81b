"""Telemetry events of AIR (spec §12), delivered to callbacks the caller attaches.

`air.parse`, `air.normalize` and `air.plan` each report `start`, then `ok` or
`error`; `air.hash.mismatch` reports a non-deterministic structure. Every
event carries `trace_id` and `air_id` (when known). With no callback attached
emitting costs one truthiness test.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Callback = Callable[[str, dict[str, Any]], None]
_callbacks: list[Callback] = []


def subscribe(callback: Callback) -> Callable[[], None]:
    """Attach a callback; returns a function that detaches it."""
    _callbacks.append(callback)
    return lambda: _callbacks.remove(callback)


def emit(name: str, **payload: Any) -> None:
    if _callbacks:
        payload.setdefault("trace_id", None)
        payload.setdefault("air_id", None)
        for callback in list(_callbacks):
            callback(name, payload)


def enabled() -> bool:
    return bool(_callbacks)
