"""A full DB work queue answers 503 at once; a burst of timed-out and failed calls leaves no
thread, file descriptor, in-flight call or checked-out connection behind."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx
import psutil
from fastapi import FastAPI
from sqlite_faults.locks import LockHolder
from sqlite_faults.observe import MetricsSnapshot
from sqlite_faults.slow import SlowStatements
from sqlite_faults.sql_errors import InjectSqlError


def new_user(name: str) -> dict[str, str]:
    return {"name": name, "password": "long enough"}


async def test_full_queue_is_refused_at_once_and_recovers(
    make_app: Callable[..., FastAPI], client_for: Callable[[FastAPI], httpx.AsyncClient],
    database_url: str,
) -> None:
    queue_limit = 2
    app = make_app(db_deadline_s=5.0, db_queue_limit=queue_limit)
    client = client_for(app)
    writer = app.state.db.writer
    assert (await client.post("/users/", json=new_user("steady"))).status_code == 201

    with LockHolder(database_url, "immediate"):
        # Every writer worker blocked on the lock, `queue_limit` calls waiting behind them.
        stuck = [
            asyncio.create_task(client.post("/users/", json=new_user(f"stuck-{i}")))
            for i in range(writer.capacity)
        ]
        started = time.monotonic()
        while writer.pending < writer.capacity:
            assert time.monotonic() - started < 2.0, "the handlers never filled the queue"
            await asyncio.sleep(0.01)  # until the handlers have submitted their calls
        started = time.monotonic()
        refused = await client.post("/users/", json=new_user("refused"))
        elapsed = time.monotonic() - started
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "overloaded"
        assert refused.headers["Retry-After"] == "1"
        assert elapsed < 1.0  # at once, not after the 5 s deadline
        # Reads have their own lane and are not refused.
        assert (await client.get("/users/1")).status_code == 200
    # Released: the queued calls complete.
    assert [r.status_code for r in await asyncio.gather(*stuck)] == [201] * writer.capacity
    assert (await client.post("/users/", json=new_user("after"))).status_code == 201
    metrics = MetricsSnapshot((await client.get("/metrics")).text)
    assert metrics.value("db_calls_total", operation="create_user", outcome="overloaded") == 1
    assert metrics.value("db_queue_depth") == 0


def resources() -> tuple[int, int]:
    process = psutil.Process()
    return process.num_threads(), process.num_fds()


async def test_burst_of_timeouts_and_failures_leaves_nothing_behind(
    make_app: Callable[..., FastAPI], client_for: Callable[[FastAPI], httpx.AsyncClient],
    database_url: str,
) -> None:
    deadline_s = 1.0  # short enough for a quick test, long enough for a loaded machine
    app = make_app(db_deadline_s=deadline_s, db_read_workers=2, db_queue_limit=64)
    client = client_for(app)
    db = app.state.db

    async def burst(prefix: str) -> list[int]:
        calls = [client.post("/users/", json=new_user(f"{prefix}-w{i}")) for i in range(6)]
        calls += [client.get("/users/1") for _ in range(6)]
        return [r.status_code for r in await asyncio.gather(*calls)]

    assert (await client.post("/users/", json=new_user("first"))).status_code == 201
    # Steady state, measured after a fault-free burst of the same shape has started every
    # thread the service keeps (lane workers, password-hashing threads). On a loaded machine
    # some of it may miss the short deadline; the threads it started are what counts.
    assert set(await burst("warm")) <= {200, 201, 504}
    assert db.writer.wait_idle(timeout_s=5.0) and db.readers.wait_idle(timeout_s=5.0)
    threads_before, fds_before = resources()

    with LockHolder(database_url, "immediate"), SlowStatements(db.reader_engine, seconds=5.0):
        statuses = await burst("locked")
    assert set(statuses) == {504}, statuses
    with InjectSqlError(db.writer_engine, "io_error"), InjectSqlError(db.reader_engine,
                                                                      "no_such_table"):
        statuses = await burst("failing")
    # Reads fail as a defect (500), writes as unavailable storage (503); on a loaded machine
    # a few may reach their deadline first (504).
    assert 500 in statuses and set(statuses) <= {500, 503, 504}, statuses

    # Every abandoned call ends within a bounded time after its deadline.
    assert db.writer.wait_idle(timeout_s=3.0)
    assert db.readers.wait_idle(timeout_s=3.0)
    threads_after, fds_after = resources()
    assert threads_after <= threads_before
    assert fds_after <= fds_before
    for engine, size in ((db.writer_engine, db.writer.workers),
                         (db.reader_engine, db.readers.workers)):
        assert engine.pool.checkedout() == size  # each worker's own, none leaked
    metrics = MetricsSnapshot((await client.get("/metrics")).text)
    assert metrics.value("db_inflight") == 0
    assert metrics.value("db_queue_depth") == 0
    # And the service still works.
    assert (await client.post("/users/", json=new_user("survivor"))).status_code == 201
