"""The main job end to end, kept short: real servers, real faults, the three output files."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

# The report runs its services on its own --backend (SQLite here): judged once, in the
# SQLite run, not again in the PostgreSQL one.
pytestmark = pytest.mark.sqlite_only("the report's own --backend is SQLite in these runs")


def test_the_report_judges_a_fault_and_writes_markdown_json_and_a_chart(
        tmp_path: Path, run_report: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    out = tmp_path / "report"
    proc = run_report(out, "--scenarios", "steady-state,lock-past-deadline")
    assert proc.returncode == 0, proc.stderr[-2000:]  # produced: 0, whatever it found
    assert "seed 7" in proc.stderr

    data = json.loads((out / "report.json").read_text())
    results = {r["scenario"]: r for r in data["targets"]["hardened"]}
    assert set(results) == {"steady-state", "lock-past-deadline"}
    create = results["lock-past-deadline"]["stats"]["write"]
    # Writes during the held lock were answered 504 at the deadline, not left hanging.
    assert create["fault"]["statuses"].get("504 deadline_exceeded", 0) > 0
    assert create["fault"]["max_ms"] < 1000 * (1.0 + 0.5)
    assert results["lock-past-deadline"]["ledger"]["lost"] == 0
    verdicts = [v for r in results.values() for v in r["verdicts"]]
    assert {v["slo"] for v in verdicts} >= {"p95 latency (steady)", "fail fast (fault)",
                                           "recovery", "acknowledged writes lost"}

    markdown = (out / "report.md").read_text()
    for heading in ("## Overall resilience posture", "## Dashboard summary",
                    "## SLO failures deep dive", "## Scenarios"):
        assert heading in markdown
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unknown_scenarios_are_refused_with_the_known_ones_listed(
        tmp_path: Path, run_report: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    proc = run_report(tmp_path, "--scenarios", "no-such-thing")
    assert proc.returncode == 2
    assert "unknown scenarios: no-such-thing" in proc.stderr
    assert "steady-state" in proc.stderr


def test_a_client_timeout_inside_the_services_deadline_is_refused(
        tmp_path: Path, run_report: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    """Clients that give up at 1 s cannot judge a service whose 504 is due at 1 s: their
    timeouts would be judged the service's unclean failures."""
    proc = run_report(tmp_path, "--timeout", "1", "--scenarios", "steady-state")
    assert proc.returncode == 2
    assert "--timeout 1 s is not longer than hardened's deadline (1 s)" in proc.stderr
    assert not (tmp_path / "report.json").exists()


def test_a_confirmed_cause_with_a_change_is_run_again_with_it_applied(
        tmp_path: Path, run_report: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    """The naive service's rollback journal: its breached scenario again on a service of its
    own with PRAGMA journal_mode=WAL applied through the engine plugin, and the engines then
    showing WAL, so the count of breaches it removed is a verdict."""
    out = tmp_path / "report"
    proc = run_report(out, "--target", "examples/targets/naive.toml",
                      "--scenarios", "lock-past-deadline")
    assert proc.returncode == 0, proc.stderr[-2000:]
    analysis = json.loads((out / "report.json").read_text())["analysis"]["naive"]
    (journal,) = [h for h in analysis if h["cause"] == "rollback-journal"]
    assert journal["verdict"] == "confirmed"
    assert journal["verified"].startswith(
        "run again with PRAGMA journal_mode=WAL applied from outside (lock-past-deadline): ")
    assert journal["verified"].endswith("breaches there met"), journal["verified"]


def test_the_causes_no_scenario_stages_are_tested_by_the_batterys_checks(
        tmp_path: Path, run_report: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    """Bad input as 500s: the battery's own check, run against the same target as the
    report's experiment, confirms it on the naive service (an id past 64 bits reaches its
    driver)."""
    out = tmp_path / "report"
    proc = run_report(out, "--target", "examples/targets/naive.toml",
                      "--scenarios", "steady-state", "--experiments")
    assert proc.returncode == 0, proc.stderr[-2000:]
    analysis = {h["cause"]: h for h in json.loads(
        (out / "report.json").read_text())["analysis"]["naive"]}
    assert analysis["bad-input-500"]["verdict"] == "confirmed", analysis["bad-input-500"]
    assert analysis["bad-input-500"]["evidence"].startswith(
        "the battery's test_bad_input_never_gets_a_500 failed: ")
    assert analysis["resource-leak"]["verdict"] in ("confirmed", "refuted")


def test_a_service_that_never_starts_is_a_clear_error_not_a_traceback(
        tmp_path: Path, run_report: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    """MLflow's server once took past the readiness bound at its first start: the report
    ended in a ServerNotReady traceback. Nothing can be measured then; it says so."""
    target = tmp_path / "broken.toml"
    target.write_text('app = "no_such_module:app"\n\n[write]\nrequest = "POST /items/"\n'
                      'json = { name = "{unique}" }\nid_field = "id"\n\n'
                      '[read]\nrequest = "GET /items/{id}"\n')
    proc = run_report(tmp_path / "report", "--target", str(target),
                      "--scenarios", "steady-state")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "no_such_module: the service never answered its readiness check" in proc.stderr
    assert 'Could not import module "no_such_module"' in proc.stderr  # its log says why
    assert "Traceback" not in proc.stderr
