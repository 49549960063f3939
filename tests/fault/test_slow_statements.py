"""A statement runs past the deadline: 504 at the deadline, the statement is interrupted, the
connection goes back to the pool usable, the next request succeeds."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
from fastapi import FastAPI

from faults.inspect_db import query_url
from faults.observe import MetricsSnapshot
from faults.slow import SlowStatements, StallAfterStatement

LATE_MARGIN_S = 0.3


async def test_slow_read_gets_504_at_the_deadline_and_is_interrupted(
    make_app: Callable[..., FastAPI], client_for: Callable[[FastAPI], httpx.AsyncClient],
) -> None:
    deadline_s = 0.2
    app = make_app(db_deadline_s=deadline_s, db_read_workers=1)
    client = client_for(app)
    created = await client.post("/users/", json={"name": "slow", "password": "long enough"})
    user_id = created.json()["id"]
    assert (await client.get(f"/users/{user_id}")).status_code == 200

    with SlowStatements(app.state.db.reader_engine, seconds=2.0, match=r"^SELECT") as slow:
        started = time.monotonic()
        response = await client.get(f"/users/{user_id}")
        elapsed = time.monotonic() - started
        assert response.status_code == 504, response.text
        assert response.json()["error"]["code"] == "deadline_exceeded"
        assert deadline_s * 0.9 <= elapsed <= deadline_s + LATE_MARGIN_S
        # Interrupted: the worker is free at once, not after the statement's 2 s.
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
    deadline_s = 0.2
    app = make_app(db_deadline_s=deadline_s)
    client = client_for(app)

    with SlowStatements(app.state.db.writer_engine, seconds=2.0, match=r"^INSERT") as slow:
        response = await client.post("/users/", json={"name": "late", "password": "long enough"})
        assert response.status_code == 504, response.text
        assert app.state.db.writer.wait_idle(timeout_s=0.3)
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
    deadline_s = 0.2
    app = make_app(db_deadline_s=deadline_s)
    client = client_for(app)

    with StallAfterStatement(app.state.db.writer_engine, 0.5,
                             match=r"^INSERT INTO idempotency_keys") as stall:
        response = await client.post(
            "/users/", json={"name": "stalled", "password": "long enough"},
            headers={"Idempotency-Key": "stall-1"},
        )
        assert response.status_code == 504, response.text
        assert app.state.db.writer.wait_idle(timeout_s=2.0)
    assert stall.stalls == 1
    assert query_url(database_url, "SELECT count(*) FROM users") == [(0,)]
