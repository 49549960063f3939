"""SIGKILL the server at random moments under concurrent writes; restart; check the ledger.

Invariants after every restart: no acknowledged user lost or changed, no duplicate, no row
for a definite failure, every indeterminate create resolved to one row by its key,
integrity_check ok. WAL recovery is shown to happen: kills that land while acknowledged
commits live only in the -wal file (the main file alone lacks them) are counted, and those
commits are read back after the restart.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlite_faults.inspect_db import names_in_main_file_alone
from sqlite_faults.ledger import WriteLedger
from sqlite_faults.server import ServerProcess
from sqlite_faults.summary import DurabilitySummary, Plan
from sqlite_faults.traffic import LoadGenerator

from examples.targets import USERS_WRITE

CLIENTS = 4


@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
async def test_random_sigkill_under_load_loses_nothing(
    servers: Callable[..., ServerProcess], plan: Callable[[int], Plan], rng: random.Random,
    durability_summary: DurabilitySummary, tmp_path: Path, synchronous: str,
    request: pytest.FixtureRequest,
) -> None:
    on_postgres = request.config.getoption("--backend") == "postgres"
    if on_postgres and synchronous != "NORMAL":
        pytest.skip("synchronous is an SQLite setting: the PostgreSQL leg runs once")
    scenario = durability_summary.scenario(
        "random-sigkill/postgresql" if on_postgres else f"random-sigkill/{synchronous}")
    # Checkpoints every 0.25 s: some kills find every commit checkpointed, others find the
    # newest ones only in the WAL.
    server = servers(sqlite_synchronous=synchronous, sqlite_checkpoint_interval_s=0.25)
    ledger = WriteLedger(random.Random(rng.random()), USERS_WRITE, prefix=f"k{synchronous[0]}")
    steps = plan(6)
    if steps.mode == "nightly":
        scenario.target_cycles = steps.target
    server.start()
    for cycle in steps.cycles(scenario):
        writers = LoadGenerator.writers(ledger, CLIENTS, random.Random(rng.random()),
                                        stop_when_gone=True)
        writers.start(server.base_url)
        # When the kill lands is part of the seeded fault schedule, not a synchronisation.
        await asyncio.sleep(rng.uniform(0.05, 0.6))
        server.kill()
        await writers.stop()

        only_in_wal: set[str] = set()
        if not on_postgres:  # WAL recovery evidence is about SQLite's -wal file
            scenario.wal_bytes_at_kill.append(_size(server.db_path.with_name("users.db-wal")))
            checkpointed = names_in_main_file_alone(server.db_path, tmp_path / "scratch")
            acknowledged = {c.name for c in ledger.creates if c.outcome == "acknowledged"}
            only_in_wal = acknowledged - checkpointed if checkpointed is not None else set()

        scenario.ready_seconds.append(server.start())
        report = await ledger.check(server.base_url, server.database_url)
        scenario.add_report(report)
        assert report.ok, f"cycle {cycle}: {report.problems}"
        if only_in_wal:
            scenario.kills_with_commits_only_in_wal += 1  # and check() found them all

    assert scenario.acknowledged > 0
    if not on_postgres:
        assert scenario.kills_with_commits_only_in_wal > 0, "no kill exercised WAL recovery"


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
