"""Injected driver errors: what is retried, how often, what never is, and what is left behind."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import httpx
import pytest
from fastapi import FastAPI
from sqlite_faults.inspect_db import query_url
from sqlite_faults.observe import MetricsSnapshot
from sqlite_faults.slow import SlowStatements
from sqlite_faults.sql_errors import InjectSqlError

MAX_ATTEMPTS = 4
INSERT_USER = r"^INSERT INTO users"


@pytest.fixture
def app(make_app: Callable[..., FastAPI]) -> FastAPI:
    # Tiny backoff: retries are counted, not timed, here.
    return make_app(retry_max_attempts=MAX_ATTEMPTS, retry_backoff_initial_s=0.001,
                    retry_backoff_max_s=0.002)


def user_rows(database_url: str) -> list[tuple[str]]:
    return query_url(database_url, "SELECT name FROM users ORDER BY id")


async def metrics(client: httpx.AsyncClient) -> MetricsSnapshot:
    return MetricsSnapshot((await client.get("/metrics")).text)


async def create(client: httpx.AsyncClient, name: str, key: str | None = None) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key else {}
    return await client.post("/users/", json={"name": name, "password": "long enough"},
                             headers=headers)


@pytest.mark.parametrize("failures", [1, MAX_ATTEMPTS - 1])
@pytest.mark.parametrize("kind", ["busy", "busy_snapshot", "locked"])
async def test_transient_errors_below_the_budget_are_retried_exactly_that_often(
    app: FastAPI, client: httpx.AsyncClient, database_url: str, failures: int, kind: str
) -> None:
    assert (await create(client, "steady")).status_code == 201
    with InjectSqlError(app.state.db.writer_engine, kind, match=INSERT_USER,
                        times=failures) as fault:
        response = await create(client, "retried")
    assert response.status_code == 201, response.text
    assert fault.injected == failures
    m = await metrics(client)
    assert m.value("db_retries_total", operation="create_user") == failures
    assert m.value("db_transient_errors_total", operation="create_user") == failures
    # SQLITE_BUSY is a busy wait that ended without the lock; SQLITE_LOCKED is not, and
    # neither are PostgreSQL's serialization failures and deadlocks that stand in for them.
    busy_wait = kind.startswith("busy") and database_url.startswith("sqlite")
    lock_timeouts = failures if busy_wait else 0
    assert m.value("db_lock_timeouts_total", operation="create_user") == lock_timeouts
    assert user_rows(database_url) == [("steady",), ("retried",)]


async def test_transient_errors_past_the_budget_are_503_and_write_nothing(
    app: FastAPI, client: httpx.AsyncClient, database_url: str
) -> None:
    with InjectSqlError(app.state.db.writer_engine, "busy", match=INSERT_USER) as fault:
        response = await create(client, "doomed")
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "storage_busy"
    assert response.headers["Retry-After"] == "1"
    assert fault.injected == MAX_ATTEMPTS
    m = await metrics(client)
    assert m.value("db_retries_total", operation="create_user", outcome="busy") == MAX_ATTEMPTS - 1
    assert m.value("db_transient_errors_total", operation="create_user") == MAX_ATTEMPTS
    assert user_rows(database_url) == []


@pytest.mark.parametrize(
    ("kind", "status", "code"),
    [
        ("unique", 409, "name_taken"),
        ("no_such_table", 500, "internal_error"),
        ("programming", 500, "internal_error"),
        ("disk_full", 503, "storage_unavailable"),
        ("io_error", 503, "storage_unavailable"),
    ],
)
async def test_non_transient_errors_are_never_retried(
    app: FastAPI, client: httpx.AsyncClient, database_url: str, kind: str, status: int, code: str
) -> None:
    with InjectSqlError(app.state.db.writer_engine, kind, match=INSERT_USER) as fault:
        response = await create(client, "once-only")
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert fault.seen == 1  # the statement was tried once: no retry
    assert (await metrics(client)).value("db_retries_total") == 0
    assert user_rows(database_url) == []
    # The writer connection is clean afterwards.
    assert (await create(client, "next")).status_code == 201


@pytest.mark.parametrize(
    ("kind", "status", "code"),
    [("unique", 409, "name_taken"), ("no_such_table", 500, "internal_error")],
)
async def test_a_non_transient_error_on_a_retry_is_not_retried_again(
    app: FastAPI, client: httpx.AsyncClient, database_url: str, kind: str, status: int, code: str
) -> None:
    """The first attempt meets a lock (retried), the second a defect or a conflict: that one
    ends the call, however many attempts the budget has left."""
    with InjectSqlError(app.state.db.writer_engine, "busy", match=INSERT_USER, times=1), \
            InjectSqlError(app.state.db.writer_engine, kind, match=INSERT_USER) as fault:
        response = await create(client, "busy-then-broken")
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert fault.injected == 1  # the second attempt's error, and no third attempt
    assert (await metrics(client)).value("db_retries_total") == 1
    assert user_rows(database_url) == []


async def test_reads_are_retried_too(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    user_id = (await create(client, "readable")).json()["id"]
    with InjectSqlError(app.state.db.reader_engine, "busy", match=r"^SELECT", times=2):
        response = await client.get(f"/users/{user_id}")
    assert response.status_code == 200, response.text
    assert (await metrics(client)).value("db_retries_total", operation="get_user") == 2


@pytest.mark.parametrize("operation", ["read", "write"])
async def test_a_retried_attempt_runs_under_the_request_s_deadline_not_a_new_one(
    make_app: Callable[..., FastAPI], client_for: Callable[[FastAPI], httpx.AsyncClient],
    operation: str,
) -> None:
    """Each attempt's statement takes three quarters of the budget, and the first one then
    fails transiently. The retry has a quarter of the budget left and must be stopped at the
    request's deadline (504); an attempt given a budget of its own would finish (200 or 201)
    a whole budget after the request came."""
    deadline_s = 2.0
    app = make_app(db_deadline_s=deadline_s, retry_max_attempts=MAX_ATTEMPTS,
                   retry_backoff_initial_s=0.001, retry_backoff_max_s=0.002)
    client = client_for(app)
    user_id = (await create(client, "readable")).json()["id"]
    db = app.state.db
    engine, match = ((db.reader_engine, r"FROM users") if operation == "read"
                     else (db.writer_engine, INSERT_USER))
    # Listeners run in the order they were added: each statement sleeps, then the first fails.
    with SlowStatements(engine, seconds=deadline_s * 0.75, match=match) as slow, \
            InjectSqlError(engine, "busy", match=match, times=1) as fault:
        started = time.monotonic()
        response = await (client.get(f"/users/{user_id}") if operation == "read"
                          else create(client, "retried"))
        took = time.monotonic() - started
    assert response.status_code == 504, response.text
    assert fault.injected == 1 and slow.started == 2
    assert took < deadline_s + 1.0  # at the request's deadline, not the retry's own


async def test_transient_error_at_commit_is_rolled_back_and_retried_to_one_row(
    app: FastAPI, client: httpx.AsyncClient, database_url: str
) -> None:
    with InjectSqlError(app.state.db.writer_engine, "busy", at="commit", times=1) as fault:
        response = await create(client, "committed-once", key="commit-key")
    assert response.status_code == 201, response.text
    assert fault.injected == 1
    assert user_rows(database_url) == [("committed-once",)]


async def test_failed_commit_then_client_retry_with_the_key_gives_one_row(
    app: FastAPI, client: httpx.AsyncClient, database_url: str
) -> None:
    with InjectSqlError(app.state.db.writer_engine, "io_error", at="commit", times=1):
        failed = await create(client, "ledger", key="key-after-failure")
    assert failed.status_code == 503, failed.text
    assert user_rows(database_url) == []  # the INSERT ran, the COMMIT failed: rolled back

    retried = await create(client, "ledger", key="key-after-failure")
    again = await create(client, "ledger", key="key-after-failure")
    assert retried.status_code == again.status_code == 201
    assert retried.json()["id"] == again.json()["id"]
    assert user_rows(database_url) == [("ledger",)]


async def test_random_transient_faults_keep_rows_and_metrics_consistent(
    app: FastAPI, client: httpx.AsyncClient, database_url: str, rng: random.Random
) -> None:
    fault_rng = random.Random(rng.random())
    with InjectSqlError(app.state.db.writer_engine, "busy", match=INSERT_USER,
                        probability=0.4, rng=fault_rng) as fault:
        statuses = [(await create(client, f"user-{i}")).status_code for i in range(40)]
    assert set(statuses) <= {201, 503}, statuses
    created = statuses.count(201)
    exhausted = statuses.count(503)
    assert len(user_rows(database_url)) == created
    # Every injected error was either retried or ended a call that exhausted its budget.
    m = await metrics(client)
    assert m.value("db_retries_total", operation="create_user") == fault.injected - exhausted
    assert m.value("db_calls_total", operation="create_user", outcome="ok") == created
    assert m.value("db_calls_total", operation="create_user", outcome="busy") == exhausted


async def test_retries_stop_while_most_attempts_fail_and_resume_after(
    make_app: Callable[..., FastAPI], client_for: Callable[[FastAPI], httpx.AsyncClient],
) -> None:
    # A small budget: two failed attempts take it to half, and retries stop.
    app = make_app(retry_budget_tokens=4, retry_budget_ratio=0.5)
    client = client_for(app)
    with InjectSqlError(app.state.db.writer_engine, "busy", match=INSERT_USER) as fault:
        first = await create(client, "spends-the-budget")
        second = await create(client, "finds-it-spent")
    assert first.status_code == second.status_code == 503
    assert fault.injected == 3  # two for the first (then the budget stopped it), one for the next
    m = await metrics(client)
    assert m.value("db_retries_denied_total", operation="create_user") == 2
    for i in range(8):  # successes give the tokens back
        assert (await create(client, f"ok-{i}")).status_code == 201
    with InjectSqlError(app.state.db.writer_engine, "busy", match=INSERT_USER, times=1):
        assert (await create(client, "retried-again")).status_code == 201
