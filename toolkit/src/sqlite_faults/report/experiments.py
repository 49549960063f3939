"""The battery's checks as the report's experiments: for a cause no scenario stages (bad
input answered 500, resources leaking on error paths), the report runs the battery's own
check against the same target and takes its outcome and finding as the evidence. One check,
one experiment, in one place (battery/test_battery.py), whether a user runs the battery or
the report.
"""

from __future__ import annotations

import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

# The causes only a battery check tests, and the check.
BATTERY_EXPERIMENTS = {
    "bad-input-500": "test_bad_input_never_gets_a_500",
    "resource-leak": "test_threads_and_fds_return_to_the_steady_state_after_failures",
    "crash-unsafe-start": "test_nothing_acknowledged_is_lost_across_sigkills",
}
RUN_TIMEOUT_S = 600


@dataclass(frozen=True)
class CheckOutcome:
    check: str
    outcome: str  # "passed", "failed", "skipped" or "error"
    measured: str  # the finding's measured line, for a failure; the reason otherwise
    cause: str = ""  # the id of the cause a failure's finding names (a check can name two)


def run_checks(target_file: Path | str, checks: list[str], workdir: Path,
               seed: int) -> list[CheckOutcome]:
    """The named battery checks against the target, in a pytest process of their own, as a
    user would run them (`pytest --pyargs sqlite_faults.battery --target FILE -k ...`)."""
    workdir.mkdir(parents=True, exist_ok=True)
    junit = workdir / "battery.xml"
    # The battery's own configuration only: with the toolkit installed from a checkout, the
    # checkout's pytest configuration and conftest.py (with their own plugins and
    # dependencies) would otherwise be picked up above the battery's folder.
    ini = workdir / "pytest.ini"
    ini.write_text("[pytest]\n")
    battery = Path(__file__).resolve().parent.parent / "battery"
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "--pyargs", "sqlite_faults.battery",
             "-c", str(ini), "--rootdir", str(workdir), "--confcutdir", str(battery),
             "--target", str(Path(target_file).resolve()), f"--fault-seed={seed}",
             "-p", "no:cacheprovider", f"--junitxml={junit}", "-q", "-k", " or ".join(checks)],
            cwd=workdir, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return [CheckOutcome(c, "error", f"the battery ran past {RUN_TIMEOUT_S} s") for c in checks]
    if not junit.exists():
        said = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or ["no output"]
        return [CheckOutcome(c, "error", f"the battery did not run: {said[0]}") for c in checks]
    found = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = case.get("name", "")
        failure = case.find("failure")
        error = case.find("error")
        skipped = case.find("skipped")
        if failure is not None:
            text = failure.text or ""
            found[name] = CheckOutcome(name, "failed", measured_line(text)
                                       or (failure.get("message") or "failed")[:300],
                                       named_cause(text))
        elif error is not None:
            found[name] = CheckOutcome(name, "error", (error.get("message") or "error")[:300])
        elif skipped is not None:
            found[name] = CheckOutcome(name, "skipped", (skipped.get("message") or "")[:300])
        else:
            found[name] = CheckOutcome(name, "passed", "")
    return [found.get(c, CheckOutcome(c, "error", "the battery did not run it")) for c in checks]


def measured_line(failure: str) -> str:
    """The finding's measured line; when it introduces a list, with the list's first item
    (pytest prefixes each line of the message with "E")."""
    found = re.search(r"measured: (.+)(?:\n(?:E\s+)?\s*(.+))?", failure)
    if found is None:
        return ""
    first = found[1].strip()
    return f"{first} {found[2].strip()}" if first.endswith(":") and found[2] else first


def named_cause(failure: str) -> str:
    """The id of the cause the finding names (its `cause: title [id]` line), or ""."""
    named = re.search(r"^(?:E\s+)?cause: .* \[([a-z0-9-]+)\]$", failure, re.M)
    return named[1] if named else ""
