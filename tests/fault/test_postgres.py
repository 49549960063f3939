"""PostgreSQL-only claims: past its deadline a query is cancelled on the server, not merely
abandoned by the client; concurrent creates with one Idempotency-Key make one user."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from sqlalchemy import event
from sqlite_faults.inspect_db import libpq_url
from sqlite_faults.observe import MetricsSnapshot, wait_until
from sqlite_faults.slow import SlowStatements

pytestmark = pytest.mark.postgres_only

RUNNING_SLEEPS = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
    "AND state = 'active' AND query LIKE 'SELECT pg_sleep%'"
)


async def test_a_query_past_its_deadline_is_cancelled_on_the_server(
    make_app: Callable[..., FastAPI], client_for: Callable[[FastAPI], httpx.AsyncClient],
    db_rows: Callable[..., list[tuple[Any, ...]]],
) -> None:
    deadline_s = 1.0  # room for the set-up request on a loaded machine
    app = make_app(db_deadline_s=deadline_s)
    client = client_for(app)
    user = (await client.post("/users/", json={"name": "pg", "password": "long enough"})).json()

    with SlowStatements(app.state.db.reader_engine, seconds=5.0, match="FROM users") as slow:
        started = time.monotonic()
        response = await client.get(f"/users/{user['id']}")
        assert response.status_code == 504, response.text
        assert time.monotonic() - started < deadline_s + 0.5  # not the 5 s sleep
        # The server stops the query at once: the 5 s sleep does not run on.
        assert app.state.db.readers.wait_idle(timeout_s=0.5)
        assert db_rows(RUNNING_SLEEPS) == [(0,)]
    assert slow.interrupted == 1


@pytest.mark.parametrize("stuck", ["slow-read", "lock-wait"])
async def test_a_query_whose_cancel_is_lost_still_ends_at_its_deadline(
    make_app: Callable[..., FastAPI], client_for: Callable[[FastAPI], httpx.AsyncClient],
    db_rows: Callable[..., list[tuple[Any, ...]]], database_url: str,
    monkeypatch: pytest.MonkeyPatch, stuck: str,
) -> None:
    """The client-side cancel is a separate connection to the server, and it can be lost (a
    full backlog, a partition between the service and the server). The attempt's own
    statement_timeout and lock_timeout, set from the same deadline, end the query on the
    server anyway: the worker is free again at once, not when the 5 s sleep or the other
    session's lock ends."""
    app = make_app(db_deadline_s=1.0)
    client = client_for(app)
    user = (await client.post("/users/", json={"name": "pg", "password": "long enough"})).json()
    monkeypatch.setattr(app.state.db.backend, "interrupt", lambda dbapi_conn: None)
    with contextlib.ExitStack() as stack:
        if stuck == "slow-read":
            stack.enter_context(SlowStatements(app.state.db.reader_engine, seconds=5.0,
                                               match="FROM users"))
            request, lane = client.get(f"/users/{user['id']}"), app.state.db.readers
        else:
            holder = stack.enter_context(psycopg.connect(libpq_url(database_url)))
            holder.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")  # held until closed
            request = client.post("/users/", json={"name": "waits", "password": "long enough"})
            lane = app.state.db.writer
        response = await request
        assert response.status_code == 504, response.text
        # With the cancel lost, only the server's own timeouts can free the worker this soon.
        assert lane.wait_idle(timeout_s=2.0)
        assert db_rows(RUNNING_SLEEPS) == [(0,)]


async def test_concurrent_creates_with_one_key_make_one_user(
    make_app: Callable[..., FastAPI], client_for: Callable[[FastAPI], httpx.AsyncClient],
    db_rows: Callable[..., list[tuple[Any, ...]]],
) -> None:
    app = make_app(db_read_workers=4)
    client = client_for(app)
    responses = await asyncio.gather(*(
        client.post("/users/", json={"name": "raced", "password": "long enough"},
                    headers={"Idempotency-Key": "one-key"})
        for _ in range(8)
    ))
    assert {r.status_code for r in responses} == {201}, [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    assert db_rows("SELECT count(*) FROM users WHERE name = 'raced'") == [(1,)]


async def test_concurrent_keyed_creates_of_different_users_never_conflict(
    make_app: Callable[..., FastAPI], client_for: Callable[[FastAPI], httpx.AsyncClient],
) -> None:
    """Writers run at READ COMMITTED and let unique indexes settle races: creates of
    different users never fail each other, not even once (no retry is needed). Under
    SERIALIZABLE the key lookups' predicate locks make them fail with 40001."""
    app = make_app(db_read_workers=8, retry_max_attempts=1)
    client = client_for(app)
    for round_ in range(3):
        responses = await asyncio.gather(*(
            client.post("/users/", json={"name": f"u{round_}-{i}", "password": "long enough"},
                        headers={"Idempotency-Key": f"k{round_}-{i}"})
            for i in range(16)
        ))
        assert [r.status_code for r in responses] == [201] * 16, [r.text for r in responses]
    metrics = MetricsSnapshot((await client.get("/metrics")).text)
    assert metrics.value("db_transient_errors_total") == 0


async def test_a_connection_lost_mid_call_is_retried_on_a_new_one(
    make_app: Callable[..., FastAPI], client_for: Callable[[FastAPI], httpx.AsyncClient],
    db_rows: Callable[..., list[tuple[Any, ...]]],
) -> None:
    """The server ends the reader's session mid-statement (pg_terminate_backend: what a
    failover or an operator does). SQLAlchemy invalidates the connection; the attempt must
    leave it untouched (touching an invalidated Connection reconnects it on the spot, inside
    the failed attempt) and the retry gets a fresh one: the client sees a 200."""
    # One reader: its retry must run on the same worker, whose connection is the lost one.
    app = make_app(db_deadline_s=10.0, retry_backoff_initial_s=0.001, retry_backoff_max_s=0.002,
                   db_read_workers=1)
    client = client_for(app)
    user = (await client.post("/users/", json={"name": "pg", "password": "long enough"})).json()
    engine = app.state.db.reader_engine
    slept = threading.Event()
    connects: list[object] = []

    def sleep_once(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "FROM users" in statement and not slept.is_set():
            slept.set()
            with conn.connection.dbapi_connection.cursor() as cursor:
                cursor.execute("SELECT pg_sleep(30)")

    event.listen(engine, "before_cursor_execute", sleep_once)
    try:
        read = asyncio.create_task(client.get(f"/users/{user['id']}"))
        await wait_until(lambda: slept.is_set() and db_rows(RUNNING_SLEEPS) == [(1,)],
                         "the read is sleeping on the server")
        event.listen(engine, "connect", lambda conn, _record: connects.append(conn))
        assert db_rows("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE "
                       "query LIKE 'SELECT pg_sleep%'") == [(1,)]
        response = await read
    finally:
        event.remove(engine, "before_cursor_execute", sleep_once)
    assert response.status_code == 200, response.text
    assert len(connects) == 1, "the lost connection was reconnected inside the failed attempt"
    metrics = MetricsSnapshot((await client.get("/metrics")).text)
    assert metrics.value("db_retries_total", operation="get_user", outcome="ok") == 1


async def test_two_creates_that_both_miss_the_key_make_one_user(
    make_app: Callable[..., FastAPI], client_for: Callable[[FastAPI], httpx.AsyncClient],
    db_rows: Callable[..., list[tuple[Any, ...]]],
) -> None:
    """The race made certain: both creates' key lookups run (and find nothing) before either
    inserts, held at a barrier. The one that loses at the unique index must look the key up
    again and replay the winner (201, same user), not answer 409."""
    app = make_app(db_read_workers=2)
    client = client_for(app)
    both_looked = threading.Barrier(2, timeout=10.0)
    lookups = 0
    lock = threading.Lock()

    def after(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        nonlocal lookups
        if "JOIN idempotency_keys" not in statement:
            return
        with lock:
            lookups += 1
            first_two = lookups <= 2
        if first_two:
            both_looked.wait()

    engine = app.state.db.writer_engine
    event.listen(engine, "after_cursor_execute", after)
    try:
        responses = await asyncio.gather(*(
            client.post("/users/", json={"name": "raced", "password": "long enough"},
                        headers={"Idempotency-Key": "one-key"})
            for _ in range(2)))
    finally:
        event.remove(engine, "after_cursor_execute", after)
    assert [r.status_code for r in responses] == [201, 201], [r.text for r in responses]
    assert responses[0].json() == responses[1].json()
    assert sorted(r.headers.get("Idempotent-Replayed", "") for r in responses) == ["", "true"]
    assert db_rows("SELECT count(*) FROM users WHERE name = 'raced'") == [(1,)]
    assert lookups == 3  # two that missed, and the loser's second look
