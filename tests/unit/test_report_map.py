"""The verdict map's cells: an expected refusal is shown as met, not as the errors it is."""

from __future__ import annotations

from sqlite_faults.report.render import EXPECTED_REFUSAL, map_cell
from sqlite_faults.report.runner import ScenarioResult
from sqlite_faults.report.scenarios import SCENARIOS, Scenario
from sqlite_faults.report.slo import BREACHED, INCONCLUSIVE, MET, Verdict
from sqlite_faults.traffic import READ, Sample

FAIL_FAST = next(s for s in SCENARIOS if s.expect[READ] == "fail-fast")
AVAILABLE = next(s for s in SCENARIOS if s.expect[READ] == "available")


def result(scenario: Scenario, passed: bool, status: int,
           inconclusive: str = "") -> ScenarioResult:
    samples = [Sample(READ, "fault", 1.0, 0.01, status, "" if status == 200 else "overloaded")]
    verdict = Verdict(scenario.name, READ, "fail fast (fault)", "", "", "", passed,
                      inconclusive=inconclusive)
    return ScenarioResult("svc", scenario, samples=samples, verdicts=[verdict])


def test_refusals_a_fail_fast_scenario_expects_are_a_met_refusal() -> None:
    assert map_cell(result(FAIL_FAST, True, 503), READ) == EXPECTED_REFUSAL
    assert map_cell(result(FAIL_FAST, True, 200), READ) == MET
    assert map_cell(result(AVAILABLE, True, 503), READ) == MET
    assert map_cell(result(FAIL_FAST, False, 503), READ) == BREACHED
    assert map_cell(result(FAIL_FAST, False, 503, "generator late"), READ) == INCONCLUSIVE
    assert map_cell(ScenarioResult("svc", FAIL_FAST, skipped="no strace"), READ) == "skipped"
