"""What the admin console shows, read from the running proxy's parts."""

from __future__ import annotations

from collections.abc import Callable

from sqlx.agents.decider import PolicyDecider
from sqlx.agents.explain import ExplanationLog
from sqlx.agents.plan_cache import PlanCache
from sqlx.proxy.console import Sources, when_text
from sqlx.proxy.pg.server import PgProxy
from sqlx.proxy.telemetry import Telemetry


def console_sources(proxy: PgProxy, decider: PolicyDecider, telemetry: Telemetry | None,
                    log: ExplanationLog, reload: Callable[[], None],
                    plans: PlanCache) -> Sources:  # fmt: skip
    def stats() -> list[tuple[str, object]]:
        rows: list[tuple[str, object]] = [
            ("clients", len(proxy.clients)),
            ("decisions_cached", decider.cached),
            ("decision_cache_hits", decider.hits),
            ("decision_cache_misses", decider.misses),
            ("policy_rules", len(decider.policy.rules)),
            ("plan_cache_entries", len(plans.entries)),
            ("plan_cache_hits", plans.hits),
            ("plan_cache_misses", plans.misses),
            ("plan_cache_hit_ratio", round(plans.hit_ratio, 4)),
            ("reward_model", plans.model.version if plans.model else "heuristic"),
        ]
        if telemetry is not None:
            for family in telemetry.registry.collect():
                for sample in family.samples:
                    if sample.name.endswith("_total"):
                        labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                        rows.append((f"{sample.name}{{{labels}}}", int(sample.value)))
        return rows

    def clients() -> list[tuple[object, ...]]:
        out: list[tuple[object, ...]] = []
        for pid, conn in proxy.clients.items():
            f = conn.session.facts
            if f is not None:
                status = chr(conn.session.tx_status)
                out.append((pid, f.user, f.database, f.application_name, f.client_addr, f.tls,
                            status, conn.upstream is not None))  # fmt: skip
        return out

    def policies() -> list[tuple[object, ...]]:
        return [(r.name, r.action, when_text(r.when.model_dump()), r.mask, r.predicate)
                for r in decider.policy.rules]  # fmt: skip

    def fingerprints() -> list[tuple[object, ...]]:
        if telemetry is None:
            return []
        rows = []
        for shape in telemetry.fingerprints.top():
            plan = shape.plan
            known = (plan.strategy, plan.plan_hash, plan.score, plan.klass, plan.model,
                     f"hit ratio {plans.hit_ratio:.3f}") if plan else (None,) * 6  # fmt: skip
            rows.append((shape.fingerprint, shape.text[:200], shape.calls,
                         round(shape.total_ms, 3), round(shape.total_ms / shape.calls, 3),
                         round(shape.max_ms, 3), shape.errors, shape.prepared, *known))  # fmt: skip
        return rows

    def explanations() -> list[tuple[object, ...]]:
        return [(e.id, e.to_json().get("time"), e.decision, e.user, e.database, e.summary,
                 e.evidence.get("rule"), e.reason) for e in reversed(log.recent)]  # fmt: skip

    def reload_now() -> str:
        reload()
        return "RELOAD"

    return Sources(stats, clients, policies, fingerprints, explanations, reload_now)
