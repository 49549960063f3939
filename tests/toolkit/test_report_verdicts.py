"""What the report's verdicts call each wrong answer, and what the ledger counts as one."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlite_faults.ledger import LedgerReport, WriteLedger
from sqlite_faults.report.__main__ import gate_fails
from sqlite_faults.report.slo import (
    BREACHED,
    INCONCLUSIVE,
    MET,
    LaneSamples,
    Objectives,
    Verdict,
    lanes_verdict,
    ledger_verdicts,
)
from sqlite_faults.target import target_from_dict
from sqlite_faults.traffic import CREATE

OBJECTIVES = Objectives(p95_latency_ms=300, error_rate=0.01, deadline_grace_ms=100,
                        recovery_s=3.0, acknowledged_writes_lost=0)
TARGET = {"app": "x:app", "write": {"request": "POST /users/", "json": {"name": "{unique}"},
                                    "id_field": "id"},
          "read": {"request": "GET /users/{id}"},
          "database": {"table": "users", "unique_column": "name"}}


def failed(report: LedgerReport) -> set[str]:
    return {v.slo for v in ledger_verdicts("s", CREATE, report, OBJECTIVES) if not v.passed}


def test_an_error_that_committed_is_not_called_an_acknowledged_write_lost() -> None:
    assert failed(LedgerReport(committed_after_error=1)) == {"errors that committed"}
    assert failed(LedgerReport(phantoms=1)) == {"errors that committed"}
    assert failed(LedgerReport(lost=1)) == {"acknowledged writes lost"}
    assert failed(LedgerReport(duplicated=2)) == {"duplicate writes"}
    assert failed(LedgerReport(unresolved=1)) == {"indeterminate writes unresolved"}
    assert failed(LedgerReport()) == set()


@pytest.mark.timeout(30)
async def test_the_ledger_counts_a_500_whose_write_committed(tmp_path: Path) -> None:
    db = tmp_path / "users.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO users (name) VALUES ('t-0'), ('t-1')")
    target = target_from_dict(TARGET, tmp_path)
    ledger = WriteLedger(random.Random(1), target.write, prefix="t")
    told_500, timed_out = ledger.new_create(), ledger.new_create()
    told_500.outcome, told_500.status, told_500.detail = "indeterminate", 500, "http-500"
    timed_out.outcome, timed_out.detail = "indeterminate", "ReadTimeout"
    # No service answers there: the resolving retries fail, which is not what is counted.
    report = await ledger.check("http://127.0.0.1:9", db)
    # The 500's row exists: the client was told "failed" and it committed. The timeout's
    # row exists too, but that client was told nothing.
    assert report.committed_after_error == 1
    assert report.lost == 0


def test_a_check_that_could_not_read_every_write_back_claims_nothing() -> None:
    verdicts = {v.slo: v for v in ledger_verdicts("s", CREATE, LedgerReport(unchecked=3),
                                                  OBJECTIVES)}
    assert verdicts["acknowledged writes lost"].status == INCONCLUSIVE
    assert verdicts["indeterminate writes unresolved"].status == INCONCLUSIVE
    assert verdicts["duplicate writes"].status == MET  # read from the table, not over HTTP
    found = {v.slo: v for v in ledger_verdicts("s", CREATE, LedgerReport(unchecked=3, lost=1),
                                               OBJECTIVES)}
    assert found["acknowledged writes lost"].status == BREACHED  # a loss found stands


@pytest.mark.timeout(60)
async def test_the_check_of_a_service_that_stopped_answering_ends_within_its_budget(
        tmp_path: Path) -> None:
    """A listener that accepts and never answers: without the budget the check would wait a
    request timeout for every write, eight at a time."""
    db = tmp_path / "users.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    target = target_from_dict(TARGET, tmp_path)
    ledger = WriteLedger(random.Random(1), target.write, prefix="t")
    for _ in range(64):
        ledger.new_create().outcome = "indeterminate"
    held: list[asyncio.StreamWriter] = []
    silent = await asyncio.start_server(lambda _r, w: held.append(w), "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    started = time.monotonic()
    async with silent:
        report = await ledger.check(f"http://127.0.0.1:{port}", db, budget_s=1.0,
                                    request_timeout_s=1.0)
        for writer in held:
            writer.close()
            await writer.wait_closed()
    # Budget, then the requests in flight at its end: 8 at a time, so 16 at most were sent.
    assert time.monotonic() - started < 5.0  # without the budget: 8 s (64 / 8 x 1 s)
    assert report.unchecked >= 64 - 16
    assert report.unresolved + report.unchecked == 64


def lanes(steady: list[float], fault: list[float], capacity: float = 4) -> LaneSamples:
    return LaneSamples(capacity, {"steady": steady, "fault": fault})


def test_lanes_held_by_slow_clients_fail_and_free_lanes_pass() -> None:
    assert lanes_verdict("s", lanes([0.2] * 10, [0.3, 0.0, 1.0] * 5), OBJECTIVES).passed
    held = lanes_verdict("s", lanes([0.2] * 10, [4.0] * 10), OBJECTIVES)
    assert not held.passed and "4.00 busy of 4" in held.observed
    assert not lanes_verdict("s", lanes([0.2] * 10, []), OBJECTIVES).passed  # unobserved


def _result(network: bool, *passed: bool, inconclusive: str = "") -> Any:
    """A scenario's result as the exit gate reads it: its kind and its verdicts."""
    return SimpleNamespace(scenario=SimpleNamespace(network=network), verdicts=[
        Verdict("s", "read", "p95", "", "", "", p, inconclusive=inconclusive if not p else "")
        for p in passed])


def test_the_exit_gate_is_opt_in_and_scoped() -> None:
    clean = [_result(False, True, True), _result(True, True)]
    network_breach = [_result(False, True), _result(True, True, False)]
    db_breach = [_result(False, False), _result(True, True)]
    # Default: a produced report exits 0 whatever it found.
    assert not gate_fails(db_breach, "nothing")
    # `breach`: any breach fails, a clean run does not.
    assert gate_fails(network_breach, "breach")
    assert gate_fails(db_breach, "breach")
    assert not gate_fails(clean, "breach")
    # `non-network-breach`: the seed's network scenarios do not count.
    assert not gate_fails(network_breach, "non-network-breach")
    assert gate_fails(db_breach, "non-network-breach")
    # A check the instrument could have decided is not the service's breach.
    assert not gate_fails([_result(False, True, False, inconclusive="generator late")],
                          "breach")
