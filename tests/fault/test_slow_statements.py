"""A statement runs past the deadline: 504 at the deadline, the statement is interrupted, the
connection goes back to the pool usable, the next request succeeds."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event
from sqlite_faults.inspect_db import query_url
from sqlite_faults.observe import MetricsSnapshot
from sqlite_faults.slow import SlowStatements, StallAfterStatement

LATE_MARGIN_S = 0.3


async def test_slow_read_gets_504_at_the_deadline_and_is_interrupted(
    make_app: Callable[..., FastAPI], client_for: Callable[[FastAPI], httpx.AsyncClient],
) -> None:
    deadline_s = 1.0  # room for the set-up requests on a loaded machine
    app = make_app(db_deadline_s=deadline_s, db_read_workers=1)
    client = client_for(app)
    created = await client.post("/users/", json={"name": "slow", "password": "long enough"})
    user_id = created.json()["id"]
    assert (await client.get(f"/users/{user_id}")).status_code == 200

    with SlowStatements(app.state.db.reader_engine, seconds=5.0, match=r"^SELECT") as slow:
        started = time.monotonic()
        response = await client.get(f"/users/{user_id}")
        elapsed = time.monotonic() - started
        assert response.status_code == 504, response.text
        assert response.json()["error"]["code"] == "deadline_exceeded"
        assert deadline_s * 0.9 <= elapsed <= deadline_s + LATE_MARGIN_S
        # Interrupted: the worker is free at once, not after the statement's 5 s.
        assert app.state.db.readers.wait_idle(timeout_s=0.3)
    assert (slow.started, slow.interrupted) == (1, 1)

    # The same (single) pooled connection serves the next request, cleanly.
    response = await client.get(f"/users/{user_id}")
    assert response.status_code == 200, response.text
    metrics = MetricsSnapshot((await client.get("/metrics")).text)
    assert metrics.value("db_timeouts_total", operation="get_user") == 1
    assert metrics.value("db_inflight") == 0


async def test_slow_write_is_interrupted_and_rolled_back(
    make_app: Callable[..., FastAPI], client_for: Callable[[FastAPI], httpx.AsyncClient],
) -> None:
    deadline_s = 1.0  # the create reaches its INSERT well before it, even on a loaded machine
    app = make_app(db_deadline_s=deadline_s)
    client = client_for(app)

    with SlowStatements(app.state.db.writer_engine, seconds=10.0, match=r"^INSERT") as slow:
        response = await client.post("/users/", json={"name": "late", "password": "long enough"})
        assert response.status_code == 504, response.text
        assert app.state.db.writer.wait_idle(timeout_s=3.0)  # not the statement's 10 s
    assert slow.interrupted == 1

    # Nothing of the interrupted create survived; the writer connection works.
    response = await client.post("/users/", json={"name": "late", "password": "long enough"})
    assert response.status_code == 201, response.text
    assert (await client.get(f"/users/{response.json()['id']}")).json()["name"] == "late"


async def test_a_write_stalled_past_its_deadline_before_commit_is_not_committed(
    make_app: Callable[..., FastAPI], client_for: Callable[[FastAPI], httpx.AsyncClient],
    database_url: str,
) -> None:
    """The worker stalls (outside SQLite, where no interrupt reaches) after the create's last
    statement. The client gets its 504 at the deadline; the transaction must then roll back
    rather than commit behind the 504."""
    deadline_s = 1.0  # the create reaches its last statement well before it
    app = make_app(db_deadline_s=deadline_s)
    client = client_for(app)
    answered = threading.Event()

    with StallAfterStatement(app.state.db.writer_engine, 30.0,
                             match=r"^INSERT INTO idempotency_keys", until=answered) as stall:
        response = await client.post(
            "/users/", json={"name": "stalled", "password": "long enough"},
            headers={"Idempotency-Key": "stall-1"},
        )
        answered.set()  # the stall ends once the client has its answer
        assert response.status_code == 504, response.text
        assert app.state.db.writer.wait_idle(timeout_s=5.0)
    assert stall.stalls == 1
    assert query_url(database_url, "SELECT count(*) FROM users") == [(0,)]


async def test_a_slow_cancel_delays_neither_the_504_nor_the_event_loop(
    make_app: Callable[..., FastAPI], client_for: Callable[[FastAPI], httpx.AsyncClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A PostgreSQL cancel is a network round trip; on a slow network it takes a while. It is
    sent from the interrupter thread, so the 504 still comes at the deadline."""
    deadline_s, cancel_s = 1.0, 3.0
    app = make_app(db_deadline_s=deadline_s, db_read_workers=1)
    client = client_for(app)
    db = app.state.db
    created = await client.post("/users/", json={"name": "slow", "password": "long enough"})
    interrupt = db.backend.interrupt

    def slow_interrupt(dbapi_conn: Any) -> None:
        time.sleep(cancel_s)  # the fault: the cancel request crawls to the server
        interrupt(dbapi_conn)

    monkeypatch.setattr(db.backend, "interrupt", slow_interrupt)
    with SlowStatements(db.reader_engine, seconds=5.0, match=r"^SELECT"):
        started = time.monotonic()
        response = await client.get(f"/users/{created.json()['id']}")
        elapsed = time.monotonic() - started
        assert response.status_code == 504, response.text
        assert elapsed < deadline_s + cancel_s / 2  # not deadline + cancel
        assert db.readers.wait_idle(timeout_s=10.0)


@pytest.mark.postgres_only
async def test_a_connection_that_was_sent_a_cancel_is_not_reused(
    make_app: Callable[..., FastAPI], client_for: Callable[[FastAPI], httpx.AsyncClient],
) -> None:
    """A cancel travels on its own connection and may reach the server after the attempt
    ended, stopping whatever the connection runs next: that connection is discarded."""
    app = make_app(db_deadline_s=1.0, db_read_workers=1)
    client = client_for(app)
    db = app.state.db
    created = await client.post("/users/", json={"name": "slow", "password": "long enough"})
    connects: list[int] = []
    event.listen(db.reader_engine, "connect", lambda *_: connects.append(1))
    with SlowStatements(db.reader_engine, seconds=5.0, match=r"^SELECT"):
        response = await client.get(f"/users/{created.json()['id']}")
        assert response.status_code == 504, response.text
        assert db.readers.wait_idle(timeout_s=5.0)
    assert connects == []
    assert (await client.get(f"/users/{created.json()['id']}")).status_code == 200
    assert connects == [1], "the cancelled connection was reused"


async def test_a_write_whose_commit_began_before_its_deadline_is_answered_by_its_outcome(
    make_app: Callable[..., FastAPI], client_for: Callable[[FastAPI], httpx.AsyncClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The COMMIT starts inside the deadline, and the worker is held after it, past the
    # deadline, before it can hand the result back (a busy machine). Answering 504 at the
    # deadline told the client "not done" about a write that had committed; the commit point
    # (CallHandle.begin_commit) makes the client wait for the outcome instead.
    deadline_s = 1.0
    app = make_app(db_deadline_s=deadline_s)
    client = client_for(app)
    assert (await client.get("/readyz")).status_code == 200
    dialect = app.state.db.writer_engine.dialect
    real_commit = dialect.do_commit
    committed = threading.Event()

    def commit_then_stall(dbapi_connection: Any) -> None:
        real_commit(dbapi_connection)
        if not committed.is_set():
            committed.set()
            time.sleep(deadline_s + 0.3)  # committed; the answer is not back yet

    monkeypatch.setattr(dialect, "do_commit", commit_then_stall)
    started = time.monotonic()
    response = await client.post("/users/", json={"name": "committed-late",
                                                  "password": "long enough"})
    elapsed = time.monotonic() - started
    assert committed.is_set()
    rows = query_url(app.state.settings.database_url,
                     "SELECT count(*) FROM users WHERE name = 'committed-late'")
    assert rows == [(1,)]
    assert response.status_code == 201, (response.status_code, response.text)
    assert elapsed >= deadline_s
