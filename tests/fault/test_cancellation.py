"""Work that must stop: between the statements of one unit of work, when its caller goes
away, and without anything of a cancelled attempt reaching the connection afterwards.

The faults are real: a second process holding the write lock, a statement that loops inside
SQLite until interrupted, a worker stalled between two statements, an awaiting task
cancelled (an outer timeout, a shutdown; with ASGITransport the app runs in the client's
task, so cancelling the request cancels the handler).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event
from sqlite_faults.locks import LockHolder
from sqlite_faults.observe import wait_until
from sqlite_faults.slow import SlowStatements, StallAfterStatement, spin

from app.errors import DeadlineExceeded

pytestmark = pytest.mark.sqlite_only("SQLite's interrupt flag and its close-time checkpoint")

WAIT_S = 10.0


def new_user(name: str) -> dict[str, str]:
    return {"name": name, "password": "correct horse"}


def names(db_rows: Callable[..., list[tuple[Any, ...]]]) -> list[str]:
    return [name for (name,) in db_rows("SELECT name FROM users ORDER BY id")]


class StatementLog:
    """Statements an engine really started: registered after the service's own
    before_cursor_execute check, so a statement that check refused is not listed."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.statements: list[str] = []

    def _before(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        self.statements.append(statement.lstrip())

    def __enter__(self) -> StatementLog:
        event.listen(self.engine, "before_cursor_execute", self._before)
        return self

    def __exit__(self, *_: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._before)

    def started(self, keyword: str) -> int:
        return sum(1 for s in self.statements if s.upper().startswith(keyword))


async def test_no_statement_starts_after_the_deadline_between_statements(
    make_app: Callable[..., FastAPI], client_for: Callable[[FastAPI], httpx.AsyncClient],
    db_rows: Callable[..., list[tuple[Any, ...]]],
) -> None:
    """A keyed create runs SELECT (the key), INSERT (user), INSERT (key). The worker stalls
    after the SELECT until past the deadline: no INSERT may start, not only no COMMIT."""
    deadline_s = 2.0  # the create reaches its SELECT well before it, even on a loaded machine
    app = make_app(db_deadline_s=deadline_s)
    client = client_for(app)
    engine = app.state.db.writer_engine
    answered = threading.Event()
    with StatementLog(engine) as log, \
            StallAfterStatement(engine, seconds=30.0, match=r"^SELECT", until=answered):
        response = await client.post("/users/", json=new_user("stalled"),
                                     headers={"Idempotency-Key": "k-stalled"})
        answered.set()  # the worker goes on only once the client has its answer
        assert response.status_code == 504, response.text
        assert app.state.db.writer.wait_idle(timeout_s=WAIT_S)
    assert log.started("SELECT") == 1
    assert log.started("INSERT") == 0, log.statements
    assert names(db_rows) == []


async def test_a_cancelled_caller_s_queued_write_never_runs(
    make_app: Callable[..., FastAPI], client_for: Callable[[FastAPI], httpx.AsyncClient],
    database_url: str, db_rows: Callable[..., list[tuple[Any, ...]]],
) -> None:
    """The awaiting task goes away (an outer timeout) while its create waits behind another
    write: when the writer lane gets to it, it must not run, let alone commit."""
    app = make_app(db_deadline_s=30.0)
    client = client_for(app)
    db = app.state.db
    with LockHolder(database_url, "immediate") as holder:
        first = asyncio.create_task(client.post("/users/", json=new_user("first")))
        await wait_until(lambda: db.writer.running == 1, "the first create is on the writer")
        second = asyncio.create_task(client.post("/users/", json=new_user("abandoned")))
        await wait_until(lambda: db.writer.queued == 1, "the second create is queued")
        second.cancel()
        with pytest.raises(asyncio.CancelledError):
            await second
        holder.release()
    assert (await first).status_code == 201
    assert db.writer.wait_idle(timeout_s=WAIT_S)
    assert names(db_rows) == ["first"]


async def test_a_cancelled_caller_s_running_statement_is_interrupted(
    make_app: Callable[..., FastAPI],
) -> None:
    """Cancelling the awaiting task stops the statement its worker runs: the lane is free
    long before the statement would have ended on its own."""
    app = make_app(db_deadline_s=30.0, db_read_workers=1)
    db = app.state.db
    started = threading.Event()

    def long_read(conn: Any) -> None:
        started.set()
        spin(conn.connection.dbapi_connection, 20.0)

    call = asyncio.create_task(db.read("long_read", long_read))
    await wait_until(started.is_set, "the long read started")
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert db.readers.wait_idle(timeout_s=5.0), "the statement ran on after its caller left"


@pytest.mark.parametrize("how", ["deadline", "caller-cancelled"])
async def test_a_cancelled_checkpoint_leaves_nothing_behind_so_a_clean_close_removes_the_wal(
    make_app: Callable[..., FastAPI], client_for: Callable[[FastAPI], httpx.AsyncClient],
    db_path: Any, monkeypatch: pytest.MonkeyPatch, how: str,
) -> None:
    """Shutdown cancels a checkpoint in flight (the lifespan cancels its loop). The interrupt
    must not stay on the maintenance connection: closed with the flag still up, that last
    connection's own checkpoint stops as interrupted and the -wal file survives a clean stop
    (the durability suite's "WAL outlived a clean stop" flake)."""
    app = make_app(db_deadline_s=1.0)
    client = client_for(app)
    db = app.state.db
    assert (await client.post("/users/", json=new_user("in-the-wal"))).status_code == 201
    wal = db_path.with_name(db_path.name + "-wal")
    assert wal.exists()
    started = threading.Event()

    def slow_checkpoint(dbapi_conn: Any) -> Any:
        started.set()
        spin(dbapi_conn, 20.0)

    monkeypatch.setattr(db.backend, "checkpoint", slow_checkpoint)
    if how == "deadline":
        with pytest.raises(DeadlineExceeded):
            await db.checkpoint()
    else:
        call = asyncio.create_task(db.checkpoint())
        await wait_until(started.is_set, "the checkpoint started")
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
    assert db.maintenance.wait_idle(timeout_s=5.0), "the checkpoint was not interrupted"
    db.close()
    assert not wal.exists(), "the WAL outlived a clean close after a cancelled checkpoint"


async def test_a_cancel_that_lands_just_before_a_statement_starts_still_stops_it(
    make_app: Callable[..., FastAPI], client_for: Callable[[FastAPI], httpx.AsyncClient],
) -> None:
    """The caller goes away after the service's before-statement check let a statement
    through, but before SQLite started it: the interrupt finds no statement running (a
    no-op, c3ref/interrupt.html), and SQLite would clear its flag when the statement starts.
    The long statement must stop anyway, not run its 20 s."""
    app = make_app(db_deadline_s=30.0, db_read_workers=1)
    client = client_for(app)
    db = app.state.db
    created = await client.post("/users/", json=new_user("reader"))
    passed_the_check, go = threading.Event(), threading.Event()

    def hold(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        # Registered after the service's own check: the statement has been let through.
        if statement.lstrip().upper().startswith("SELECT"):
            passed_the_check.set()
            go.wait(WAIT_S)

    event.listen(db.reader_engine, "before_cursor_execute", hold)
    try:
        with SlowStatements(db.reader_engine, seconds=20.0, match=r"^SELECT") as slow:
            read = asyncio.create_task(client.get(f"/users/{created.json()['id']}"))
            await wait_until(passed_the_check.is_set, "the read passed the statement check")
            read.cancel()
            await asyncio.gather(read, return_exceptions=True)
            db.interrupter.submit(lambda: None).result(WAIT_S)  # the interrupt has been sent
            go.set()  # now the long statement starts
            assert db.readers.wait_idle(timeout_s=5.0), "the statement ran on after its cancel"
        assert slow.interrupted == 1
    finally:
        go.set()
        event.remove(db.reader_engine, "before_cursor_execute", hold)


async def test_a_cancelled_attempt_keeps_its_connection_and_the_next_call_runs_on_it(
    make_app: Callable[..., FastAPI], client_for: Callable[[FastAPI], httpx.AsyncClient],
) -> None:
    """Clearing the interrupt (one trivial statement) keeps a healthy connection: a burst of
    timeouts must not turn into a burst of reconnects (each one's set-up pragmas can wait on
    a lock, and each costs an open() of the database and its -wal and -shm files)."""
    app = make_app(db_deadline_s=0.5, db_read_workers=1)
    client = client_for(app)
    db = app.state.db
    user_id = (await client.post("/users/", json=new_user("kept"))).json()["id"]
    connects: list[object] = []
    event.listen(db.reader_engine, "connect", lambda conn, _record: connects.append(conn))
    with SlowStatements(db.reader_engine, seconds=20.0, match=r"^SELECT") as slow:
        assert (await client.get(f"/users/{user_id}")).status_code == 504
        assert db.readers.wait_idle(timeout_s=5.0)
    assert slow.interrupted == 1
    assert (await client.get(f"/users/{user_id}")).status_code == 200
    assert connects == [], "the cancelled attempt's connection was thrown away"
