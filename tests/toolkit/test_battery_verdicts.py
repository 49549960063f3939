"""The ready battery, run as a stranger runs it (`pytest --pyargs sqlite_faults.battery
--target FILE`, in a process of its own), on our two services: it passes on the hardened one
and fails the naive one for the seed report's reasons (lock contention without a deadline,
no retries of transient errors, blocking calls on the event loop), plus what the seed report
did not look at (no WAL, 500s on bad input)."""

from __future__ import annotations

import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from sqlite_faults.causes import cause

from examples.targets import FOLDER, HARDENED, NAIVE

pytestmark = pytest.mark.timeout(600)


def battery(target: Path, tmp_path: Path, seed: int, only: str | None = None,
            causes: bool = False) -> dict[str, str]:
    """Each check's outcome: passed, failed or skipped (with the run's output on error); a
    failure followed by the id of the cause its finding names, with `causes`."""
    junit = tmp_path / "battery.xml"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--pyargs", "sqlite_faults.battery",
         "--target", str(target), f"--fault-seed={seed}", "-p", "no:cacheprovider",
         f"--junitxml={junit}", "-q", *(["-k", only] if only else [])],
        cwd=tmp_path, capture_output=True, text=True, timeout=540)
    assert proc.returncode in (0, 1), proc.stdout[-3000:] + proc.stderr[-2000:]
    outcomes = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        failure = case.find("failure")
        kind = ("failed" if failure is not None or case.find("error") is not None
                else "skipped" if case.find("skipped") is not None else "passed")
        if failure is not None:
            named = assert_names_a_cataloged_cause(failure.text or "")
            kind += f" {named}" if causes else ""
        outcomes[case.get("name", "")] = kind
    return outcomes


def assert_names_a_cataloged_cause(failure: str) -> str:
    """A check's failure is a finding whose cause and fix come from the catalogue; the
    cause's id."""
    named = re.search(r"cause: (.+) \[([a-z0-9-]+)\]", failure)
    assert named, f"the failure names no cause:\n{failure[-1500:]}"
    found = cause(named[2])
    assert named[1] == found.title and f"fix: {found.fix}" in failure
    return found.id


CHECKS = {
    "test_the_engine_is_built_from_the_url_it_is_given",
    "test_wal_is_on",
    "test_bad_input_never_gets_a_500",
    "test_a_lock_shorter_than_the_deadline_is_waited_out",
    "test_a_lock_past_the_deadline_is_answered_in_time",
    "test_transient_errors_are_retried_not_turned_into_500s",
    "test_the_event_loop_keeps_answering_while_db_calls_are_stuck",
    "test_nothing_acknowledged_is_lost_across_sigkills",
    "test_threads_and_fds_return_to_the_steady_state_after_failures",
}


def test_the_battery_passes_on_the_hardened_service(tmp_path: Path, fault_seed: int) -> None:
    outcomes = battery(HARDENED, tmp_path, fault_seed)
    assert set(outcomes) == CHECKS
    assert {name for name, kind in outcomes.items() if kind != "passed"} == set()


# What the battery finds in the naive service, check by check: the seed report's causes
# (lock contention with no deadline, no retries, blocking calls on the event loop) and what
# the seed report did not look at (no WAL, 500s on bad input).
NAIVE_VERDICTS = {
    "test_the_engine_is_built_from_the_url_it_is_given": "passed",
    "test_wal_is_on": "failed",
    "test_bad_input_never_gets_a_500": "failed",
    "test_a_lock_shorter_than_the_deadline_is_waited_out": "passed",
    "test_a_lock_past_the_deadline_is_answered_in_time": "failed",
    "test_transient_errors_are_retried_not_turned_into_500s": "failed",
    "test_the_event_loop_keeps_answering_while_db_calls_are_stuck": "failed",
    "test_nothing_acknowledged_is_lost_across_sigkills": "passed",
    "test_threads_and_fds_return_to_the_steady_state_after_failures": "passed",
}


@pytest.mark.parametrize("check", sorted(NAIVE_VERDICTS))
def test_the_battery_judges_the_naive_service_for_the_seed_reports_reasons(
        check: str, tmp_path: Path, fault_seed: int) -> None:
    # One check per run, so a weakened check is caught by its own row alone.
    assert battery(NAIVE, tmp_path, fault_seed, only=check) == {check: NAIVE_VERDICTS[check]}


def test_every_check_has_a_verdict_on_the_naive_service() -> None:
    assert set(NAIVE_VERDICTS) == CHECKS


# The same battery on services of other shapes, each a hardened service and its naive twin:
# the seed report's own API (query parameters), a form body, and a WSGI app (Flask on
# waitress). The shape changes where the data travels, not what the checks find.
SHAPES = ["query_api", "form_api", "wsgi_api"]


@pytest.mark.parametrize("shape", SHAPES)
def test_the_battery_passes_on_a_hardened_service_of_each_shape(
        shape: str, tmp_path: Path, fault_seed: int) -> None:
    outcomes = battery(FOLDER / f"{shape}.toml", tmp_path, fault_seed)
    assert outcomes == {check: "passed" for check in CHECKS}


@pytest.mark.parametrize("shape", SHAPES)
def test_the_battery_fails_the_naive_twin_of_each_shape_for_the_same_reasons(
        shape: str, tmp_path: Path, fault_seed: int) -> None:
    assert battery(FOLDER / f"{shape}_naive.toml", tmp_path, fault_seed) == NAIVE_VERDICTS


# The four checks every naive twin passes, each shown to fail a service with one real mistake
# of its kind (examples/wsgi_service/naive.py, NAIVE_FLAWS): with the five checks the naive
# services fail, every check of the battery has a service that must fail it.
FLAW_FOR_CHECK = {
    "test_the_engine_is_built_from_the_url_it_is_given": "url",
    "test_a_lock_shorter_than_the_deadline_is_waited_out": "no-wait",
    "test_nothing_acknowledged_is_lost_across_sigkills": "ack-before-commit",
    "test_threads_and_fds_return_to_the_steady_state_after_failures": "leak",
}


def test_every_check_has_a_service_that_must_fail_it() -> None:
    assert {c for c, v in NAIVE_VERDICTS.items() if v == "passed"} == set(FLAW_FOR_CHECK)


def naive_twin_with(flaws: str, tmp_path: Path) -> Path:
    """The WSGI naive twin's target file with NAIVE_FLAWS set (examples/wsgi_service/naive.py)."""
    text = (FOLDER / "wsgi_api_naive.toml").read_text()
    flawed = tmp_path / "flawed.toml"
    flawed.write_text(text.replace("[env]\n", f'[env]\nNAIVE_FLAWS = "{flaws}"\n')
                      .replace('root = "../.."', f'root = "{FOLDER.parent.parent}"'))
    return flawed


@pytest.mark.parametrize("check", sorted(FLAW_FOR_CHECK))
def test_a_check_the_naive_services_pass_fails_a_service_with_that_mistake(
        check: str, tmp_path: Path, fault_seed: int) -> None:
    flawed = naive_twin_with(FLAW_FOR_CHECK[check], tmp_path)
    assert battery(flawed, tmp_path, fault_seed, only=check) == {check: "failed"}


SIGKILLS = "test_nothing_acknowledged_is_lost_across_sigkills"


def test_a_service_killed_inside_a_migration_at_its_first_write_fails_for_not_coming_back(
        tmp_path: Path, fault_seed: int) -> None:
    """MLflow's server migrates its schema at the first request that needs it, one DDL
    statement outside a transaction at a time: killed in the middle, it never serves a
    write again. The check kills inside a slow first write and names the cause."""
    outcomes = battery(naive_twin_with("migrate-at-first-write", tmp_path), tmp_path,
                       fault_seed, only=SIGKILLS, causes=True)
    assert outcomes == {SIGKILLS: "failed crash-unsafe-start"}


def test_a_slow_first_write_that_survives_a_kill_passes(tmp_path: Path,
                                                         fault_seed: int) -> None:
    outcomes = battery(naive_twin_with("slow-first-write", tmp_path), tmp_path, fault_seed,
                       only=SIGKILLS)
    assert outcomes == {SIGKILLS: "passed"}
