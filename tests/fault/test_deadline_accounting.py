"""Deadline accounting: the budget counts from the request's arrival, each deadline setting
acts where it is documented to act, and a call given up before it runs costs nothing.

Complements tests/fault/test_locked_database.py (whose arrival test slows the hash, which
runs after the deadline is computed): here the time goes before the handler runs at all.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event, text
from sqlite_faults.locks import LockHolder
from sqlite_faults.observe import wait_until
from sqlite_faults.slow import SlowStatements, StallAfterStatement

from app.errors import DeadlineExceeded
from app.resilience import Deadline

# Generous for a loaded 2-core machine; each test's contrast is several times wider.
LATE_MARGIN_S = 1.0
WAIT_S = 10.0


def new_user(name: str) -> dict[str, str]:
    return {"name": name, "password": "correct horse"}


async def test_time_before_the_handler_runs_is_inside_the_budget(
    make_app: Callable[..., FastAPI], client_for: Callable[[FastAPI], httpx.AsyncClient],
    db_rows: Callable[..., list[tuple[Any, ...]]],
) -> None:
    """A client sends its headers, then takes longer than the whole deadline to send the
    body. The request arrived when its headers did: by the time the handler can run, the
    budget is spent, so the create is a 504 and writes nothing (it would have been a 201
    with a deadline counted from the handler's start)."""
    deadline_s, upload_s = 0.3, 0.6
    app = make_app(db_deadline_s=deadline_s)
    client = client_for(app)

    async def slow_body() -> AsyncIterator[bytes]:
        await asyncio.sleep(upload_s)  # the fault: a slow upload
        yield json.dumps(new_user("slow-upload")).encode()

    response = await client.post("/users/", content=slow_body(),
                                 headers={"content-type": "application/json"})
    assert response.status_code == 504, response.text
    assert response.json()["error"]["code"] == "deadline_exceeded"
    assert db_rows("SELECT name FROM users") == []


async def test_readyz_answers_within_its_own_deadline_not_the_db_deadline(
    make_app: Callable[..., FastAPI], client_for: Callable[[FastAPI], httpx.AsyncClient],
) -> None:
    """READYZ_DEADLINE_S bounds /readyz and GET /; DB_DEADLINE_S bounds user calls."""
    ready_s, db_s = 0.2, 5.0
    app = make_app(readyz_deadline_s=ready_s, db_deadline_s=db_s, db_read_workers=1)
    client = client_for(app)
    with SlowStatements(app.state.db.reader_engine, seconds=10.0, match=r"^SELECT 1"):
        for path in ("/readyz", "/"):
            started = time.monotonic()
            response = await client.get(path)
            elapsed = time.monotonic() - started
            if path == "/readyz":
                assert response.status_code == 503, response.text
                assert response.json()["error"]["code"] == "not_ready"
                assert response.headers["Retry-After"] == "1"
            else:
                assert response.json()["database"] == "unavailable"
            assert elapsed < ready_s + LATE_MARGIN_S, f"{path} took {elapsed:.2f} s"
            assert app.state.db.readers.wait_idle(timeout_s=WAIT_S)


@pytest.mark.sqlite_only("one writer lane worker, so a second write queues")
async def test_a_call_whose_deadline_passed_in_the_queue_never_runs(
    make_app: Callable[..., FastAPI], database_url: str,
) -> None:
    """The event loop is blocked (the fault) while a queued call's deadline passes and the
    write ahead of it finishes: the worker reaches the call before the loop could cancel it,
    and must drop it on its own (deadline expired) before any statement of it runs."""
    app = make_app()
    db = app.state.db
    started: list[object] = []  # statements of the second write
    with LockHolder(database_url, "immediate", hold_s=0.5):
        first = asyncio.create_task(db.write("first", _insert("first"), Deadline.after(30)))
        await wait_until(lambda: db.writer.running == 1, "the first write is on the writer")
        # Workers hold their connections: no checkout to watch, so watch its statements.
        event.listen(db.writer_engine, "before_cursor_execute",
                     lambda _c, _cur, _sql, params, *_: started.append(params)
                     if "second" in str(params) else None)
        second = asyncio.create_task(db.write("second", _insert("second"), Deadline.after(0.1)))
        # A third write with time to spare, queued behind it: the two are taken together, so
        # the second is not stopped by its group's lock-wait bound alone.
        third = asyncio.create_task(db.write("third", _insert("third"), Deadline.after(30)))
        await wait_until(lambda: db.writer.queued == 2, "the second and third writes are queued")
        time.sleep(2.0)  # the fault: the loop blocked past the deadline and the lock's end
        await first
        with pytest.raises(DeadlineExceeded):
            await second
        await third
    assert db.writer.wait_idle(timeout_s=WAIT_S)
    assert started == []


@pytest.mark.sqlite_only("one writer lane worker")
async def test_a_cancelled_caller_s_work_stops_even_while_the_interrupter_is_busy(
    make_app: Callable[..., FastAPI], client_for: Callable[[FastAPI], httpx.AsyncClient],
    db_rows: Callable[..., list[tuple[Any, ...]]],
) -> None:
    """The event loop sets the cancel flag itself; only the interrupt waits for the
    interrupter thread. With that thread stuck (a PostgreSQL cancel that hangs, say), a
    create whose caller went away between its statements must still not go on to commit."""
    app = make_app(db_deadline_s=30.0)
    client = client_for(app)
    db = app.state.db
    stuck = threading.Event()
    db.interrupter.submit(lambda: stuck.wait(WAIT_S))
    try:
        with StallAfterStatement(db.writer_engine, seconds=0.5, match=r"^SELECT") as stall:
            create = asyncio.create_task(client.post(
                "/users/", json=new_user("abandoned"), headers={"Idempotency-Key": "k1"}))
            await wait_until(lambda: stall.stalls == 1, "the create stalled after its SELECT")
            create.cancel()
            await asyncio.gather(create, return_exceptions=True)
            assert db.writer.wait_idle(timeout_s=WAIT_S)
        assert db_rows("SELECT name FROM users") == []
    finally:
        stuck.set()


def _insert(name: str) -> Callable[[Any], None]:
    def work(session: Any) -> None:
        session.execute(text("INSERT INTO users (name, password_hash, created_at) "
                             "VALUES (:name, 'h', CURRENT_TIMESTAMP)"), {"name": name})

    return work
