"""The report's verdicts as JUnit XML, the format CI systems read test results in: one test
suite per service, one test case per check. A breached check is a failure (with what was
measured, the objective and the margin), an inconclusive one is skipped with the reason (the
instrument could have decided it), a skipped scenario is one skipped case."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from .runner import ScenarioResult
from .slo import BREACHED, INCONCLUSIVE


def write_junit(path: Path, by_target: dict[str, list[ScenarioResult]],
                seconds: float = 0.0) -> None:
    suites = ET.Element("testsuites", name="resilience report", time=f"{seconds:g}")
    for target, results in by_target.items():
        suite = ET.SubElement(suites, "testsuite", name=target)
        counts = {"tests": 0, "failures": 0, "skipped": 0}
        for result in results:
            classname = f"{target}.{result.scenario.name}"
            if result.skipped:
                case = ET.SubElement(suite, "testcase", classname=classname, name="scenario")
                ET.SubElement(case, "skipped", message=result.skipped)
                counts["tests"] += 1
                counts["skipped"] += 1
                continue
            for verdict in result.verdicts:
                label = result.labels.get(verdict.endpoint, verdict.endpoint)
                case = ET.SubElement(
                    suite, "testcase", classname=classname,
                    name=f"{label} [{verdict.profile}] {verdict.slo}",
                    time=f"{result.seconds / max(1, len(result.verdicts)):.3f}")
                counts["tests"] += 1
                message = (f"observed {verdict.observed}; objective {verdict.objective}; "
                           f"margin {verdict.margin}")
                if verdict.status == BREACHED:
                    counts["failures"] += 1
                    failure = ET.SubElement(case, "failure", message=message, type="breach")
                    failure.text = verdict.pattern or message
                elif verdict.status == INCONCLUSIVE:
                    counts["skipped"] += 1
                    ET.SubElement(case, "skipped",
                                  message=f"inconclusive: {verdict.inconclusive}; {message}")
        suite.attrib.update({key: str(value) for key, value in counts.items()})
        suite.set("errors", "0")
    ET.indent(suites)
    ET.ElementTree(suites).write(path, encoding="utf-8", xml_declaration=True)
