"""Auto-prepare: a simple-protocol statement whose template repeats runs as a prepared one.

`AutoPrepare` wraps the inline decider. For a statement the policy allows
as it is, sent as a simple Query, it cuts the literals out of the text
(`air.parameters.split`) and counts the template. Once a template has been
seen `threshold` times it is checked once with PostgreSQL's parser
(`air.parameters.parameterize`); from then on every execution of it gets a
`Prepared` on its decision: the statement name, the `$n` text, the
parameter types and this execution's values. The session parses the
statement once per upstream connection (and checks the server describes it
exactly as it describes the Query) and then sends Bind/Execute instead of
the Query. A statement the server refuses, or would answer differently, is
reported back and never prepared again.

Each template that starts to be prepared is explained once in the
explanation log; the explanation shows the shape with placeholders, never a
literal.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

from sqlx.agents.explain import Explanation, ExplanationLog, new_id
from sqlx.agents.plan_cache import PlanCache
from sqlx.air import parameters
from sqlx.air.pg import fingerprint_of, known_fingerprint
from sqlx.config.schema import AutoPrepareConfig
from sqlx.proxy.decision import (
    ALLOW,
    Decider,
    Decision,
    Outcome,
    Path,
    Prepared,
    Statement,
    Verdict,
)

_NOT_PREPARABLE = None


class _Entry:
    """A template that is prepared: everything but the values."""

    __slots__ = ("fingerprint", "name", "template")

    def __init__(self, template: parameters.Template, fingerprint: str | None) -> None:
        self.template = template
        self.fingerprint = fingerprint
        digest = hashlib.blake2b(f"{template.text}\x00{template.types}".encode(), digest_size=8)
        self.name = f"sqlx_ap_{digest.hexdigest()}"


class AutoPrepare:
    """A decider wrapped with auto-prepare (see the module docstring)."""

    def __init__(self, inner: Decider, config: AutoPrepareConfig, log: ExplanationLog | None = None,
                 plans: PlanCache | None = None) -> None:  # fmt: skip
        self.inner = inner
        self.plans = plans
        self.config = config
        self.log = log
        # Template key -> executions seen so far (int), its entry, or None (not preparable).
        self._templates: OrderedDict[tuple[str, tuple[int, ...]], int | _Entry | None]
        self._templates = OrderedDict()
        self._by_name: dict[str, _Entry] = {}
        self.executions = 0  # statements sent as prepared executions
        self.refused = 0  # templates the server refused or would answer differently
        for hook in ("prepare", "masks"):
            if hasattr(inner, hook):
                setattr(self, hook, getattr(inner, hook))

    # --- the hook -------------------------------------------------------------------

    def decide(self, statement: Statement) -> Decision:
        if statement.path is not Path.SIMPLE or statement.escapes:
            return self.inner.decide(statement)
        cut = parameters.split(statement.sql)
        found = self._templates.get(cut.key, 0) if cut is not None else None
        if isinstance(found, _Entry) and found.fingerprint:
            # Literals do not change a fingerprint: the text's is its template's.
            known_fingerprint(statement.sql, found.fingerprint)
        decision = self.inner.decide(statement)
        if decision is not ALLOW or cut is None or found is _NOT_PREPARABLE:
            return decision
        if isinstance(found, int):
            found = self._count(statement.sql, cut, found)
            if found is None:
                return decision
        values = parameters.param_values(found.template, cut)
        if values is None:
            return decision
        template = found.template
        prepared = Prepared(found.name, template.text, template.types, values, cut.spans,
                            template.params)  # fmt: skip
        plan = self.plans.entry_of(found.fingerprint) if self.plans is not None else None
        if plan is None:
            return Decision(Verdict.ALLOW, fingerprint=found.fingerprint, prepared=prepared)
        return Decision(Verdict.ALLOW, fingerprint=found.fingerprint, score=plan.score,
                        klass=plan.klass, prepared=prepared)  # fmt: skip

    def observe(self, outcome: Outcome) -> None:
        self.inner.observe(outcome)

    def unpreparable(self, name: str, reason: str) -> None:
        """The server refused a template, or would answer it differently."""
        entry = self._by_name.pop(name, None)
        if entry is None:
            return
        self.refused += 1
        for key, value in self._templates.items():
            if value is entry:
                self._templates[key] = _NOT_PREPARABLE
        self._explain(entry, "auto-prepare-off", f"not prepared: {reason}; runs as it came")

    # --- templates --------------------------------------------------------------------

    def _count(self, sql: str, cut: parameters.Split, seen: int) -> _Entry | None:
        """One more execution of a template not yet prepared; its entry once it is."""
        templates = self._templates
        seen += 1
        if seen < self.config.threshold:
            templates[cut.key] = seen
            if len(templates) > self.config.max_templates:
                _, evicted = templates.popitem(last=False)
                if isinstance(evicted, _Entry):
                    self._by_name.pop(evicted.name, None)
            return None
        template = parameters.parameterize(sql, cut)
        if template is None:
            templates[cut.key] = _NOT_PREPARABLE
            return None
        entry = _Entry(template, fingerprint_of(sql))
        templates[cut.key] = entry
        self._by_name[entry.name] = entry
        self._explain(entry, "auto-prepare", (
            f"this statement's template ran {seen} times as a simple query: it now runs as "
            "a server-side prepared statement, parsed once per connection, its literals "
            "bound as parameters of the types PostgreSQL gives them"))  # fmt: skip
        return entry

    def _explain(self, entry: _Entry, decision: str, reason: str) -> None:
        if self.log is None:
            return
        evidence: dict[str, Any] = {
            "statement": entry.name,
            "parameters": len(entry.template.params),
            "types": list(entry.template.types),
            "threshold": self.config.threshold,
            "text": parameters.placeholder_text(entry.template.text),
        }
        self.log.write(Explanation(
            id=new_id(), decision=decision, reason=reason, evidence=evidence,
            confidence=1.0, fingerprint=entry.fingerprint, agent="optimizer",
            policy_impact="none: the policy's verdict is unchanged",
        ))  # fmt: skip

    @property
    def prepared_templates(self) -> int:
        return len(self._by_name)
