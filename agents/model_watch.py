"""Which reward model the proxy serves, and telling when that changes.

At start-up (before the proxy accepts connections) and whenever the
registry file changes (checked every `interval_s`, and on SIGHUP), the
registry's prod, approved version is loaded if its artifact's sha256
matches (`models.serving.load`); the plan cache then scores every shape
again with it. Each change is logged as the spec's `ai.model.update`
event; a refused model is logged with its reason and the proxy goes on
with heuristic scores.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import structlog

from sqlx.agents.explain import Explanation, ExplanationLog, new_id
from sqlx.agents.plan_cache import PlanCache
from sqlx.models.registry import SHIPPED, Registry
from sqlx.models.serving import HEURISTIC, load

log = structlog.get_logger("sqlx.models")


class ModelWatch:
    def __init__(self, folder: Path, model_id: str, plans: PlanCache,
                 log: ExplanationLog | None = None) -> None:  # fmt: skip
        self.registry = Registry(folder)
        self.explanations = log
        self.model_id = model_id
        self.plans = plans
        self.served = HEURISTIC
        self.reason = ""
        self._stamp: tuple[float, int] | None = None

    def start(self) -> None:
        if self.registry.seed_from(SHIPPED):
            log.info("model registry seeded with the shipped model", path=str(self.registry.path))
        self.check(force=True)

    def check(self, force: bool = False) -> None:
        """Load the registry's servable version again if the registry file changed."""
        try:
            stat = self.registry.path.stat()
            stamp: tuple[float, int] | None = (stat.st_mtime, stat.st_size)
        except OSError:
            stamp = None
        if stamp == self._stamp and not force:
            return
        self._stamp = stamp
        loaded = load(self.registry, self.model_id)
        version = loaded.model.version if loaded.model is not None else HEURISTIC
        self.reason = loaded.reason
        if loaded.model is None:
            log.warning("reward model not served; scoring with the heuristic",
                        model_id=self.model_id, reason=loaded.reason)  # fmt: skip
        if version != self.served or force:
            self.plans.serve(loaded.model)
            previous, self.served = self.served, version
            sha256 = loaded.model.entry.sha256 if loaded.model else None
            log.info("ai.model.update", model_id=self.model_id, served=version,
                     previous=previous, reason=loaded.reason, sha256=sha256)  # fmt: skip
            if self.explanations is not None:
                self.explanations.write(Explanation(
                    id=new_id(), decision="model-update", agent="optimizer",
                    reason=f"shapes are scored by {version}: {loaded.reason}",
                    evidence={"model_id": self.model_id, "served": version,
                              "previous": previous, "sha256": sha256},
                    policy_impact="none: scores inform, they never change a verdict"))  # fmt: skip

    async def watch(self, interval_s: float = 5.0) -> None:
        while True:
            await asyncio.sleep(interval_s)
            self.check()
