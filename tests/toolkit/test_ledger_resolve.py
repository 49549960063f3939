"""The ledger judges what a client was told, not what a later retry was told: an
indeterminate write that had committed, resent to a service without idempotency keys, is
refused as a duplicate (409). That refusal is no answer to the first request, so the write
stays indeterminate; it must never become a definite failure whose row is then counted as
a phantom by the next check (found on the WSGI example, SIGKILLed mid-write)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from sqlite_faults import LedgerReport, ServerProcess, WriteLedger, load_target

from examples.targets import FOLDER

pytestmark = pytest.mark.timeout(120)


def test_a_committed_write_whose_retry_is_refused_is_no_phantom(
        service_server: Callable[..., ServerProcess], fault_seed: int) -> None:
    target = load_target(FOLDER / "query_api.toml")  # 409 for a name taken, no keys
    server = service_server(target, with_faults=False)
    ledger = WriteLedger(random.Random(fault_seed), target.write, prefix="resolve")
    create = ledger.new_create()

    async def run() -> list[LedgerReport]:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
            await ledger.send(client, create)
        assert create.outcome == "acknowledged"
        # The answer was lost on the way back (a SIGKILL, a reset): the client knows nothing.
        create.outcome, create.status, create.detail = "indeterminate", None, "ReadError"
        first = await ledger.check(server.base_url, Path(server.db_path))
        second = await ledger.check(server.base_url, Path(server.db_path))
        return [first, second]

    first, second = asyncio.run(run())
    assert create.outcome == "indeterminate", (create.outcome, create.status, create.detail)
    assert first.unresolved == 1 and "retry answered 409" in first.problems[0], first
    assert second.phantoms == 0 and second.failed == 0, second.problems


def test_each_wrong_answer_is_charged_to_the_check_that_found_it(
        service_server: Callable[..., ServerProcess], fault_seed: int) -> None:
    """The report checks one ledger after each scenario: a write lost, a phantom row or an
    unresolved write found after scenario 3 is scenario 3's finding, not every later one's
    (MLflow's 75 unresolved writes of one scenario breached all eight after it)."""
    target = load_target(FOLDER / "query_api.toml")
    server = service_server(target, with_faults=False)
    ledger = WriteLedger(random.Random(fault_seed), target.write, prefix="charged")
    lost, phantom, unresolved = (ledger.new_create() for _ in range(3))

    async def run() -> list[LedgerReport]:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
            for create in (lost, phantom, unresolved):
                await ledger.send(client, create)
        # Acknowledged, then gone; told "failed", yet there; its answer lost on the way.
        with contextlib.closing(sqlite3.connect(server.db_path)) as db, db:
            db.execute("DELETE FROM users WHERE name = ?", (lost.name,))
        phantom.outcome, phantom.status, phantom.detail = "failed", 409, "name_taken"
        unresolved.outcome, unresolved.status, unresolved.detail = ("indeterminate", None,
                                                                    "ReadError")
        return [await ledger.check(server.base_url, Path(server.db_path)) for _ in range(2)]

    first, second = asyncio.run(run())
    assert (first.lost, first.phantoms, first.unresolved) == (1, 1, 1), first.problems
    assert (second.lost, second.phantoms, second.unresolved) == (0, 0, 0), second.problems
    assert (second.acknowledged, second.failed, second.indeterminate) == (1, 1, 1)


def test_indeterminate_keyed_writes_are_resolved_by_a_retry_with_their_key(
        service_server: Callable[..., ServerProcess], fault_seed: int) -> None:
    """What every report check does by default: two writes committed and their answers
    lost, one never sent at all. Retried with their keys, the first two are replayed
    (recovered: they had committed) and the third created (resolved: it had not); one row
    each, nothing unresolved."""
    target = load_target(FOLDER / "hardened.toml")  # honours Idempotency-Key
    server = service_server(target, with_faults=False)
    ledger = WriteLedger(random.Random(fault_seed), target.write, prefix="keyed")
    committed = [ledger.new_create(), ledger.new_create()]
    never_sent = ledger.new_create()

    async def run() -> LedgerReport:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
            for create in committed:
                await ledger.send(client, create)
        assert [c.outcome for c in committed] == ["acknowledged"] * 2
        for create in (*committed, never_sent):  # the client knows nothing of these
            create.outcome, create.status, create.detail = "indeterminate", None, "ReadError"
        return await ledger.check(server.base_url, Path(server.db_path))

    report = asyncio.run(run())
    assert (report.recovered, report.resolved, report.unresolved) == (2, 1, 0), report.problems
    assert report.duplicated == 0 and report.ok
    names = [c.name for c in (*committed, never_sent)]
    with contextlib.closing(sqlite3.connect(server.db_path)) as db:
        rows = db.execute("SELECT count(*) FROM users WHERE name IN (?, ?, ?)",
                          names).fetchone()
    assert rows == (3,)
