"""SIGTERM under load, as a deploy or `systemctl restart` sends it: the server stops accepting,
lets the requests in flight finish within the graceful window, checkpoints the WAL and
closes the database, then exits 0; the restarted server has every acknowledged write.

What a client may see at the moment of the stop, and what it must never see:
- an answer (201, or a clean 503/504) for every request the server had started;
- a refused connection (the listener is closed), or a keep-alive connection closed while it
  was idle: the request was never read, so it never ran, and a retry is safe;
- never a request that committed and was then cut without its answer (`cut after commit`):
  the ledger finds those when it retries indeterminate creates with their keys after the
  restart (a retry that reports a replay had committed the first time).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import time
from collections.abc import Callable

import httpx
import pytest
from sqlite_faults.inspect_db import query_url
from sqlite_faults.ledger import WriteLedger
from sqlite_faults.locks import LockHolder
from sqlite_faults.observe import MetricsSnapshot, wait_until
from sqlite_faults.server import ServerProcess
from sqlite_faults.summary import DurabilitySummary, Plan
from sqlite_faults.traffic import LoadGenerator

from examples.targets import USERS_WRITE

CLIENTS = 8
DEADLINE_S = 2.0
GRACEFUL_S = DEADLINE_S + 3.0
EXIT_LATE_S = 10.0  # how much later than the graceful window a loaded machine may exit
HOLD_AFTER_STOP_S = 1.0  # the lock held on after the listener closed (fault schedule)
WAIT_S = 20.0  # bound of each wait for a state of the server
# Ways a request can end without an answer; each is then indeterminate in the ledger.
NO_ANSWER = {"ConnectError", "ReadError", "RemoteProtocolError", "WriteError",
             "ReadTimeout", "PoolTimeout"}


@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
async def test_sigterm_under_load_answers_in_flight_requests_and_loses_nothing(
    servers: Callable[..., ServerProcess], plan: Callable[[int], Plan], rng: random.Random,
    durability_summary: DurabilitySummary, synchronous: str, on_postgres: bool,
) -> None:
    if on_postgres and synchronous != "NORMAL":
        pytest.skip("synchronous is an SQLite setting: the PostgreSQL leg runs once")
    name = "sigterm-restart/postgresql" if on_postgres else f"sigterm-restart/{synchronous}"
    scenario = durability_summary.scenario(name)
    server = servers(sqlite_synchronous=synchronous, sqlite_checkpoint_interval_s=0.25,
                     db_deadline_s=DEADLINE_S, http_graceful_shutdown_s=GRACEFUL_S)
    ledger = WriteLedger(random.Random(rng.random()), USERS_WRITE, prefix=f"t{synchronous[0]}")
    steps = plan(4)
    server.start()
    stop_seconds: list[float] = []
    unanswered = 0
    cut_after_commit: list[str] = []
    for cycle in steps.cycles(scenario):
        first = len(ledger.creates)
        writers = LoadGenerator.writers(ledger, CLIENTS, random.Random(rng.random()),
                                        stop_when_gone=True)
        writers.start(server.base_url)
        # When the SIGTERM lands is part of the seeded fault schedule.
        await asyncio.sleep(rng.uniform(0.1, 0.6))
        sent_at = time.monotonic()
        os.killpg(server.pid, signal.SIGTERM)
        code = await asyncio.to_thread(server.wait_exit, GRACEFUL_S + EXIT_LATE_S)
        stop_seconds.append(time.monotonic() - sent_at)
        await writers.stop()
        # uvicorn re-raises the signal once its shutdown is done, so the status is "ended
        # by SIGTERM" (systemd counts that as a clean exit); the WAL check below shows the
        # shutdown really ran to the database's close.
        assert code in (0, -signal.SIGTERM), \
            f"cycle {cycle}: the server did not stop cleanly ({code}):\n" + server.log_tail()
        if not on_postgres:
            wal = server.db_path.with_name(server.db_path.name + "-wal")
            assert not wal.exists(), f"cycle {cycle}: the WAL outlived a clean stop"

        no_answer = [c for c in ledger.creates[first:] if c.detail in NO_ANSWER]
        unanswered += len(no_answer)
        scenario.ready_seconds.append(server.start())
        report = await ledger.check(server.base_url, server.database_url)
        scenario.add_report(report)
        assert report.ok, f"cycle {cycle}: {report.problems}"
        # check() retried each with its key: a replay means the first attempt had
        # committed, and its client was cut off without the answer.
        cut_after_commit += [c.name for c in no_answer if c.detail == "replayed"]

    scenario.notes.append(
        f"{len(stop_seconds)} SIGTERMs under {CLIENTS} writers: {scenario.acknowledged} "
        f"acknowledged, {scenario.lost} lost, {unanswered} unanswered (refused or "
        f"idle-closed, never run), {len(cut_after_commit)} cut after commit; stop took "
        f"{min(stop_seconds):.2f}-{max(stop_seconds):.2f} s (graceful window {GRACEFUL_S:g} s)")
    assert scenario.acknowledged > 0
    assert cut_after_commit == [], "answers lost for committed creates"


@pytest.mark.sqlite_only("a write lock held by another SQLite process")
async def test_a_request_in_flight_at_sigterm_gets_its_answer_and_its_commit(
    servers: Callable[..., ServerProcess],
) -> None:
    """A create waits for a lock another process holds; SIGTERM arrives; the server stops
    accepting (the port refuses connections) while the create still waits; then the lock is
    released. The create must commit and its client get the 201: shutdown waits for work in
    flight instead of cutting it (uvicorn's graceful timeout, HTTP_GRACEFUL_SHUTDOWN_S), and
    does so at its default (unset: DB_DEADLINE_S + 5 s), which production runs with."""
    server = servers(db_deadline_s=DEADLINE_S * 2)
    server.start()
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30.0) as client:
        with LockHolder(server.database_url, "immediate") as holder:
            create = asyncio.create_task(client.post(
                "/users/", json={"name": "in-flight", "password": "long enough"},
                headers={"Idempotency-Key": "in-flight"}))
            await wait_until(lambda: writer_busy(server), "the create waits for the lock",
                             timeout_s=WAIT_S)
            os.killpg(server.pid, signal.SIGTERM)
            await wait_until(lambda: refused(server), "the server stopped accepting",
                             timeout_s=WAIT_S)
            # The fault schedule: the lock is held on well into the shutdown (uvicorn waits
            # 0.1 s after closing the listener before it starts counting the graceful
            # window), and released long before the create's deadline.
            await asyncio.sleep(HOLD_AFTER_STOP_S)
            holder.release()
            response = await create
    assert response.status_code == 201, response.text
    code = await asyncio.to_thread(server.wait_exit, DEADLINE_S * 2 + 5.0 + EXIT_LATE_S)
    assert code in (0, -signal.SIGTERM)
    server.start()
    assert db_names(server) == ["in-flight"]


def writer_busy(server: ServerProcess) -> bool:
    metrics = MetricsSnapshot(httpx.get(server.base_url + "/metrics", timeout=5.0).text)
    return metrics.value("db_inflight", lane="writer") == 1


def refused(server: ServerProcess) -> bool:
    try:
        socket.create_connection(("127.0.0.1", server.port), timeout=1.0).close()
    except OSError:
        return True
    return False


def db_names(server: ServerProcess) -> list[str]:
    return [name for (name,) in query_url(server.database_url, "SELECT name FROM users")]
