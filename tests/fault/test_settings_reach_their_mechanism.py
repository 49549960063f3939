"""Each setting acts where the README's configuration table says it acts.

A setting read into the wrong mechanism (or not read at all) leaves the service starting and
serving its happy path; only a fault shows it. Each test sets the value far from its default
and watches the mechanism it names.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pysqlite3.dbapi2 as sqlite
import pytest
from fastapi import FastAPI
from sqlite_faults.locks import LockHolder
from sqlite_faults.observe import MetricsSnapshot, wait_until
from sqlite_faults.slow import SlowStatements, spin
from sqlite_faults.sql_errors import InjectSqlError

from app.main import create_app
from app.settings import Settings

WAIT_S = 10.0


def new_user(name: str) -> dict[str, str]:
    return {"name": name, "password": "correct horse"}


class HeldArgon2:
    """Stands in for the hasher's argon2 object: each hash first runs `before()`."""

    def __init__(self, argon2: Any, before: Callable[[], None]) -> None:
        self._argon2 = argon2
        self._before = before

    def hash(self, password: str) -> str:
        self._before()
        return self._argon2.hash(password)

    def verify(self, password_hash: str, password: str) -> bool:
        return self._argon2.verify(password_hash, password)


class Ceiling(random.Random):
    """An RNG whose uniform(a, b) is b: each full-jitter wait is its ceiling."""

    def uniform(self, a: float, b: float) -> float:
        return b


async def test_backoff_settings_shape_the_waits_between_attempts(
    make_app: Callable[..., FastAPI], client_for: Callable[[FastAPI], httpx.AsyncClient],
) -> None:
    """RETRY_BACKOFF_INITIAL_S is the first ceiling, doubling per retry, capped at
    RETRY_BACKOFF_MAX_S; RETRY_MAX_ATTEMPTS bounds the attempts."""
    app = make_app(retry_max_attempts=5, retry_backoff_initial_s=0.002,
                   retry_backoff_max_s=0.005)
    client = client_for(app)
    policy = app.state.db.retry  # the policy create_app built from the settings
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    policy.rng = Ceiling()
    policy.sleep = record
    with InjectSqlError(app.state.db.writer_engine, "busy", match=r"^INSERT INTO users"):
        response = await client.post("/users/", json=new_user("retried"))
    assert response.status_code == 503, response.text
    assert waits == pytest.approx([0.002, 0.004, 0.005, 0.005])


async def test_read_workers_and_queue_limit_size_the_reader_lane(
    make_app: Callable[..., FastAPI], client_for: Callable[[FastAPI], httpx.AsyncClient],
) -> None:
    """DB_READ_WORKERS reads run at once and DB_QUEUE_LIMIT more may wait; the next is
    refused at once."""
    workers, queue_limit = 2, 1
    app = make_app(db_read_workers=workers, db_queue_limit=queue_limit, db_deadline_s=5.0)
    client = client_for(app)
    db = app.state.db
    created = await client.post("/users/", json=new_user("reader"))
    user_id = created.json()["id"]
    with SlowStatements(db.reader_engine, seconds=3.0, match=r"^SELECT"):
        reads = [asyncio.create_task(client.get(f"/users/{user_id}"))
                 for _ in range(workers + queue_limit)]
        await wait_until(lambda: (db.readers.running, db.readers.queued)
                         == (workers, queue_limit), "the reader lane is full")
        refused = await client.get(f"/users/{user_id}")
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "overloaded"
        metrics = MetricsSnapshot((await client.get("/metrics")).text)
        assert metrics.value("db_inflight", lane="reader") == workers
        assert metrics.value("db_queue_depth", lane="reader") == queue_limit
        # The capacities the alerts compare these with (db_inflight >= db_lane_workers, the
        # queue against db_lane_queue_limit) are the ones the lane just showed it has.
        assert metrics.value("db_lane_workers", lane="reader") == workers
        assert metrics.value("db_lane_queue_limit", lane="reader") == queue_limit
        assert metrics.value("db_lane_workers", lane="writer") == db.writer.workers
        for read in reads:
            read.cancel()
        await asyncio.gather(*reads, return_exceptions=True)
    assert db.readers.wait_idle(timeout_s=WAIT_S)


async def test_hash_concurrency_bounds_the_hashes_computed_at_once(
    make_app: Callable[..., FastAPI], client_for: Callable[[FastAPI], httpx.AsyncClient],
) -> None:
    concurrency = 2
    app = make_app(password_hash_concurrency=concurrency)
    client = client_for(app)
    hasher = app.state.hasher
    gate = threading.Event()
    lock = threading.Lock()
    running: list[int] = [0, 0]  # now, most at once

    def held() -> None:
        with lock:
            running[0] += 1
            running[1] = max(running)
        try:
            assert gate.wait(WAIT_S)
        finally:
            with lock:
                running[0] -= 1

    hasher._argon2 = HeldArgon2(hasher._argon2, held)
    creates = [asyncio.create_task(client.post("/users/", json=new_user(f"h{i}")))
               for i in range(concurrency + 2)]
    try:
        await wait_until(lambda: running[0] == concurrency, "the hashers are busy")
        await asyncio.sleep(0.05)  # room for a third hash to start, were it allowed to
        assert running[1] == concurrency
        # What the alert (password_hash_waiting > password_hash_slots) reads, at saturation.
        metrics = MetricsSnapshot((await client.get("/metrics")).text)
        assert metrics.value("password_hash_slots") == concurrency
        assert metrics.value("password_hash_running") == concurrency
        assert metrics.value("password_hash_waiting") == len(creates) - concurrency
    finally:
        gate.set()
    assert [r.status_code for r in await asyncio.gather(*creates)] == [201] * len(creates)


async def test_hashing_runs_off_the_event_loop(
    make_app: Callable[..., FastAPI], client_for: Callable[[FastAPI], httpx.AsyncClient],
) -> None:
    """A slow hash (argon2 at a high cost) must not stop /healthz from answering."""
    app = make_app()
    client = client_for(app)
    hasher = app.state.hasher
    hashing, gate = threading.Event(), threading.Event()
    # Let go by itself after a while: were the hash on the loop, nothing else could.
    releaser = threading.Timer(5.0, gate.set)

    def slow() -> None:
        hashing.set()
        gate.wait(WAIT_S)

    hasher._argon2 = HeldArgon2(hasher._argon2, slow)
    releaser.start()
    try:
        create = asyncio.create_task(client.post("/users/", json=new_user("slow-hash")))
        await wait_until(hashing.is_set, "the hash started")
        assert (await client.get("/healthz")).status_code == 200
        assert not gate.is_set(), "/healthz waited for the hash to end"
        gate.set()
        assert (await create).status_code == 201
    finally:
        gate.set()
        releaser.cancel()


@pytest.mark.sqlite_only("SQLite checkpoints")
async def test_checkpoints_run_beside_writes_not_in_front_of_them(
    make_app: Callable[..., FastAPI], client_for: Callable[[FastAPI], httpx.AsyncClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A slow checkpoint (its fsyncs, a TRUNCATE waiting for readers) runs on its own lane
    and connection: a create meanwhile is not queued behind it."""
    app = make_app(db_deadline_s=10.0)
    client = client_for(app)
    db = app.state.db
    started = threading.Event()

    def slow_checkpoint(dbapi_conn: Any) -> Any:
        started.set()
        spin(dbapi_conn, 6.0)

    monkeypatch.setattr(db.backend, "checkpoint", slow_checkpoint)
    checkpoint = asyncio.create_task(db.checkpoint())
    await wait_until(started.is_set, "the checkpoint started")
    began = time.monotonic()
    response = await client.post("/users/", json=new_user("beside"))
    assert response.status_code == 201, response.text
    assert time.monotonic() - began < 3.0  # not behind the checkpoint's 6 s
    checkpoint.cancel()
    await asyncio.gather(checkpoint, return_exceptions=True)


@pytest.mark.sqlite_only("SQLite's busy timeout outside requests")
def test_start_up_waits_out_a_lock_shorter_than_the_busy_timeout(
    make_settings: Callable[..., Settings], db_path: Any,
) -> None:
    """SQLITE_BUSY_TIMEOUT_MS bounds waits outside requests: creating the schema on a
    database another process is writing to waits for its lock (here 0.5 s)."""
    settings = make_settings(sqlite_busy_timeout_ms=10_000)
    fresh = sqlite.connect(db_path)  # an empty database already in WAL, as another program
    fresh.execute("PRAGMA journal_mode = WAL")  # sharing the file would leave it
    fresh.close()
    with LockHolder(db_path, "immediate", hold_s=0.5) as holder:
        app = create_app(settings)  # create_all needs the write lock
        app.state.db.close()
        app.state.hasher.close()
        holder.wait_released()
