"""The inline decider: the copilot's side of the proxy's decision hook.

For each statement (a simple Query's text, a Parse's text, a FunctionCall):
lower it to AIR, evaluate the policy for the session, write an explanation
for every action other than allow, and answer a `Decision`. Evaluations are
cached by exact text and everything the verdict depends on (the session's
user, database, application and address, the policy and the catalog
version): one user's verdict is never reused for another.

The same text gets the same verdict on every protocol path: the path only
matters for a FunctionCall, which carries no text.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from sqlx.agents import (
    mask,
    mask_mysql,
    rewrite_template,
    search_path,
    session_settings,
    string_escapes,
)
from sqlx.agents import policy as pol
from sqlx.agents.catalog import CatalogStore
from sqlx.agents.explain import Explanation, ExplanationLog, new_id
from sqlx.air import parameters, scan, sg
from sqlx.air.api import summary_of
from sqlx.air.cache import LoweringCache
from sqlx.air.errors import EmissionError, LoweringError
from sqlx.air.pg import fingerprint_of
from sqlx.config.policy import Policy
from sqlx.proxy.decision import (
    ALLOW,
    Decision,
    Outcome,
    Path,
    SessionFacts,
    Statement,
    Verdict,
    traceparent_of,
)

# Statements after which the catalog is read again. A word match is enough: a
# false positive costs one extra read, in the background.
_DDL = re.compile(r"\b(create|alter|drop|comment|grant|revoke)\b", re.IGNORECASE)
# Words of a statement that may change the search path (checked for sessions no rule
# applies to, which are not evaluated).
_PATH_WORDS = re.compile(r"search_path|set_config|\breset\b|\bdiscard\b", re.IGNORECASE)
# Any word of the two above: most statements are let through after this one scan.
_WATCHED_WORDS = re.compile(
    r"create|alter|drop|comment|grant|revoke|search_path|set_config|reset|discard", re.IGNORECASE
)
_DDL_KINDS = frozenset(("CREATE", "ALTER", "DROP", "COMMENT", "GRANT", "REVOKE"))
MYSQL_CATALOG = ""  # the key of the MySQL server's catalog in its store
# An allow the session tracks, so that `observe` hears how the statement ended.
_ALLOW_OBSERVED = Decision(Verdict.ALLOW, reason="schema change: the catalog is read again")
_ALLOW_WATCH = Decision(Verdict.ALLOW, reason="session setting change: followed to its outcome")


@dataclass(frozen=True)
class _Evaluated:
    outcome: pol.Outcome
    summary: str
    fingerprint: str | None
    air_id: str | None
    rewritten: str | None = None  # the statement with masks and filters applied
    refused: str | None = None  # why masks or filters could not be applied
    shape_safe: bool = False  # the verdict holds for any literals in the same shape
    ddl: bool = False  # the catalog is read again after it succeeds
    path_change: search_path.Change = None  # what it does to the session's search path
    escapes_change: bool = False  # it may turn standard_conforming_strings off
    template: rewrite_template.Template | None = None  # `rewritten` for any literals
    literal_bound: bool = False  # a literal is read for more than its value (set_config)


class _Shaped(NamedTuple):
    """A MySQL text read as tokens: where its verdict or rewrite may be shared."""

    text: str  # as the server runs it (executable comments opened)
    shape: scan.Shape
    template_key: tuple[object, ...]  # its rewrite's, for texts that differ in literals only


class PolicyDecider:
    """Decides statements against a policy; swap `policy` whole to reload it."""

    def __init__(self, policy: Policy, catalogs: CatalogStore | None, log: ExplanationLog | None,
                 cache_size: int = 10_000,
                 lowering: LoweringCache | None = None,
                 by_shape: bool = True) -> None:  # fmt: skip
        self.policy = policy
        # False: every text is decided on its own (the baseline `sqlxos bench decide`
        # measures shapes and templates against).
        self.by_shape = by_shape
        # Template keys whose rewrite could not be trusted as a template: not tried again.
        self._untemplatable: OrderedDict[tuple[object, ...], None] = OrderedDict()
        self.catalogs = catalogs
        self.log = log
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[object, ...], _Evaluated] = OrderedDict()
        self._lowering = lowering or LoweringCache(cache_size)
        self._who: dict[int, tuple[SessionFacts, Policy, pol.Who, bool]] = {}
        self.hits = 0
        self.misses = 0
        # The MySQL listener's server: one catalog for all its databases.
        self.mysql_catalogs: CatalogStore | None = None

    # --- the hook ---------------------------------------------------------------

    def decide(self, statement: Statement) -> Decision:
        policy = self.policy
        if policy.empty:
            return ALLOW
        who, guarded = self._who_of(statement.facts)
        if statement.dialect != "postgres":
            return self._decide_foreign(statement, who, guarded, policy)
        if not guarded:
            sql = statement.sql
            if not _WATCHED_WORDS.search(sql):
                return ALLOW
            if _PATH_WORDS.search(sql):
                # Not evaluated, so not followed: should a reload make a rule apply to
                # this session, its path is then unknown rather than wrongly assumed.
                search_path.forget(statement.facts)
            return _ALLOW_OBSERVED if _DDL.search(sql) else ALLOW
        if string_escapes.misread(statement) and policy.fail_closed:
            refused = _Evaluated(string_escapes.REFUSED, "UNREADABLE", None, None)
            return self._decision(refused, who, statement.sql)
        evaluated = self._evaluate(statement, who, policy)
        decision = self._decision(evaluated, who, statement.sql)
        if evaluated.path_change is not None or evaluated.escapes_change:
            if evaluated.path_change is not None:
                search_path.deciding(statement, evaluated.path_change)
            if evaluated.escapes_change:
                string_escapes.deciding(statement)
            return _ALLOW_WATCH if decision is ALLOW else decision
        if decision is ALLOW and evaluated.ddl:
            return _ALLOW_OBSERVED
        return decision

    def _decide_foreign(self, statement: Statement, who: pol.Who, guarded: bool,
                        policy: Policy) -> Decision:  # fmt: skip
        """A statement from the MySQL listener: lowered in MySQL's dialect (executable
        comments opened, as the server runs them), evaluated against the server's catalog
        with the session's default database standing for the search path, and its masks
        and filters written in MySQL's dialect."""
        if not guarded:
            ddl = self.mysql_catalogs is not None and _WATCHED_WORDS.search(statement.sql)
            return _ALLOW_OBSERVED if ddl and _DDL.search(statement.sql) else ALLOW
        if policy.fail_closed and string_escapes.mysql_misread(statement):
            refused = _Evaluated(string_escapes.MYSQL_REFUSED, "UNREADABLE", None, None)
            return self._decision(refused, who, statement.sql)
        store = self.mysql_catalogs
        catalog = store.get(MYSQL_CATALOG) if store is not None else pol.Catalog()
        key = (statement.dialect, statement.sql, who, catalog.version)
        found = self._cache.get(key)
        shape_key: tuple[object, ...] | None = None
        shaped: _Shaped | None = None
        if found is not None:
            self._cache.move_to_end(key)
        else:
            # As on PostgreSQL, a verdict no literal can change is shared by the texts of
            # its shape: the tokens the lowering reads, literal values left out; and a
            # rewrite by the texts that differ from it only in literals, as a template.
            # Not for a text with `"` or `\`: its tokens depend on sql_mode
            # (ANSI_QUOTES, NO_BACKSLASH_ESCAPES), which the tokenizer does not know.
            text = parameters.mysql_executed_text(statement.sql)
            readable = self.by_shape and '"' not in text and "\\" not in text
            shape = scan.shape_of(text, statement.dialect) if readable else None
            if shape is not None:
                rest = (statement.dialect, *key[2:])
                shape_key = ("shape", shape.key, *rest)
                found = self._cache.get(shape_key)
                if found is None:
                    template_key = ("template", rewrite_template.cut(text, shape), shape.kinds,
                                    *rest)  # fmt: skip
                    shaped = _Shaped(text, shape, template_key)
                    found = self._filled(self._cache.get(template_key), text, shape)
        if found is not None:
            self.hits += 1  # a shape's verdict is not remembered by text too
        else:
            self.misses += 1
            found = self._decide_mysql(statement, who, policy, catalog, key, shape_key, shaped)
        decision = self._decision(found, who, statement.sql)
        if decision is ALLOW and found.ddl:
            return _ALLOW_OBSERVED
        return decision

    def _decide_mysql(self, statement: Statement, who: pol.Who, policy: Policy,
                      catalog: pol.Catalog, key: tuple[object, ...],
                      shape_key: tuple[object, ...] | None,
                      shaped: _Shaped | None) -> _Evaluated:  # fmt: skip
        # The default database is where unqualified names are looked up; with none, an
        # unqualified name stands for a table of that name in any database.
        path = (who.database.lower(),) if who.database else None
        catalog = catalog.with_path(path)
        found = self._evaluate_mysql(statement, who, policy, catalog)
        if any(f.rule == pol.STALE for f in found.outcome.findings):
            if self.mysql_catalogs is not None:
                self.mysql_catalogs.refresh(MYSQL_CATALOG)
            return found
        # A text sqlglot could not read may differ from its shape's others in more than
        # literals.
        if shape_key is None or shaped is None or found.summary == "UNPARSABLE":
            self._remember(key, found)
        elif found.outcome.action in ("allow", "deny", "audit"):
            self._remember(shape_key, found)
        else:
            self._remember_rewrite(key, shaped.template_key, statement._replace(sql=shaped.text),
                                   who, policy, catalog, shaped.shape, found,
                                   self._evaluate_mysql)  # fmt: skip
        return found

    @staticmethod
    def _filled(found: _Evaluated | None, text: str, shape: scan.Shape) -> _Evaluated | None:
        """A remembered rewrite for `text`: its template filled with `text`'s literals."""
        if found is None or found.template is None:
            return found
        return dataclasses.replace(found, rewritten=found.template.fill(shape.values(text)))

    def _remember_rewrite(self, key: tuple[object, ...], shared_key: tuple[object, ...],
                          statement: Statement, who: pol.Who, policy: Policy,
                          catalog: pol.Catalog, shape: scan.Shape, found: _Evaluated,
                          evaluate: Callable[[Statement, pol.Who, Policy, pol.Catalog],
                                             _Evaluated]) -> None:  # fmt: skip
        """Remember `found` as a template under `shared_key` when its rewrite can be one
        (checked by `evaluate`, see rewrite_template), else by exact text. A shape whose
        template failed its check is not tried again."""
        template = None
        if self._templatable(found) and shared_key not in self._untemplatable:
            rules = {f.rule for f in found.outcome.findings}

            def rewrite(probe: str) -> str | None:
                other = evaluate(statement._replace(sql=probe), who, policy, catalog)
                same = (other.outcome.action == found.outcome.action and other.refused is None
                        and {f.rule for f in other.outcome.findings} == rules
                        and not other.literal_bound)  # fmt: skip
                return other.rewritten if same else None

            assert found.rewritten is not None
            template = rewrite_template.build(statement.sql, shape, found.rewritten, rewrite)
            if template is None:
                self._untemplatable[shared_key] = None
                if len(self._untemplatable) > self.cache_size:
                    self._untemplatable.popitem(last=False)
        if template is not None:
            self._remember(shared_key, dataclasses.replace(found, template=template))
        else:
            self._remember(key, found)

    def _either_quoting(self, text: str, outcome: pol.Outcome, who: pol.Who, policy: Policy,
                        catalog: pol.Catalog) -> pol.Outcome:  # fmt: skip
        """The stronger of the verdicts for `"x"` read as a string and as a name: a
        session's sql_mode may have ANSI_QUOTES, which no status flag reports. (A text
        that does not parse with names in double quotes would fail on such a server
        too: that reading then adds nothing.)"""
        try:
            graphs = self._lowering.lower_all(text, sg.MYSQL_ANSI_QUOTES)
        except LoweringError:
            return outcome
        other = pol.evaluate(graphs, who, policy, catalog)
        return pol.combine([*outcome.findings, *other.findings]) if other.findings else outcome

    def _evaluate_mysql(self, statement: Statement, who: pol.Who, policy: Policy,
                        catalog: pol.Catalog) -> _Evaluated:  # fmt: skip
        text = parameters.mysql_executed_text(statement.sql)
        try:
            graphs = self._lowering.lower_all(text, statement.dialect)
        except LoweringError as exc:
            return _Evaluated(pol.unparsable(policy, who, exc.message), "UNPARSABLE", None, None)
        if not catalog.known and policy.fail_closed:
            outcome = pol.combine([pol.Finding("fail-closed", "deny", reason=(
                f"the catalog of the {statement.dialect} server could not be read"))])  # fmt: skip
        else:
            outcome = pol.evaluate(graphs, who, policy, catalog)
            if '"' in text:
                outcome = self._either_quoting(text, outcome, who, policy, catalog)
        rewritten = refused = None
        if outcome.action in ("mask", "filter"):
            names = {f.rule for f in outcome.findings if f.action in ("mask", "filter")}
            try:
                rewritten = mask_mysql.rewrite(graphs, policy, who, catalog, names, text)
            except mask.Refused as exc:
                refused = str(exc)
        fp = parameters.mysql_fingerprint(statement.sql)[0] if outcome.action != "allow" else None
        ddl = any(n.type == "statement" and n.kind in _DDL_KINDS for g in graphs for n in g.walk())
        return _Evaluated(outcome, summary_of(graphs), fp, graphs[0].root if graphs else None,
                          rewritten, refused, False, ddl)  # fmt: skip

    def observe(self, outcome: Outcome) -> None:
        for purpose, payload in session_settings.answered(outcome):
            if purpose == search_path.PURPOSE:
                search_path.settle(outcome, payload)
        catalogs, database = self.catalogs, outcome.statements[0].facts.database
        if outcome.statements[0].dialect == "mysql":
            catalogs, database = self.mysql_catalogs, MYSQL_CATALOG
        if catalogs is None:
            return
        if outcome.error_sqlstate is not None:
            # A rewrite names the columns the catalog lists: if one is gone (dropped
            # behind the proxy's back), read the catalog again.
            if outcome.error_sqlstate in ("42703", "42P01") and (
                    outcome.decision.verdict is Verdict.REWRITE):  # fmt: skip
                catalogs.refresh(database)
            return
        decision = outcome.decision
        # Every statement is observed when telemetry is on: only the allows that are
        # not the common one (schema changes, audits) are worth a look.
        if decision is _ALLOW_OBSERVED or (
            decision is not ALLOW
            and decision.verdict is Verdict.ALLOW
            and any(_DDL.search(st.sql) for st in outcome.statements)
        ):
            catalogs.refresh(database)

    async def prepare(self, facts: SessionFacts) -> str | None:
        """Before a session is connected: read its database's catalog; refuse a guarded
        session whose startup packet would give it another identity."""
        search_path.start(facts)
        policy = self.policy
        if policy.empty:
            return None
        who, _any_rule = self._who_of(facts)
        if pol.guarded(policy, who):
            why = pol.startup_identity(facts.settings)
            if why:
                self._explain_session(who, why)
                return f"permission denied by policy: {why}"
        if self.catalogs is not None:
            await self.catalogs.prepare(facts.database)
        return None

    def masks(self, facts: SessionFacts) -> bool:
        """Whether a mask rule applies to the session (its errors' details are hidden)."""
        return not self.policy.empty and pol.masked(self.policy, self._who_of(facts)[0])

    def _explain_session(self, who: pol.Who, why: str) -> None:
        if self.log is not None:
            self.log.write(Explanation(
                id=new_id(), decision="deny", reason=why, evidence={"rule": "identity"},
                policy_impact="session refused", user=who.user, database=who.database,
                summary="STARTUP"))  # fmt: skip

    def reload(self, policy: Policy) -> None:
        self.policy = policy
        self.invalidate()

    def invalidate(self) -> None:
        self._cache.clear()
        self._untemplatable.clear()

    @property
    def cached(self) -> int:
        return len(self._cache)

    # --- evaluation ---------------------------------------------------------------

    def _who_of(self, facts: SessionFacts) -> tuple[pol.Who, bool]:
        """The policy's view of a session, and whether any rule applies to it (remembered
        per session and policy)."""
        found = self._who.get(id(facts))
        if found is not None and found[0] is facts and found[1] is self.policy:
            return found[2], found[3]
        who = pol.Who(facts.user, facts.database, facts.application_name, facts.client_addr)
        ruled = bool(pol.session_rules(self.policy, who))
        if len(self._who) > 10_000:
            self._who.clear()
        self._who[id(facts)] = (facts, self.policy, who, ruled)
        return who, ruled

    def _catalog(self, database: str) -> pol.Catalog:
        return self.catalogs.get(database) if self.catalogs is not None else pol.Catalog()

    def _evaluate(self, statement: Statement, who: pol.Who, policy: Policy) -> _Evaluated:
        catalog = self._catalog(who.database)
        path = search_path.current(statement.facts, catalog)
        key = (statement.sql, statement.function_oid, who, catalog.version, path)
        found = self._cache.get(key)
        if found is not None:
            self.hits += 1
            self._cache.move_to_end(key)
            return found
        # A verdict that cannot depend on literals is shared by every text of the
        # same shape: its tokens as PostgreSQL's scanner reads them, literal values left
        # out (names kept: a fingerprint leaves out aliases, which choose what a name
        # reads). A repeat with new literals costs a scan, not a lowering.
        readable = bool(statement.sql) and self.by_shape
        shape = scan.shape_of(statement.sql, "postgres") if readable else None
        shape_key: tuple[object, ...] | None = None
        if shape is not None:
            shape_key = ("shape", shape.key, *key[1:])
            found = self._cache.get(shape_key)
            # A shape's rewrite is a template its literals fill (the shape is the text
            # with its literals cut out), not where a backslash may be read two ways.
            if found is not None and found.template is not None and "\\" in statement.sql:
                found = None
            found = self._filled(found, statement.sql, shape)
        if found is not None:
            self.hits += 1  # not remembered by text too: the shape costs a lookup
            return found
        self.misses += 1
        catalog = catalog.with_path(path)
        found = self._evaluate_uncached(statement, who, policy, catalog)
        if any(f.rule == pol.STALE for f in found.outcome.findings):
            if self.catalogs is not None:
                self.catalogs.refresh(who.database)
            return found  # not remembered: the next try sees the catalog read again
        if shape_key and found.shape_safe:
            self._remember(shape_key, found)
        elif shape_key is not None and shape is not None and "\\" not in statement.sql:
            self._remember_rewrite(key, shape_key, statement, who, policy, catalog, shape, found,
                                   self._evaluate_uncached)  # fmt: skip
        else:
            self._remember(key, found)
        return found

    @staticmethod
    def _templatable(found: _Evaluated) -> bool:
        return (found.rewritten is not None and found.refused is None
                and not found.literal_bound and found.path_change is None
                and not found.escapes_change)  # fmt: skip

    def _remember(self, key: tuple[object, ...], found: _Evaluated) -> None:
        self._cache[key] = found
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def _evaluate_uncached(self, statement: Statement, who: pol.Who, policy: Policy,
                           catalog: pol.Catalog) -> _Evaluated:  # fmt: skip
        if statement.path is Path.FUNCTION_CALL:
            summary_ = f"FUNCTION_CALL {statement.function_oid}"
            return _Evaluated(pol.function_call(policy, who), summary_, None, None)
        try:
            graphs = self._lowering.lower_all(statement.sql)
        except LoweringError as exc:
            return _Evaluated(pol.unparsable(policy, who, exc.message), "UNPARSABLE", None, None)
        changes = [c for g in graphs for c in session_settings.changes(g)]
        path_change = search_path.change_of(changes, len(graphs))
        if path_change is not None and len(graphs) > 1:
            catalog = catalog.with_path(None)  # its later statements run with a new path
        escapes_change = string_escapes.may_change(changes)
        if escapes_change and len(graphs) > 1 and "\\" in statement.sql and policy.fail_closed:
            return _Evaluated(string_escapes.REFUSED, summary_of(graphs), None, graphs[0].root)
        if not catalog.known and pol.guarded(policy, who) and policy.fail_closed:
            outcome = pol.combine([pol.Finding(
                "fail-closed", "deny",
                reason=f"the catalog of database {who.database!r} could not be read")])  # fmt: skip
        else:
            outcome = pol.evaluate(graphs, who, policy, catalog)
        fp = fingerprint_of(graphs[0].source) if outcome.action != "allow" and graphs else None
        air_id = graphs[0].root if graphs else None
        rewritten = refused = None
        if outcome.action in ("mask", "filter"):
            names = {f.rule for f in outcome.findings if f.action in ("mask", "filter")}
            try:
                rewritten = mask.rewrite(graphs, policy, who, catalog, names)
            except mask.Refused as exc:
                refused = str(exc)
            except (LoweringError, EmissionError) as exc:
                refused = f"the rewritten statement is not valid: {exc}"
        # A rewrite carries the statement's literals; set_config's verdict reads one.
        literal_bound = any(session_settings.is_set_config(n) for g in graphs for n in g.walk())
        # A change of search path or string escapes carries its own value (`SET
        # search_path TO 'a'`): the session follows that value, not another text's.
        shape_safe = (outcome.action in ("allow", "deny", "audit") and not literal_bound
                      and path_change is None and not escapes_change)  # fmt: skip
        ddl = any(n.type == "statement" and n.kind in _DDL_KINDS for g in graphs for n in g.walk())
        return _Evaluated(outcome, summary_of(graphs), fp, air_id, rewritten, refused, shape_safe,
                          ddl, path_change, escapes_change,
                          literal_bound=literal_bound)  # fmt: skip

    # --- the answer ----------------------------------------------------------------

    def _decision(self, evaluated: _Evaluated, who: pol.Who, sql: str) -> Decision:
        outcome = evaluated.outcome
        if outcome.action == "allow":
            return ALLOW
        finding = outcome.deciding
        assert finding is not None
        explanation_id = new_id()
        # The explanation and the statement's span share a trace (the client's, if it
        # sent a traceparent), so `explain show` leads to the span.
        traced = traceparent_of(sql)
        trace_id = traced[1] if traced else secrets.token_hex(16)
        common = {"fingerprint": evaluated.fingerprint, "summary": evaluated.summary,
                  "rule": finding.rule, "trace_id": trace_id}  # fmt: skip
        if outcome.action == "deny" or evaluated.refused is not None:
            verdict = Verdict.DENY
            why = finding.reason if outcome.action == "deny" else (
                f"{finding.action} cannot be applied: {evaluated.refused}")  # fmt: skip
            reason = f'permission denied by policy "{finding.rule}": {why} ({explanation_id})'
            decision = Decision(Verdict.DENY, reason=reason, **common)
        elif outcome.action in ("mask", "filter"):
            verdict = Verdict.REWRITE
            decision = Decision(Verdict.REWRITE, sql=evaluated.rewritten, reason=finding.reason,
                                **common)  # fmt: skip
        else:  # audit
            verdict = Verdict.ALLOW
            decision = Decision(Verdict.ALLOW, reason=finding.reason, **common)
        self._explain(explanation_id, outcome, evaluated, who, verdict, trace_id)
        return decision

    def _explain(self, explanation_id: str, outcome: pol.Outcome, evaluated: _Evaluated,
                 who: pol.Who, verdict: Verdict, trace_id: str) -> None:  # fmt: skip
        if self.log is None:
            return
        finding = outcome.deciding
        assert finding is not None
        evidence = {
            "rules": [f.rule for f in outcome.findings],
            "rule": finding.rule,
            "tables": list(finding.tables),
            "columns": list(finding.columns),
            "tags": dict(finding.tags),
        }
        impact = {Verdict.DENY: "statement not executed",
                  Verdict.REWRITE: "statement executed with masks and filters applied",
                  Verdict.ALLOW: "statement executed and recorded"}[verdict]  # fmt: skip
        self.log.write(Explanation(
            id=explanation_id, decision=outcome.action, reason=finding.reason, evidence=evidence,
            trace_id=trace_id,
            confidence=1.0, policy_impact=impact, air_id=evaluated.air_id,
            fingerprint=evaluated.fingerprint, user=who.user, database=who.database,
            summary=evaluated.summary,
        ))  # fmt: skip
