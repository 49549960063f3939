"""The report's analysis: each cause of the catalogue (sqlite_faults/causes.toml) as a
hypothesis with a verdict, confirmed, refuted or untested, and the evidence for it.

Evidence is of two kinds, never a guess: the engine's configuration as the service runs it
(diagnostics.py, read through the engine plugin when the target's run starts), and the
report's own verdicts in the scenarios that stage the cause (a held lock past the deadline,
injected transient errors, slowed statements, SIGKILLs). A cause neither can speak to is
"untested", with what would test it.

With several targets in one run (`--compare`), a cause confirmed in one target and refuted
in another is checked against the checks it breached: the other target met them on the same
faults, which is the counterfactual the report can offer from outside.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..causes import CAUSES, Cause
from ..traffic import CREATE, READ, ROOT
from .experiments import BATTERY_EXPERIMENTS, CheckOutcome
from .runner import LOOP_PROBE_TIMEOUT_S, LOOP_PROBED, ScenarioResult
from .slo import Verdict

CONFIRMED, REFUTED, UNTESTED = "confirmed", "refuted", "untested"
LOCK_SCENARIOS = ("lock-past-deadline", "write-lock-pulses")
TRANSIENT_SCENARIOS = ("transient-errors-low", "transient-errors-high")
# A loop probe slower than this while statements are stuck: what serves requests is blocked
# (the battery's bound for the same experiment).
LOOP_BLOCKED_S = 1.0


@dataclass(frozen=True)
class Hypothesis:
    cause: Cause
    verdict: str  # CONFIRMED, REFUTED or UNTESTED
    evidence: str
    breaches: tuple[Verdict, ...] = ()  # the breached checks it explains
    verified: str = ""  # what a counterfactual run with the cause's change applied found

    def as_dict(self) -> dict[str, Any]:
        return {"cause": self.cause.id, "title": self.cause.title, "verdict": self.verdict,
                "evidence": self.evidence,
                "explains": [f"{v.scenario} {v.endpoint} {v.slo}" for v in self.breaches],
                "verified": self.verified}


@dataclass(frozen=True)
class Evidence:
    """What one target's run offers: its scenario results and its engines' diagnoses."""

    results: list[ScenarioResult]
    diagnostics: list[dict[str, Any]]
    # The battery's checks run as experiments (experiments.py), by check name.
    experiments: dict[str, CheckOutcome] = field(default_factory=dict)

    def verdicts(self, scenarios: tuple[str, ...], endpoint: str | None = None,
                 slo: str = "") -> list[Verdict]:
        return [v for r in self.results if r.scenario.name in scenarios and not r.skipped
                for v in r.verdicts
                if (endpoint is None or v.endpoint == endpoint) and v.slo.startswith(slo)]

    def engines(self) -> list[dict[str, Any]]:
        """The engines whose diagnosis could be read."""
        return [d for d in self.diagnostics if "error" not in d]

    def failed(self) -> str:
        """Why diagnoses could not be read ("" when none failed)."""
        return "; ".join(f"engine {d['id']}: {d['error']}" for d in self.diagnostics
                         if "error" in d)

    def sqlite(self) -> list[dict[str, Any]]:
        return [d for d in self.engines() if d.get("dialect") == "sqlite"]


Rule = Callable[[Evidence], tuple[str, str, list[Verdict]]]


def _staged(evidence: Evidence, scenarios: tuple[str, ...], endpoints: tuple[str, ...],
            slos: tuple[str, ...], what: str) -> tuple[str, str, list[Verdict]]:
    """Confirmed by a breach of `slos` on `endpoints` in `scenarios`, refuted when they were
    judged and met, untested when none ran."""
    judged = [v for e in endpoints for s in slos for v in evidence.verdicts(scenarios, e, s)]
    if not judged:
        return UNTESTED, f"not staged: run {' or '.join(scenarios)}", []
    breached = [v for v in judged if v.breached]
    if breached:
        shown = "; ".join(f"{v.scenario} {v.endpoint} {v.slo}: {v.observed}"
                          for v in breached[:3])
        return CONFIRMED, f"{what}: {shown}", breached
    unsure = [v for v in judged if not v.passed]
    if unsure:  # neither met nor the service's breach: the instrument may explain them
        return (UNTESTED, f"{what}: {len(unsure)} of {len(judged)} such checks inconclusive "
                "(the instrument's own delays could explain them)", [])
    return REFUTED, f"{what}: all {len(judged)} such checks met", []


def _configured(evidence: Evidence, key: str, bad: Callable[[Any], bool],
                shown: Callable[[dict[str, Any]], str]) -> tuple[str, str, list[Verdict]]:
    engines = evidence.sqlite()
    if not evidence.engines():
        if evidence.failed():
            return (UNTESTED, "the engine's configuration could not be read: "
                    f"{evidence.failed()}", [])
        return UNTESTED, "no engine reached (see foreign-engine)", []
    if not engines:
        return UNTESTED, "not SQLite", []
    found = [e for e in engines if bad(e.get(key))]
    if found:
        return CONFIRMED, "; ".join(shown(e) for e in found), []
    return REFUTED, "; ".join(shown(e) for e in engines), []


def _engine(e: dict[str, Any]) -> str:
    return f"engine {e['id']}"


def rollback_journal(ev: Evidence) -> tuple[str, str, list[Verdict]]:
    # Confirmed by the configuration alone. It claims no breach: slow reads under a held
    # lock look the same when the event loop is blocked by writers waiting for the lock
    # (the naive service's do, its rollback journal notwithstanding: a RESERVED lock does
    # not stop its readers), and only a run with WAL applied could tell the two apart.
    return _configured(ev, "journal_mode", lambda m: m != "wal",
                       lambda e: f"{_engine(e)}: journal_mode={e['journal_mode']}")


def affected_sqlite(ev: Evidence) -> tuple[str, str, list[Verdict]]:
    return _configured(ev, "wal_reset_bug", lambda bug: bug is True,
                       lambda e: f"{_engine(e)}: SQLite {e['version']} via {e['driver']}")


def lock_not_waited(ev: Evidence) -> tuple[str, str, list[Verdict]]:
    verdict, said, _ = _configured(ev, "lock_wait_ms", lambda ms: ms == 0,
                                   lambda e: f"{_engine(e)}: busy_timeout={e['lock_wait_ms']} ms")
    writes = [v for v in ev.verdicts(("write-lock-pulses",), CREATE, "error rate")
              if v.breached]
    return verdict, said, writes if verdict == CONFIRMED else []


def unbounded_lock_wait(ev: Evidence) -> tuple[str, str, list[Verdict]]:
    verdict, said, breaches = _staged(ev, ("lock-past-deadline",), (CREATE,), ("fail fast",),
                                      "writes under a lock held past the deadline")
    waits = [f"{_engine(e)}: {e['lock_wait_ms']} ms" for e in ev.engines()
             if e.get("lock_wait_ms")]
    if verdict == CONFIRMED and waits:
        # What bounds the wait instead: the lock wait a new connection starts with.
        said += f"; the lock wait its connections start with: {', '.join(waits)}"
    return verdict, said, breaches


def no_retry(ev: Evidence) -> tuple[str, str, list[Verdict]]:
    # Where a retry can cure the errors (the low rate) the endpoints are judged on their
    # error rate; where it cannot (the high rate), on failing cleanly (503/504, not 500).
    return _staged(ev, TRANSIENT_SCENARIOS, (CREATE, READ), ("error rate", "fail fast"),
                   "injected transient errors")


def no_statement_deadline(ev: Evidence) -> tuple[str, str, list[Verdict]]:
    return _staged(ev, ("slow-statements",), (CREATE, READ), ("fail fast", "p95 latency"),
                   "slowed statements")


def blocking_event_loop(ev: Evidence) -> tuple[str, str, list[Verdict]]:
    """The loop probe experiment (runner.probe_the_loop): a request that touches no database,
    answered late or not at all while statements are stuck. The load's own probe is no
    evidence: it may wait for the database itself (Prefect's readiness check waits for a
    pooled connection while its event loop answers in milliseconds)."""
    probed = [r for r in ev.results if r.loop_probe and not r.skipped]
    if not probed:
        return UNTESTED, f"not staged: run {' or '.join(LOOP_PROBED)}", []
    worst = {r.scenario.name: max(LOOP_PROBE_TIMEOUT_S if s is None else s
                                  for s in r.loop_probe) for r in probed}
    shown = "; ".join(f"{name}: slowest of {len(r.loop_probe)} "
                      f"{'no answer' if None in r.loop_probe else f'{worst[name]:.2f} s'}"
                      for name, r in zip(worst, probed, strict=True))
    blocked = [name for name, s in worst.items() if s > LOOP_BLOCKED_S]
    if blocked:
        probes = [v for v in ev.verdicts(tuple(blocked), ROOT) if v.breached]
        return (CONFIRMED, f"the DB-free loop probe while statements were stuck: {shown}",
                probes)
    return REFUTED, f"the DB-free loop probe while statements were stuck: {shown}", []


def pool_exhaustion(ev: Evidence) -> tuple[str, str, list[Verdict]]:
    pools = [e for e in ev.engines() if e.get("pool_timeout_s") is not None]
    if not pools:
        return UNTESTED, "no pooled engine reached", []
    waits = [e for e in pools if e["pool_timeout_s"] >= 5.0]
    unanswered = [v for v in ev.verdicts((*LOCK_SCENARIOS, "slow-statements"))
                  if v.breached and "no answer" in v.pattern]
    shown = "; ".join(f"{_engine(e)}: {e['pool']} {e['pool_size']} + {e['max_overflow']}, "
                      f"{e['pool_timeout_s']:g} s checkout wait" for e in pools)
    if waits and unanswered:
        return CONFIRMED, f"{shown}; requests left unanswered under stuck statements", unanswered
    if not waits:
        return REFUTED, f"{shown} (a checkout wait bounded under 5 s)", []
    return UNTESTED, f"{shown}, but no request went unanswered in the lock scenarios", []


def acknowledged_before_commit(ev: Evidence) -> tuple[str, str, list[Verdict]]:
    return _staged(ev, tuple(r.scenario.name for r in ev.results), (CREATE,),
                   ("acknowledged writes lost",), "the write ledger after each scenario")


def error_after_commit(ev: Evidence) -> tuple[str, str, list[Verdict]]:
    return _staged(ev, tuple(r.scenario.name for r in ev.results), (CREATE,),
                   ("errors that committed",), "the write ledger after each scenario")


def foreign_engine(ev: Evidence) -> tuple[str, str, list[Verdict]]:
    if ev.diagnostics:
        return REFUTED, f"the engine plugin saw {len(ev.diagnostics)} engine(s)", []
    return (CONFIRMED, "the engine plugin saw no engine: in-process faults never reached the "
            "service", [])


def battery_experiment(cause_id: str) -> Rule:
    """A cause only a battery check tests: its outcome, run against the same target."""
    check = BATTERY_EXPERIMENTS[cause_id]

    def rule(ev: Evidence) -> tuple[str, str, list[Verdict]]:
        outcome = ev.experiments.get(check)
        if outcome is None:
            return UNTESTED, f"not run: the battery's {check} tests it", []
        if outcome.outcome == "failed" and outcome.cause not in ("", cause_id):
            return (UNTESTED, f"the battery's {check} failed, naming another cause "
                    f"({outcome.cause})", [])
        if outcome.outcome == "failed":
            return CONFIRMED, f"the battery's {check} failed: {outcome.measured}", []
        if outcome.outcome == "passed":
            return REFUTED, f"the battery's {check} passed", []
        return UNTESTED, f"the battery's {check}: {outcome.outcome} {outcome.measured}", []
    return rule


RULES: dict[str, Rule] = {
    "rollback-journal": rollback_journal,
    "affected-sqlite": affected_sqlite,
    "lock-not-waited": lock_not_waited,
    "unbounded-lock-wait": unbounded_lock_wait,
    "pool-exhaustion": pool_exhaustion,
    "no-retry": no_retry,
    "no-statement-deadline": no_statement_deadline,
    "blocking-event-loop": blocking_event_loop,
    "bad-input-500": battery_experiment("bad-input-500"),
    "acknowledged-before-commit": acknowledged_before_commit,
    "error-after-commit": error_after_commit,
    "resource-leak": battery_experiment("resource-leak"),
    "crash-unsafe-start": battery_experiment("crash-unsafe-start"),
    "foreign-engine": foreign_engine,
}


def analyse(evidence: Evidence) -> list[Hypothesis]:
    """One hypothesis per cause of the catalogue, in its order."""
    hypotheses = []
    for cause_id, cause in CAUSES.items():
        verdict, said, breaches = RULES[cause_id](evidence)
        hypotheses.append(Hypothesis(cause, verdict, said, tuple(breaches)))
    return hypotheses


def counterfactual(hypothesis: Hypothesis, others: dict[str, list[Hypothesis]],
                   by_target: dict[str, list[ScenarioResult]]) -> str:
    """For a confirmed cause: another target of the run in which it is refuted, and whether
    that target met the checks the cause breached here ("" when none can say)."""
    if hypothesis.verdict != CONFIRMED or not hypothesis.breaches:
        return ""
    for name, hypotheses in others.items():
        if not any(h.cause.id == hypothesis.cause.id and h.verdict == REFUTED
                   for h in hypotheses):
            continue
        theirs = {(v.scenario, v.endpoint, v.slo, v.profile): v
                  for r in by_target[name] for v in r.verdicts}
        met = sum(_met_there(v, theirs) for v in hypothesis.breaches)
        return (f"{name}, without this cause, met {met} of the {len(hypothesis.breaches)} "
                f"checks it breached here")
    return ""


def _met_there(breach: Verdict, theirs: dict[tuple[str, str, str, str], Verdict]) -> bool:
    """Whether the other target met the check `breach` failed. "requests (phase)" (nothing
    completed) exists only where nothing did: where requests completed, its place is taken by
    that phase's latency and error-rate checks, which must both be met."""
    key = (breach.scenario, breach.endpoint, breach.slo, breach.profile)
    if key in theirs:
        return theirs[key].passed
    if breach.slo.startswith("requests ("):
        phase = breach.slo.removeprefix("requests ")
        instead = [theirs.get((breach.scenario, breach.endpoint, f"{slo} {phase}",
                               breach.profile)) for slo in ("p95 latency", "error rate")]
        return all(v is not None and v.passed for v in instead)
    return False


def counterfactual_scenarios(hypothesis: Hypothesis, results: list[ScenarioResult]) -> list[str]:
    """The scenarios to run again with the cause's change applied: those of its
    counterfactual that ran here and had a breach ([] when it has no change, or is not
    confirmed)."""
    change = hypothesis.cause.counterfactual
    if hypothesis.verdict != CONFIRMED or not change:
        return []
    wanted = set(change["scenarios"])
    return [r.scenario.name for r in results
            if r.scenario.name in wanted and not r.skipped and any(v.breached for v in r.verdicts)]


def with_counterfactual(hypothesis: Hypothesis, before: list[ScenarioResult],
                        after: list[ScenarioResult],
                        after_diagnostics: list[dict[str, Any]]) -> Hypothesis:
    """The hypothesis once the same scenarios ran again with its change applied: the breaches
    the change removed are the ones it explains, and `verified` says how many it did. A
    change the engines do not show afterwards proves nothing, and says so."""
    changed = hypothesis.cause.counterfactual["pragmas"]
    pragmas = ", ".join(f"PRAGMA {k}={v}" for k, v in changed.items())
    shown = {"journal_mode": "journal_mode", "busy_timeout": "lock_wait_ms"}
    for name, value in changed.items():
        key = shown.get(name)
        seen = {str(d.get(key)).lower() for d in after_diagnostics if key and "error" not in d}
        if key and seen != {str(value).lower()}:
            return Hypothesis(hypothesis.cause, hypothesis.verdict, hypothesis.evidence,
                              hypothesis.breaches, f"{pragmas} was applied from outside but "
                              f"the engines then showed {key}={sorted(seen)}: no verdict")
    ran = {r.scenario.name for r in after}
    breached = [v for r in before if r.scenario.name in ran for v in r.verdicts if v.breached]
    theirs = {(v.scenario, v.endpoint, v.slo, v.profile): v for r in after for v in r.verdicts}
    removed = [v for v in breached if _met_there(v, theirs)]
    said = (f"run again with {pragmas} applied from outside ({', '.join(sorted(ran))}): "
            f"{len(removed)} of the {len(breached)} breaches there met")
    return Hypothesis(hypothesis.cause, hypothesis.verdict, hypothesis.evidence,
                      tuple(removed), said)
