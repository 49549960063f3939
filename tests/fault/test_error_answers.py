"""What a client and an operator are told when the database fails: each 5xx the service sends,
provoked by a real fault, with its code, its fixed message (README's error table), its
Retry-After, and one log line naming the error's class and the driver's result code.

The messages are part of the API: clients show them and operators grep for them; none of them
carries anything from the request or the driver.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlite_faults.slow import SlowStatements
from sqlite_faults.sql_errors import InjectSqlError

WAIT_S = 10.0
USER = {"name": "ada", "password": "correct horse"}
RETRY_AFTER_S = 7


@pytest.fixture
def app(make_app: Callable[..., FastAPI]) -> FastAPI:
    return make_app(retry_max_attempts=2, retry_backoff_initial_s=0.001,
                    retry_backoff_max_s=0.002, retry_after_s=RETRY_AFTER_S)


def logged_5xx(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "app.http_errors" and " -> 5" in r.getMessage()]


@pytest.mark.parametrize(
    ("kind", "status", "code", "message", "error_class", "sqlite_name"),
    [("busy", 503, "storage_busy", "transient database errors outlasted the retry budget",
      "RetriesExhausted", "SQLITE_BUSY"),
     ("io_error", 503, "storage_unavailable", "the database cannot be used now",
      "StorageUnavailable", "SQLITE_IOERR"),
     ("programming", 500, "internal_error", "internal error", "StorageBug",
      "ProgrammingError")],
)
async def test_a_driver_error_gets_its_code_message_and_one_log_line(
    app: FastAPI, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture,
    kind: str, status: int, code: str, message: str, error_class: str, sqlite_name: str,
) -> None:
    caplog.set_level(logging.INFO)
    with InjectSqlError(app.state.db.writer_engine, kind, match=r"^INSERT INTO users"):
        response = await client.post("/users/", json=USER)
    assert response.status_code == status, response.text
    assert response.json() == {"error": {"code": code, "message": message}}
    retry_after = response.headers.get("Retry-After")
    assert retry_after == (str(RETRY_AFTER_S) if status == 503 else None)
    (line,) = logged_5xx(caplog)
    assert line.startswith(f"POST /users/ -> {status} {code} ({error_class}, ")
    if app.state.db.backend.name == "sqlite":  # PostgreSQL's log names its SQLSTATE instead
        assert line.endswith(f", {sqlite_name})"), line


@pytest.mark.sqlite_only("a statement made slow inside SQLite")
async def test_a_deadline_answer_says_so_without_retry_after(
    make_app: Callable[..., FastAPI], client_for: Callable[[FastAPI], httpx.AsyncClient],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    app = make_app(db_deadline_s=0.5)
    client = client_for(app)
    with SlowStatements(app.state.db.reader_engine, seconds=30.0, match=r"^SELECT"):
        response = await client.get("/users/1")
        assert app.state.db.readers.wait_idle(timeout_s=WAIT_S)
    assert response.status_code == 504, response.text
    assert response.json() == {"error": {"code": "deadline_exceeded",
                                         "message": "the DB call outlived its deadline"}}
    assert "Retry-After" not in response.headers  # retry with the key, not after a pause
    (line,) = logged_5xx(caplog)
    assert line.startswith("GET /users/1 -> 504 deadline_exceeded (DeadlineExceeded, ")


async def test_a_full_queue_is_refused_at_once_naming_the_lane(
    make_app: Callable[..., FastAPI], client_for: Callable[[FastAPI], httpx.AsyncClient],
) -> None:
    app = make_app(db_read_workers=1, db_queue_limit=0, retry_after_s=RETRY_AFTER_S)
    client = client_for(app)
    release = threading.Event()
    started = threading.Event()

    def held(_session: Any) -> None:
        started.set()
        assert release.wait(WAIT_S)

    holder = asyncio.ensure_future(app.state.db.read("held", held))
    try:
        assert await asyncio.to_thread(started.wait, WAIT_S)
        response = await client.get("/users/1")
    finally:
        release.set()
    await holder
    assert response.status_code == 503, response.text
    assert response.json() == {"error": {
        "code": "overloaded", "message": "the reader queue is full (1 calls pending)"}}
    assert response.headers["Retry-After"] == str(RETRY_AFTER_S)


@pytest.mark.sqlite_only("a -wal path SQLite cannot open")
async def test_a_new_connection_that_cannot_open_the_database_gets_503_not_500(
    app: FastAPI, client: httpx.AsyncClient, db_path: Path,
) -> None:
    """A connection's set-up fails with a real SQLITE_CANTOPEN: the -wal path is a directory
    (as after a botched restore). The error comes from the pool opening a connection, before
    any statement of the call: it must be classified like a statement's, not escape as a 500."""
    user_id = (await client.post("/users/", json=USER)).json()["id"]
    app.state.db.close_connections()  # the last connection to close removes the -wal file
    wal = db_path.with_name(db_path.name + "-wal")
    assert not wal.exists()
    wal.mkdir()
    try:
        response = await client.get(f"/users/{user_id}")
    finally:
        wal.rmdir()
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "storage_unavailable"
    assert (await client.get(f"/users/{user_id}")).status_code == 200
