"""Every series an operator alerts on, by its labels, after calls whose outcome is known.

A dashboard or an alert names a series by its labels (`db_calls_total{operation="ping",
outcome="error"}`); a label spelled differently is a series nobody watches. Each test makes a
known call happen (a real fault where one is needed) and reads the series it must move, and
only that one.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlite_faults.observe import MetricsSnapshot, wait_until
from sqlite_faults.sql_errors import InjectSqlError, make_driver_error

from app.errors import StorageUnavailable

WAIT_S = 10.0
USER = {"name": "ada", "password": "correct horse"}


def scrape(app: FastAPI) -> MetricsSnapshot:
    return MetricsSnapshot(app.state.metrics.render().decode())


@pytest.fixture
def app(make_app: Callable[..., FastAPI]) -> FastAPI:
    return make_app(retry_max_attempts=3, retry_backoff_initial_s=0.001,
                    retry_backoff_max_s=0.002)


class Blocker:
    """Unit-of-work functions that hold their worker until released: the test sees the lane
    with a call running (and more queued) for as long as it likes, without timing."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self._started = threading.Semaphore(0)

    def work(self, _session_or_conn: Any) -> str:
        self._started.release()
        assert self.release.wait(WAIT_S), "never released"
        return "done"

    async def started(self) -> None:
        assert await asyncio.to_thread(self._started.acquire, True, WAIT_S), "work never started"


async def test_each_call_is_counted_once_under_its_operation_and_outcome(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    assert (await client.post("/users/", json=USER)).status_code == 201
    assert (await client.get("/users/1")).status_code == 200
    assert (await client.get("/users/999")).status_code == 404  # the read itself succeeded
    assert (await client.post("/users/", json=USER)).status_code == 409
    assert (await client.get("/readyz")).status_code == 200
    expected = {("create_user", "ok"): 1, ("get_user", "ok"): 2, ("create_user", "conflict"): 1,
                ("ping", "ok"): 1}
    if app.state.db.backend.supports_checkpoints:
        await app.state.db.checkpoint()
        expected["checkpoint", "ok"] = 1

    m = scrape(app)
    calls = {(s.labels["operation"], s.labels["outcome"]): s.value
             for s in m.samples if s.name == "db_calls_total"}
    assert calls == expected
    for (operation, outcome), count in expected.items():
        labels = {"operation": operation, "outcome": outcome}
        assert m.value("db_call_duration_seconds_count", **labels) == count
        assert m.value("db_call_duration_seconds_sum", **labels) > 0
    assert m.value("db_timeouts_total") == 0
    assert m.value("db_retries_total") == 0


@pytest.mark.sqlite_only("SQLite result codes as the error label")
@pytest.mark.parametrize(("kind", "error"), [("busy", "SQLITE_BUSY"),
                                              ("locked", "SQLITE_LOCKED")])
async def test_a_transient_error_is_counted_under_its_result_code(
    app: FastAPI, client: httpx.AsyncClient, kind: str, error: str
) -> None:
    with InjectSqlError(app.state.db.writer_engine, kind, match=r"^INSERT INTO users", times=1):
        assert (await client.post("/users/", json=USER)).status_code == 201
    m = scrape(app)
    assert m.value("db_transient_errors_total", operation="create_user", error=error) == 1
    assert m.value("db_transient_errors_total") == 1
    assert m.value("db_retries_total", operation="create_user", outcome="ok") == 1
    assert m.value("db_lock_timeouts_total", operation="create_user") == (kind == "busy")


async def test_retries_that_run_out_count_under_the_busy_outcome(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    with InjectSqlError(app.state.db.writer_engine, "busy", match=r"^INSERT INTO users"):
        assert (await client.post("/users/", json=USER)).status_code == 503
    m = scrape(app)
    assert m.value("db_calls_total", operation="create_user", outcome="busy") == 1
    assert m.value("db_retries_total", operation="create_user", outcome="busy") == 2  # 3 tries


async def test_a_defect_and_a_cancelled_call_count_under_the_error_outcome(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    with InjectSqlError(app.state.db.reader_engine, "programming", match=r"^SELECT"):
        assert (await client.get("/users/1")).status_code == 500
    blocker = Blocker()
    call = asyncio.ensure_future(app.state.db.read("blocked_read", blocker.work))
    await blocker.started()
    call.cancel()  # the caller went away (a disconnect, a shutdown)
    with pytest.raises(asyncio.CancelledError):
        await call
    blocker.release.set()
    m = scrape(app)
    assert m.value("db_calls_total", operation="get_user", outcome="error") == 1
    assert m.value("db_calls_total", operation="blocked_read", outcome="error") == 1
    assert m.value("db_call_duration_seconds_count", operation="blocked_read",
                   outcome="error") == 1


async def test_a_call_past_its_deadline_counts_as_a_timeout(
    make_app: Callable[..., FastAPI]
) -> None:
    app = make_app(db_deadline_s=0.5)
    blocker = Blocker()
    try:
        with pytest.raises(Exception, match="outlived its deadline"):
            await app.state.db.read("slow_read", blocker.work)
    finally:
        blocker.release.set()
    m = scrape(app)
    assert m.value("db_calls_total", operation="slow_read", outcome="timeout") == 1
    assert m.value("db_timeouts_total", operation="slow_read") == 1


@pytest.mark.sqlite_only("checkpoints are SQLite's")
async def test_a_driver_error_in_a_checkpoint_is_classified_and_counted(
    app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checkpoint's statements run on the raw driver connection, outside SQLAlchemy:
    their errors must still be classified (an I/O error: unavailable, not a defect)."""
    driver = app.state.db.backend.driver

    def failing_checkpoint(_dbapi_conn: Any) -> Any:
        raise make_driver_error(driver, "io_error")

    monkeypatch.setattr(app.state.db.backend, "checkpoint", failing_checkpoint)
    with pytest.raises(StorageUnavailable):
        await app.state.db.checkpoint()
    m = scrape(app)
    assert m.value("db_calls_total", operation="checkpoint", outcome="unavailable") == 1
    assert m.value("sqlite_checkpoint_age_seconds") == -1  # a failed one is not recorded


async def test_lane_gauges_name_the_lane_that_is_busy(
    app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = app.state.db
    writes, reads, checkpoints = Blocker(), Blocker(), Blocker()
    writers = db.writer.workers  # 1 on SQLite
    calls = [asyncio.ensure_future(db.write(f"w{i}", writes.work)) for i in range(writers)]
    calls.append(asyncio.ensure_future(db.read("r", reads.work)))
    try:
        for _ in range(writers):
            await writes.started()
        calls.append(asyncio.ensure_future(db.write("queued", writes.work)))
        await reads.started()
        await wait_until(lambda: db.writer.queued == 1, "the last write is queued")
        m = scrape(app)
        assert m.value("db_inflight", lane="writer") == writers
        assert m.value("db_queue_depth", lane="writer") == 1  # waits behind the running ones
        assert m.value("db_inflight", lane="reader") == 1
        assert m.value("db_queue_depth", lane="reader") == 0
        assert m.value("db_inflight", lane="maintenance") == 0
        if db.backend.supports_checkpoints:
            def held_checkpoint(conn: Any) -> SimpleNamespace:
                checkpoints.work(conn)
                return SimpleNamespace(lag_frames=0)

            monkeypatch.setattr(db.backend, "checkpoint", held_checkpoint)
            checkpoint = asyncio.ensure_future(db.checkpoint())
            await checkpoints.started()
            assert scrape(app).value("db_inflight", lane="maintenance") == 1
            checkpoints.release.set()
            await checkpoint
    finally:
        for blocker in (writes, reads, checkpoints):
            blocker.release.set()
    await asyncio.gather(*calls)
    m = scrape(app)
    for lane in ("writer", "reader", "maintenance"):
        assert m.value("db_inflight", lane=lane) == 0
        assert m.value("db_queue_depth", lane=lane) == 0


@pytest.mark.sqlite_only("the WAL's gauges")
def test_the_wal_limits_the_alerts_compare_against_are_the_configured_ones(
        make_app: Callable[..., FastAPI]) -> None:
    """sqlite_wal_bytes > sqlite_journal_size_limit_bytes and the checkpoint age against
    sqlite_checkpoint_interval_seconds: the limits are the settings the service runs with."""
    app = make_app(sqlite_journal_size_limit_bytes=123456, sqlite_checkpoint_interval_s=2.5)
    m = scrape(app)
    assert m.value("sqlite_journal_size_limit_bytes") == 123456
    assert m.value("sqlite_checkpoint_interval_seconds") == 2.5
    assert m.value("sqlite_wal_bytes") == app.state.db.backend.wal_bytes()
