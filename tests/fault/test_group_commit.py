"""Group commit on the writer lane: the writes that waited together commit together.

Each test holds the writer lane with a write that blocks until released, queues the calls it
wants grouped behind it (they are all in the queue before the lane takes them: one batch, one
transaction, no timing), releases the lane, and counts the transactions begun.

What must hold inside a group (app/db.py `_commit_group`; the batch facts in
../shared/notes/sqlite-facts.md):
- a failed call fails only itself: its savepoint is rolled back, the others commit in the same
  transaction, nothing runs twice;
- an interrupted INSERT ends the whole transaction in SQLite, every other call's savepoint
  included: those calls run again in a fresh transaction and commit, and the interrupted one
  gets its 504 with nothing of it committed;
- idempotency keys are exact within a group (the second call sees the first's key);
- nothing is acknowledged before the COMMIT that holds it: a failed COMMIT fails every call;
- a group waits for the write lock while any of its calls still has time (a short call's 504
  does not fail a long one);
- a worker connection's busy timeout, set for an earlier call's long budget, never lets a
  later call with a short budget wait past its own deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Connection, event, text
from sqlite_faults.locks import LockHolder
from sqlite_faults.observe import wait_until
from sqlite_faults.sql_errors import InjectSqlError

from app.errors import DeadlineExceeded
from app.resilience import Deadline

pytestmark = pytest.mark.sqlite_only("group commit: PostgreSQL commits each write on its own")

WAIT_S = 10.0


def new_user(name: str) -> dict[str, str]:
    return {"name": name, "password": "correct horse"}


class Released(Exception):
    """How the held write ends: failed, so it never COMMITs (only the group's COMMIT runs)."""


class HeldWriter:
    """A write that holds the writer lane until released; calls queued meanwhile form the
    lane's next batch."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Event()

    def work_until_released(self) -> None:
        self.started.set()
        assert self.release.wait(WAIT_S), "never released"

    def work(self, _conn: Any) -> str:
        self.work_until_released()
        raise Released

    async def hold(self, app: FastAPI) -> asyncio.Future[Any]:
        call = asyncio.ensure_future(app.state.db.write("held", self.work))
        assert await asyncio.to_thread(self.started.wait, WAIT_S), "the held write never ran"
        return call


@pytest.fixture
def begins(app: FastAPI) -> Iterator[list[str]]:
    """Every transaction the writer engine begins from now on (SQLAlchemy's begin event: the
    writer's BEGIN IMMEDIATE itself goes to the driver, in a loop while it waits for the lock)."""
    seen: list[str] = []

    def count(_conn: Any) -> None:
        seen.append("BEGIN")

    engine = app.state.db.writer_engine
    event.listen(engine, "begin", count)
    yield seen
    event.remove(engine, "begin", count)


async def grouped(app: FastAPI, calls: list[Callable[[], Any]], begins: list[str],
                  fault: contextlib.AbstractContextManager[Any] | None = None) -> list[Any]:
    """Run `calls` (coroutine factories that each end in one write) as one group; `begins`
    then holds the BEGINs of the group alone, and `fault` is armed for the group alone."""
    db = app.state.db
    held = HeldWriter()
    holder = await held.hold(app)
    begins.clear()
    with fault or contextlib.nullcontext():
        tasks = [asyncio.ensure_future(call()) for call in calls]
        try:
            await wait_until(lambda: db.writer.queued == len(calls),
                             "every write waits behind the held one")
        finally:
            held.release.set()
        with pytest.raises(Released):
            await holder
        return await asyncio.gather(*tasks, return_exceptions=True)


def names_in(app: FastAPI) -> list[str]:
    with app.state.db.reader_engine.connect() as conn:
        return list(conn.execute(text("SELECT name FROM users ORDER BY id")).scalars())


async def test_a_duplicate_name_fails_only_its_own_request_in_one_transaction(
    app: FastAPI, client: httpx.AsyncClient, begins: list[str]
) -> None:
    assert (await client.post("/users/", json=new_user("taken"))).status_code == 201
    names = ["g1", "taken", "g2", "g3"]
    responses = await grouped(app, [lambda n=n: client.post("/users/", json=new_user(n))
                                    for n in names], begins)
    assert [r.status_code for r in responses] == [201, 409, 201, 201]
    assert responses[1].json()["error"]["code"] == "name_taken"
    assert sorted(names_in(app)) == ["g1", "g2", "g3", "taken"]
    # One transaction: the duplicate was rolled back to its savepoint, nothing ran again.
    assert begins == ["BEGIN"]


async def test_two_creates_with_one_key_in_one_group_make_one_user(
    app: FastAPI, client: httpx.AsyncClient, begins: list[str]
) -> None:
    headers = {"Idempotency-Key": "group-key"}
    responses = await grouped(app, [
        lambda: client.post("/users/", json=new_user("once"), headers=headers)
        for _ in range(2)
    ], begins)
    assert [r.status_code for r in responses] == [201, 201]
    assert responses[0].json() == responses[1].json()
    # Which of the two was first depends on which hash finished first.
    assert sorted(str(r.headers.get("Idempotent-Replayed")) for r in responses) == [
        "None", "true"]
    assert names_in(app) == ["once"]
    assert begins == ["BEGIN"]


def _insert(name: str) -> Callable[[Connection], str]:
    def work(conn: Connection) -> str:
        conn.execute(text("INSERT INTO users (name, password_hash, created_at) "
                          "VALUES (:name, 'h', CURRENT_TIMESTAMP)"), {"name": name})
        return name

    return work


def _slow_insert(conn: Connection) -> str:
    """An INSERT that runs until interrupted: its rows come from a recursive CTE that counts
    until a clock 30 s away (an interrupted DML statement ends SQLite's whole transaction)."""
    conn.connection.dbapi_connection.create_function("fault_clock", 0, time.monotonic)
    conn.execute(text(
        "INSERT INTO users (name, password_hash, created_at) "
        "SELECT 'slow-' || count(*), 'h', CURRENT_TIMESTAMP FROM ("
        " WITH RECURSIVE spin(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM spin"
        " WHERE fault_clock() < :until) SELECT n FROM spin)"),
        {"until": time.monotonic() + 30})
    return "slow"


async def test_an_interrupted_insert_runs_the_rest_of_its_group_again(
    app: FastAPI, begins: list[str]
) -> None:
    db = app.state.db
    responses = await grouped(app, [
        lambda: db.write("before", _insert("before"), Deadline.after(WAIT_S)),
        lambda: db.write("slow", _slow_insert, Deadline.after(0.5)),
        lambda: db.write("after", _insert("after"), Deadline.after(WAIT_S)),
    ], begins)
    assert responses[0] == "before"
    assert isinstance(responses[1], DeadlineExceeded)
    assert responses[2] == "after"
    assert names_in(app) == ["before", "after"]  # nothing of the interrupted INSERT
    # The interrupt ended the first transaction; the other two ran again in a second one.
    assert begins == ["BEGIN", "BEGIN"]


async def test_a_failed_commit_fails_every_call_of_its_group(
    app: FastAPI, client: httpx.AsyncClient, begins: list[str]
) -> None:
    """Nothing is acknowledged before the COMMIT that holds it."""
    names = ["c1", "c2", "c3"]
    fault = InjectSqlError(app.state.db.writer_engine, "io_error", at="commit", times=1)
    responses = await grouped(app, [lambda n=n: client.post("/users/", json=new_user(n))
                                    for n in names], begins, fault)
    assert fault.injected == 1
    assert begins == ["BEGIN"]
    assert [r.status_code for r in responses] == [503] * len(names)
    assert {r.json()["error"]["code"] for r in responses} == {"storage_unavailable"}
    assert names_in(app) == []


async def test_a_busy_timeout_set_for_a_long_budget_does_not_outlast_a_short_one(
    make_app: Callable[..., FastAPI], database_url: str,
) -> None:
    """The writer's connection last bounded a lock wait by a 5 s budget; the next call has
    0.3 s. Kept as it was, the busy timeout would hold the lane for 5 s behind a lock."""
    app = make_app(db_deadline_s=5.0)
    db = app.state.db
    assert await db.write("long", _insert("long")) == "long"
    with LockHolder(database_url, "immediate"):
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            await db.write("short", _insert("short"), Deadline.after(0.3))
        assert await asyncio.to_thread(db.writer.wait_idle, 2.0), (
            "the writer was still waiting on the lock 2 s after a 0.3 s deadline")
        assert time.monotonic() - started < 2.5


async def test_a_call_that_fails_after_its_first_statement_leaves_nothing_of_it(
    app: FastAPI, client: httpx.AsyncClient, begins: list[str]
) -> None:
    """Its first INSERT succeeded, its second failed: the savepoint takes back the first
    too (a half-done call must not commit with the group), and the others commit."""
    assert (await client.post("/users/", json=new_user("taken"))).status_code == 201
    insert = text("INSERT INTO users (name, password_hash, created_at) "
                  "VALUES (:name, 'not a hash', '2026-12-05 00:00:00')")

    def half_done(conn: Connection) -> None:
        conn.execute(insert, {"name": "half"})
        conn.execute(insert, {"name": "taken"})  # a UNIQUE violation, after the first

    responses = await grouped(app, [
        lambda: client.post("/users/", json=new_user("before")),
        lambda: app.state.db.write("half", half_done),
        lambda: client.post("/users/", json=new_user("after")),
    ], begins)
    assert responses[0].status_code == 201 and responses[2].status_code == 201
    assert isinstance(responses[1], Exception), responses[1]
    assert sorted(names_in(app)) == ["after", "before", "taken"]  # no "half"
    assert begins == ["BEGIN"]  # one transaction: nothing ran again


async def test_a_group_waits_for_the_lock_while_any_of_its_calls_still_can(
    app: FastAPI, database_url: str, begins: list[str]
) -> None:
    """A group of a 0.5 s call and a 10 s call meets a lock held by another process. The
    short call gets its 504 at its own deadline; the group keeps waiting for the long one,
    which commits once the lock is let go, in the group's one transaction. A group that gave
    up at its earliest deadline would fail a call that had time left."""
    db = app.state.db
    other = LockHolder(database_url, "immediate")
    other.start()
    held = HeldWriter()
    tries = threading.Semaphore(0)  # one release per BEGIN the writer's connection tries

    def hand_the_lock_over(conn: Connection) -> str:
        held.work_until_released()
        # Each try of the group's BEGIN IMMEDIATE (a busy wait of LOCK_POLL_MS) is traced.
        conn.connection.dbapi_connection.set_trace_callback(
            lambda sql: tries.release() if sql.startswith("BEGIN") else None)
        # The held write ends its own transaction, then the other process takes the lock:
        # the group's BEGIN meets it, with no moment in which the lock is free.
        conn.rollback()
        other.acquire()
        raise Released

    def tried_again(times: int) -> bool:
        return all(tries.acquire(timeout=WAIT_S) for _ in range(times))

    holder = asyncio.ensure_future(db.write("held", hand_the_lock_over))
    try:
        assert await asyncio.to_thread(held.started.wait, WAIT_S), "the held write never ran"
        short = asyncio.ensure_future(db.write("short", _insert("short"), Deadline.after(0.5)))
        long = asyncio.ensure_future(db.write("long", _insert("long"), Deadline.after(WAIT_S)))
        await wait_until(lambda: db.writer.queued == 2, "both writes wait behind the held one")
        begins.clear()
        held.release.set()
        with pytest.raises(Released):
            await holder
        with pytest.raises(DeadlineExceeded):
            await short  # while the other process still holds the lock
        while tries.acquire(blocking=False):  # the tries before the short call's 504
            pass
        # Two more tries: the first of them failed after the short call had its 504, and the
        # group went on waiting for the long one.
        assert await asyncio.to_thread(tried_again, 2), "the group stopped waiting for the lock"
        assert not long.done()
        other.release()
        assert await long == "long"
    finally:
        held.release.set()
        other.close()
    assert names_in(app) == ["long"]
    assert begins == ["BEGIN"]  # the group's one transaction: the long call was not retried
