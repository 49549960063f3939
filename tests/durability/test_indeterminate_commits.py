"""A create whose process dies after its commit reached the WAL, before the 201 left: the
client sees a dropped connection (indeterminate), the row survives the crash, and only a retry
with the same Idempotency-Key can tell the client so without creating a second user.

The kill is exact: strace kills the service at the entry of its commit's sync of the WAL
(synchronous=FULL syncs the WAL at every commit), after the commit's frames were written.
Traced here (pysqlite3's SQLite 3.53 calls fsync, not fdatasync), the first commit into a new
WAL makes: pwrite(WAL header), fsync, pwrite(frame headers and pages) x3, fsync. So the
commit's own sync is the 2nd.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import httpx
import pytest
from sqlite_faults.ledger import WriteLedger
from sqlite_faults.server import ServerProcess
from sqlite_faults.summary import DurabilitySummary
from sqlite_faults.syscalls import SyscallFault, strace_path

from examples.targets import USERS_WRITE

pytestmark = pytest.mark.sqlite_only("a kill at SQLite's WAL commit sync")

COMMIT_SYNC = 2  # the WAL header's sync comes first


@pytest.mark.parametrize("resolve_with_key", [True, False], ids=["with-key", "without-key"])
async def test_a_create_killed_at_its_wal_sync_committed_and_only_its_key_resolves_it(
    servers: Callable[..., ServerProcess], rng: random.Random,
    durability_summary: DurabilitySummary, resolve_with_key: bool,
) -> None:
    if strace_path() is None:
        pytest.skip("strace is not installed (apt-get install strace): syscall kills need it")
    server = servers(sqlite_synchronous="FULL", sqlite_checkpoint_interval_s=0)
    server.start()  # creates the schema, so the faulty start below writes nothing itself
    server.stop()
    wal = server.db_path.with_name("users.db-wal")
    fault = SyscallFault([wal], ["fsync", "fdatasync"], "signal=KILL", when=str(COMMIT_SYNC))
    server.start(wrapper=fault.wrapper())

    ledger = WriteLedger(random.Random(rng.random()), USERS_WRITE, prefix="sync-kill")
    create = ledger.new_create()
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10.0) as client:
        await ledger.send(client, create)
    assert create.outcome == "indeterminate", (create.status, create.detail)
    assert server.wait_exit(timeout_s=10) is not None

    server.start()
    report = await ledger.check(server.base_url, server.db_path,
                                resolve_with_key=resolve_with_key)
    if resolve_with_key:
        # The commit survived the kill; the keyed retry found it instead of creating anew.
        assert report.ok, report.problems
        assert (report.recovered, report.resolved) == (1, 0)
        scenario = durability_summary.scenario("kill-at-commit-sync/FULL")
        scenario.cycles += 1
        scenario.add_report(report)
    else:
        # Without the key the retry is refused (name taken) and the outcome stays unknown to
        # the client: the checker must report it.
        assert not report.ok
        assert report.unresolved == 1

