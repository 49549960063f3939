"""The report's verdicts as JUnit XML: a CI system reads a breach as a failure, an
inconclusive check as skipped, a met one as passed."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from sqlite_faults.report.junit import write_junit
from sqlite_faults.report.runner import ScenarioResult
from sqlite_faults.report.scenarios import SCENARIOS
from sqlite_faults.report.slo import Verdict


def verdict(slo: str, passed: bool, inconclusive: str = "") -> Verdict:
    return Verdict("steady-state", "read", slo, "p95 < 300 ms", "412 ms", "+112 ms", passed,
                   pattern="tail latency up", inconclusive=inconclusive)


def test_breaches_fail_inconclusive_checks_skip_and_met_checks_pass(tmp_path: Path) -> None:
    scenario = SCENARIOS[0]
    judged = ScenarioResult("svc", scenario, labels={"read": "GET /users/{id}"}, verdicts=[
        verdict("p95 latency (steady)", True),
        verdict("p95 latency (fault)", False),
        verdict("error rate (fault)", False, inconclusive="the generator was late"),
    ])
    skipped = ScenarioResult("svc", SCENARIOS[1], skipped="strace is not installed")
    path = tmp_path / "verdicts.xml"
    write_junit(path, {"svc": [judged, skipped]}, seconds=12.5)

    suite = ET.parse(path).getroot().find("testsuite")
    assert suite is not None and suite.get("name") == "svc"
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("4", "1", "2")
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    failed = cases["GET /users/{id} [plain] p95 latency (fault)"].find("failure")
    assert failed is not None and "observed 412 ms" in (failed.get("message") or "")
    unsure = cases["GET /users/{id} [plain] error rate (fault)"].find("skipped")
    assert unsure is not None and "the generator was late" in (unsure.get("message") or "")
    met = cases["GET /users/{id} [plain] p95 latency (steady)"]
    assert met.find("failure") is None and met.find("skipped") is None
    assert cases["scenario"].find("skipped") is not None
