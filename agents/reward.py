"""The copilot's reward for one query shape over one window (spec §4.1).

    R = a1*(-latency_ms) + a2*(-error_rate) + a3*policy_compliance
        + a4*cache_hit_ratio + a5*availability

with the weights of `aif.reward` in the config and, for the window:

- latency_ms: mean latency through the proxy;
- error_rate: executions the server failed / executions;
- policy_compliance: executions that ran within policy (allowed, or rewritten
  so that they comply) / executions; a denied execution counts 0;
- cache_hit_ratio: executions that ran as the plan cache's prepared
  statement (auto-prepare) / executions;
- availability: executions not lost to a connection failure (SQLSTATE
  class 08) / executions.

Every input is a ratio in [0, 1] except latency, so a1 sets how many
milliseconds one point of the others is worth.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlx.config.schema import RewardWeights


@dataclass(frozen=True, slots=True)
class Window:
    """What one shape did over one window, as the reward reads it."""

    calls: int
    latency_ms: float  # mean
    errors: int
    denied: int
    connection_errors: int
    cache_hits: int


def components(w: Window) -> dict[str, float]:
    calls = max(w.calls, 1)
    return {
        "latency_ms": w.latency_ms,
        "error_rate": w.errors / calls,
        "policy_compliance": 1.0 - w.denied / calls,
        "cache_hit_ratio": w.cache_hits / calls,
        "availability": 1.0 - w.connection_errors / calls,
    }


def reward(w: Window, weights: RewardWeights) -> float:
    c = components(w)
    return (
        weights.latency * -c["latency_ms"]
        + weights.error_rate * -c["error_rate"]
        + weights.policy_compliance * c["policy_compliance"]
        + weights.cache_hit_ratio * c["cache_hit_ratio"]
        + weights.availability * c["availability"]
    )
