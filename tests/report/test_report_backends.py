"""The report on either backend: which scenarios run where, and a short PostgreSQL run."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlite_faults.report.scenarios import SCENARIOS, matrix


def test_the_default_sqlite_matrix_is_unchanged_by_the_postgres_only_scenario() -> None:
    names = [s.name for s in matrix("sqlite", set())]
    assert "postgres-immediate-stop" not in names
    assert names == [s.name for s in SCENARIOS if s.only_on != "postgres"]
    assert all(not s.skip_reason("sqlite") for s in matrix("sqlite", set()))


def test_the_postgres_matrix_names_its_skips_and_its_own_mechanisms() -> None:
    on_pg = {s.name: s for s in matrix("postgres", set())}
    assert set(on_pg) == {s.name for s in SCENARIOS}
    skipped = {name for name, s in on_pg.items() if s.skip_reason("postgres")}
    assert skipped == {"slow-fsync-pulses", "disk-full"}
    for name in skipped:
        assert on_pg[name].skip_reason("postgres").startswith("SQLite-only: ")
    assert "40001" in on_pg["transient-errors-low"].title
    assert "pg_sleep" in on_pg["slow-statements"].title
    # Asked for by name on SQLite, the PostgreSQL-only scenario is reported as skipped.
    [stop] = matrix("sqlite", {"postgres-immediate-stop"})
    assert stop.skip_reason("sqlite").startswith("PostgreSQL-only: ")


def test_compare_on_postgres_is_refused_because_the_baseline_is_sqlite_only(
        tmp_path: Path, run_report: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    proc = run_report(tmp_path, "--compare", "--backend", "postgres")
    assert proc.returncode == 2
    assert "naive baseline, which is SQLite-only" in proc.stderr
    assert not (tmp_path / "report.json").exists()


@pytest.mark.postgres_only
def test_the_report_judges_the_matrix_on_a_throwaway_postgres_server(
        tmp_path: Path, run_report: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    out = tmp_path / "report"
    proc = run_report(out, "--backend", "postgres",
                      "--scenarios", "steady-state,lock-past-deadline,disk-full")
    assert proc.returncode == 0, proc.stderr[-2000:]  # produced: 0, whatever it found
    assert "backend postgres" in proc.stderr

    data = json.loads((out / "report.json").read_text())
    assert data["meta"]["backend"] == "postgres"
    assert data["meta"]["database"].startswith("PostgreSQL ")
    results = {r["scenario"]: r for r in data["targets"]["hardened"]}
    assert results["disk-full"]["skipped"].startswith("SQLite-only: ")
    assert results["disk-full"]["verdicts"] == []
    locked = results["lock-past-deadline"]
    assert "EXCLUSIVE" in locked["title"]
    create = locked["stats"]["write"]
    # The table lock held writes until the deadline: answered 504 then, not left hanging.
    assert create["fault"]["statuses"].get("504 deadline_exceeded", 0) > 0
    assert create["fault"]["max_ms"] < 1000 * (1.0 + 0.5)
    # Readers are not blocked by an EXCLUSIVE table lock.
    assert locked["stats"]["read"]["fault"]["error_rate"] == 0
    # The ledger's check read the PostgreSQL table through its URL.
    for name in ("steady-state", "lock-past-deadline"):
        ledger = results[name]["ledger"]
        assert ledger["acknowledged"] > 0
        assert ledger["lost"] == ledger["duplicated"] == ledger["unresolved"] == 0

    markdown = (out / "report.md").read_text()
    assert "Database: PostgreSQL " in markdown
    assert "skipped **disk-full**: SQLite-only: " in markdown
