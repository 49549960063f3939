"""The report's cause hypotheses on hand-made evidence: each rule confirms its cause on the
symptom or configuration that shows it, refutes it where the same checks were met or the
configuration is right, and says "untested" when nothing staged it. (The same rules on real
services, both ways, are in tests/report/test_report_controls.py.)"""

from __future__ import annotations

from typing import Any

import pytest
from sqlite_faults.causes import CAUSES
from sqlite_faults.report.analysis import (
    CONFIRMED,
    REFUTED,
    RULES,
    UNTESTED,
    Evidence,
    analyse,
    counterfactual,
    counterfactual_scenarios,
    with_counterfactual,
)
from sqlite_faults.report.runner import ScenarioResult
from sqlite_faults.report.scenarios import SCENARIOS
from sqlite_faults.report.slo import Verdict
from sqlite_faults.traffic import CREATE, READ, ROOT

NAIVE_ENGINE = {"id": 0, "dialect": "sqlite", "driver": "sqlite3.dbapi2", "version": "3.40.1",
                "wal_reset_bug": True, "journal_mode": "delete", "synchronous": "FULL",
                "lock_wait_ms": 5000, "pool": "QueuePool", "pool_size": 5, "max_overflow": 10,
                "pool_timeout_s": 30.0}
HARDENED_ENGINE = {**NAIVE_ENGINE, "driver": "pysqlite3.dbapi2", "version": "3.53.4",
                   "wal_reset_bug": False, "journal_mode": "wal", "synchronous": "NORMAL",
                   "pool_size": 1, "max_overflow": 2, "pool_timeout_s": 1.0}


def result(scenario: str, *verdicts: Verdict) -> ScenarioResult:
    found = next(s for s in SCENARIOS if s.name == scenario)
    return ScenarioResult("svc", found, verdicts=list(verdicts))


def check(scenario: str, endpoint: str, slo: str, passed: bool, pattern: str = "") -> Verdict:
    return Verdict(scenario, endpoint, slo, "objective", "observed", "margin", passed, pattern)


def verdicts_of(evidence: Evidence) -> dict[str, str]:
    return {h.cause.id: h.verdict for h in analyse(evidence)}


def test_every_cause_has_a_rule_and_every_rule_a_cause() -> None:
    assert set(RULES) == set(CAUSES)


@pytest.mark.parametrize(("engine", "expected"), [(NAIVE_ENGINE, CONFIRMED),
                                                  (HARDENED_ENGINE, REFUTED)])
def test_configuration_causes_follow_the_engines_diagnosis(
        engine: dict[str, Any], expected: str) -> None:
    found = verdicts_of(Evidence([], [engine]))
    assert found["rollback-journal"] == found["affected-sqlite"] == expected
    assert found["foreign-engine"] == REFUTED


def test_without_an_engine_configuration_causes_are_untested_and_foreign_engine_confirmed(
) -> None:
    found = verdicts_of(Evidence([], []))
    assert found["rollback-journal"] == found["affected-sqlite"] == UNTESTED
    assert found["foreign-engine"] == CONFIRMED


def test_a_busy_timeout_of_zero_confirms_that_locks_are_not_waited_out() -> None:
    assert verdicts_of(Evidence([], [{**HARDENED_ENGINE, "lock_wait_ms": 0}]))[
        "lock-not-waited"] == CONFIRMED
    assert verdicts_of(Evidence([], [HARDENED_ENGINE]))["lock-not-waited"] == REFUTED


STAGED = [
    ("unbounded-lock-wait", "lock-past-deadline", CREATE, "fail fast (fault)"),
    ("no-retry", "transient-errors-high", READ, "error rate (fault)"),
    ("no-statement-deadline", "slow-statements", CREATE, "p95 latency (fault)"),
]
# The write ledger's checks run after every scenario: any of them can show these.
ANYWHERE = [
    ("acknowledged-before-commit", "sigkill-restart", CREATE, "acknowledged writes lost"),
    ("error-after-commit", "transient-errors-low", CREATE, "errors that committed"),
]


@pytest.mark.parametrize(("cause", "scenario", "endpoint", "slo"),
                         [pytest.param(*case, id=case[0]) for case in STAGED + ANYWHERE])
def test_a_staged_cause_is_confirmed_by_its_breach_refuted_by_its_met_check_untested_unrun(
        cause: str, scenario: str, endpoint: str, slo: str) -> None:
    breached = Evidence([result(scenario, check(scenario, endpoint, slo, False))], [])
    hypothesis = next(h for h in analyse(breached) if h.cause.id == cause)
    assert hypothesis.verdict == CONFIRMED and len(hypothesis.breaches) == 1
    met = Evidence([result(scenario, check(scenario, endpoint, slo, True))], [])
    assert verdicts_of(met)[cause] == REFUTED
    assert verdicts_of(Evidence([], []))[cause] == UNTESTED


@pytest.mark.parametrize(("cause", "scenario", "endpoint", "slo"),
                         [pytest.param(*case, id=case[0]) for case in STAGED])
def test_a_breach_in_a_scenario_that_does_not_stage_the_cause_confirms_nothing(
        cause: str, scenario: str, endpoint: str, slo: str) -> None:
    unrelated = Evidence([result("net-latency", check("net-latency", endpoint, slo, False))],
                         [])
    assert verdicts_of(unrelated)[cause] == UNTESTED


@pytest.mark.parametrize(("probes", "expected"), [
    ([0.004, 0.006], REFUTED), ([0.004, 2.5], CONFIRMED), ([0.004, None], CONFIRMED),
    ([], UNTESTED)])
def test_the_loop_is_judged_by_the_db_free_loop_probe_not_the_loads_probe(
        probes: list[float | None], expected: str) -> None:
    """The load's probe breached in every case (it may wait for the database itself): only
    the loop probe, sent while statements were stuck, says whether the loop was blocked."""
    stuck = result("slow-statements", check("slow-statements", ROOT, "p95 latency (fault)",
                                            False))
    stuck.loop_probe = probes
    (loop,) = [h for h in analyse(Evidence([stuck], [])) if h.cause.id == "blocking-event-loop"]
    assert loop.verdict == expected
    assert len(loop.breaches) == (1 if expected == CONFIRMED else 0)


def test_a_diagnosis_that_failed_is_an_engine_seen_not_a_foreign_one() -> None:
    failed = [{"id": 0, "error": "MissingGreenlet: greenlet_spawn has not been called"}]
    found = {h.cause.id: h for h in analyse(Evidence([], failed))}
    assert found["foreign-engine"].verdict == REFUTED
    assert found["rollback-journal"].verdict == UNTESTED
    assert "MissingGreenlet" in found["rollback-journal"].evidence


def test_pool_exhaustion_needs_a_long_checkout_wait_and_unanswered_requests() -> None:
    unanswered = result("lock-past-deadline", check(
        "lock-past-deadline", CREATE, "fail fast (fault)", False, "no answer ClientTimeout x3"))
    assert verdicts_of(Evidence([unanswered], [NAIVE_ENGINE]))["pool-exhaustion"] == CONFIRMED
    assert verdicts_of(Evidence([unanswered], [HARDENED_ENGINE]))["pool-exhaustion"] == REFUTED
    assert verdicts_of(Evidence([], [NAIVE_ENGINE]))["pool-exhaustion"] == UNTESTED


def test_the_counterfactual_is_another_target_without_the_cause_meeting_the_same_checks(
) -> None:
    breach = check("slow-statements", ROOT, "requests (fault)", False)
    naive = [result("slow-statements", breach)]
    naive[0].loop_probe = [None]
    hardened = [result("slow-statements",
                       check("slow-statements", ROOT, "p95 latency (fault)", True),
                       check("slow-statements", ROOT, "error rate (fault)", True))]
    hardened[0].loop_probe = [0.01]
    analyses = {"naive": analyse(Evidence(naive, [])),
                "hardened": analyse(Evidence(hardened, []))}
    confirmed = next(h for h in analyses["naive"] if h.cause.id == "blocking-event-loop")
    said = counterfactual(confirmed, {"hardened": analyses["hardened"]},
                          {"naive": naive, "hardened": hardened})
    assert said == "hardened, without this cause, met 1 of the 1 checks it breached here"
    # A target in which the cause is not refuted is no counterfactual.
    assert counterfactual(confirmed, {"naive-too": analyses["naive"]},
                          {"naive-too": naive}) == ""


def test_a_counterfactual_reruns_the_breached_scenarios_of_its_change_and_keeps_what_it_fixed(
) -> None:
    breach = check("lock-past-deadline", READ, "p95 latency (fault)", False)
    before = [result("lock-past-deadline", breach),
              result("write-lock-pulses", check("write-lock-pulses", READ, "p95 latency (fault)",
                                                True)),
              result("slow-statements", check("slow-statements", READ, "p95 latency (fault)",
                                              False))]
    (journal,) = [h for h in analyse(Evidence(before, [NAIVE_ENGINE]))
                  if h.cause.id == "rollback-journal"]
    # Only its own scenarios, and of those only the ones with a breach.
    assert counterfactual_scenarios(journal, before) == ["lock-past-deadline"]
    fixed = [result("lock-past-deadline", check("lock-past-deadline", READ,
                                                "p95 latency (fault)", True))]
    after = with_counterfactual(journal, before, fixed, [HARDENED_ENGINE])
    assert after.breaches == (breach,)
    assert after.verified.endswith("(lock-past-deadline): 1 of the 1 breaches there met")
    unchanged = with_counterfactual(journal, before, [result("lock-past-deadline", breach)],
                                    [HARDENED_ENGINE])
    assert unchanged.breaches == () and "0 of the 1 breaches" in unchanged.verified
    # A change the engines do not show afterwards proves nothing.
    untaken = with_counterfactual(journal, before, fixed, [NAIVE_ENGINE])
    assert untaken.breaches == () and untaken.verified.endswith("no verdict")


def test_a_refuted_cause_or_one_without_a_change_runs_nothing_again() -> None:
    before = [result("lock-past-deadline", check("lock-past-deadline", READ,
                                                 "p95 latency (fault)", False))]
    for h in analyse(Evidence(before, [HARDENED_ENGINE])):
        assert counterfactual_scenarios(h, before) == []


def test_a_check_the_instrument_may_explain_neither_confirms_nor_refutes() -> None:
    unsure = check("slow-statements", CREATE, "p95 latency (fault)", False)
    unsure = Verdict(**{**unsure.__dict__, "inconclusive": "the generator sent late"})
    found = verdicts_of(Evidence([result("slow-statements", unsure)], []))
    assert found["no-statement-deadline"] == UNTESTED


def test_an_experiments_finding_is_its_measured_line_with_the_first_item_it_lists() -> None:
    from sqlite_faults.report.experiments import measured_line

    failure = ("E   AssertionError: measured: 1 malformed requests got a 5xx or no answer:\n"
               "E       write json body with a lone surrogate: 500 http-500 after 0.02 s\n"
               "E     expected: a 4xx saying what is wrong, for each")
    assert measured_line(failure) == ("1 malformed requests got a 5xx or no answer: write json "
                                  "body with a lone surrogate: 500 http-500 after 0.02 s")
    assert measured_line("E   measured: journal_mode is delete\nE   expected: wal") == (
        "journal_mode is delete")


def test_an_experiments_cause_is_the_id_its_finding_names() -> None:
    from sqlite_faults.report.experiments import named_cause

    failure = ("E           Failed: measured: killed 0.18 s into its first write\n"
               "E           expected: a service killed at any moment starts again\n"
               "E           cause: work done once at start is not crash-safe [crash-unsafe-start]\n"
               "E           fix: make each schema change atomic")
    assert named_cause(failure) == "crash-unsafe-start"
    assert named_cause("E   AssertionError: something else") == ""


def test_an_unbounded_lock_wait_names_the_wait_its_connections_start_with() -> None:
    """Prefect's writes waited out a 60 s busy timeout: the evidence says so."""
    held = result("lock-past-deadline", check("lock-past-deadline", CREATE, "fail fast (fault)",
                                              False))
    engine = {**HARDENED_ENGINE, "lock_wait_ms": 60000}
    (wait,) = [h for h in analyse(Evidence([held], [engine]))
               if h.cause.id == "unbounded-lock-wait"]
    assert wait.verdict == CONFIRMED
    assert wait.evidence.endswith("the lock wait its connections start with: engine 0: 60000 ms")


def test_a_check_that_names_two_causes_confirms_only_the_one_its_finding_names() -> None:
    """The SIGKILL check fails for a service that does not come back (crash-unsafe-start)
    or for one that lost an acknowledged write (acknowledged-before-commit): its experiment
    confirms the cause its finding named, and says nothing of the other."""
    from sqlite_faults.report.experiments import CheckOutcome

    check = "test_nothing_acknowledged_is_lost_across_sigkills"

    def crash_verdict(outcome: str, cause: str) -> str:
        found = CheckOutcome(check, outcome, "measured", cause)
        return verdicts_of(Evidence([], [], experiments={check: found}))["crash-unsafe-start"]

    assert crash_verdict("failed", "crash-unsafe-start") == CONFIRMED
    assert crash_verdict("failed", "acknowledged-before-commit") == UNTESTED
    assert crash_verdict("passed", "") == REFUTED
