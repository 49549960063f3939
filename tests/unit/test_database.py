"""The Database itself: pragmas on every connection, checkpoints, start-up and shutdown."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pysqlite3.dbapi2 as pysqlite
import pytest
from fastapi import FastAPI
from sqlalchemy import Connection, event, text
from sqlalchemy.exc import OperationalError
from sqlite_faults.inspect_db import query
from sqlite_faults.locks import LockHolder
from sqlite_faults.observe import MetricsSnapshot

from app.errors import IntegrityViolation, QueueFull
from app.main import create_app
from app.settings import Settings
from app.sqlite_backend import UnsafeSqliteVersion

pytestmark = pytest.mark.sqlite_only("SQLite pragmas, checkpoints and version gate")


def pragmas(engine: Any) -> dict[str, object]:
    with engine.connect() as conn:
        dbapi = conn.connection.dbapi_connection
        return {
            name: dbapi.execute(f"PRAGMA {name}").fetchone()[0]
            for name in ("journal_mode", "synchronous", "foreign_keys", "journal_size_limit")
        }


def checkpoint_recorded(app: FastAPI) -> asyncio.Event:
    """An event set when the app records a completed checkpoint."""
    recorded = asyncio.Event()
    original = app.state.metrics.record_checkpoint

    def record(lag_frames: int) -> None:
        original(lag_frames)
        recorded.set()

    app.state.metrics.record_checkpoint = record
    return recorded


@pytest.mark.parametrize(("level", "number"), [("NORMAL", 1), ("FULL", 2), ("EXTRA", 3)])
def test_every_connection_gets_the_pragmas(
    make_app: Callable[..., FastAPI], level: str, number: int
) -> None:
    app = make_app(sqlite_synchronous=level, sqlite_journal_size_limit_bytes=123456)
    for engine in (app.state.db.writer_engine, app.state.db.reader_engine):
        assert pragmas(engine) == {
            "journal_mode": "wal", "synchronous": number, "foreign_keys": 1,
            "journal_size_limit": 123456,
        }


async def test_checkpoint_truncates_a_wal_past_the_limit_and_reports_lag(
    make_app: Callable[..., FastAPI], client_for: Callable[[FastAPI], httpx.AsyncClient],
) -> None:
    app = make_app(sqlite_journal_size_limit_bytes=4096)
    client = client_for(app)
    for i in range(20):
        assert (await client.post("/users/", json={"name": f"u{i}",
                                                    "password": "long enough"})).status_code == 201
    backend = app.state.db.backend
    assert backend.wal_bytes() > 4096
    before = MetricsSnapshot((await client.get("/metrics")).text)
    assert before.value("sqlite_wal_bytes") == backend.wal_bytes()
    assert before.value("sqlite_checkpoint_age_seconds") == -1  # never checkpointed yet

    await app.state.db.checkpoint()

    assert backend.wal_bytes() == 0  # TRUNCATE: the WAL was past journal_size_limit
    after = MetricsSnapshot((await client.get("/metrics")).text)
    assert after.value("sqlite_checkpoint_lag_frames") == 0
    assert after.value("sqlite_checkpoint_age_seconds") >= 0
    assert (await client.get("/users/20")).status_code == 200


@pytest.mark.parametrize(("over_limit_by", "truncated"), [(-1, False), (0, False), (1, True)])
async def test_checkpoint_is_passive_up_to_the_limit_and_truncates_only_past_it(
    make_app: Callable[..., FastAPI], client_for: Callable[[FastAPI], httpx.AsyncClient],
    db_path: Path, monkeypatch: pytest.MonkeyPatch, over_limit_by: int, truncated: bool,
) -> None:
    """PASSIVE never waits for anyone and leaves the file's size alone; TRUNCATE (which takes
    the WAL's write lock) is kept for a WAL past journal_size_limit. The size the policy reads
    is set to the boundary; the checkpoint itself is real."""
    limit = 1 << 20
    app = make_app(sqlite_journal_size_limit_bytes=limit)
    client = client_for(app)
    assert (await client.post("/users/", json={"name": "w", "password": "long enough"})
            ).status_code == 201
    wal = db_path.with_name(db_path.name + "-wal")
    assert wal.stat().st_size > 0
    monkeypatch.setattr(app.state.db.backend, "wal_bytes", lambda: limit + over_limit_by)
    await app.state.db.checkpoint()
    assert (wal.stat().st_size == 0) is truncated


async def test_a_truncate_checkpoint_gives_up_at_once_on_a_pinned_reader(
    make_app: Callable[..., FastAPI], client_for: Callable[[FastAPI], httpx.AsyncClient],
    db_path: Path,
) -> None:
    """TRUNCATE waits in the busy handler for every reader to reach the newest snapshot,
    holding the WAL's write lock (so every write waits too). With a reader pinning an old
    snapshot it must try once and leave the WAL for the next tick, not wait out its whole
    deadline (tests/durability/test_checkpoint_starvation.py shows the writes it would stall)."""
    app = make_app(sqlite_journal_size_limit_bytes=4096, db_deadline_s=2.0)
    client = client_for(app)
    for i in range(10):
        assert (await client.post("/users/", json={"name": f"u{i}",
                                                    "password": "long enough"})).status_code == 201
    reader = pysqlite.connect(db_path, isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM users").fetchall()  # pins this snapshot
        assert (await client.post("/users/", json={"name": "newer",
                                                    "password": "long enough"})).status_code == 201
        await app.state.db.checkpoint()  # no DeadlineExceeded: it did not wait for the reader
        assert app.state.db.backend.wal_bytes() > 0  # the reader still needs the WAL
    finally:
        reader.close()


async def test_wal_size_of_a_database_with_no_wal_file_is_zero(
    app: FastAPI, client: httpx.AsyncClient, db_path: Path,
) -> None:
    """Between a clean close and the next write there is no -wal file: /metrics reads 0."""
    app.state.db.close()
    assert not db_path.with_name(db_path.name + "-wal").exists()
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert MetricsSnapshot(response.text).value("sqlite_wal_bytes") == 0


async def test_lifespan_runs_checkpoints_and_closes_the_database(
    make_settings: Callable[..., Settings],
) -> None:
    app = create_app(make_settings(sqlite_checkpoint_interval_s=0.01))
    checkpointed = checkpoint_recorded(app)
    async with app.router.lifespan_context(app):
        await asyncio.wait_for(checkpointed.wait(), timeout=5)
    # Closed: the lanes take no more work.
    with pytest.raises(QueueFull, match="shut down"):
        app.state.db.writer.submit(lambda: None)


@pytest.fixture
def affected_stdlib_sqlite(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stdlib driver, reporting the system SQLite of this machine kind (3.40.1)."""
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 40, 1))


@pytest.mark.usefixtures("affected_stdlib_sqlite")
def test_an_affected_sqlite_is_refused_at_start_up(
    make_settings: Callable[..., Settings],
) -> None:
    with pytest.raises(UnsafeSqliteVersion, match="WAL-reset"):
        create_app(make_settings(sqlite_driver="sqlite3"))


@pytest.mark.usefixtures("affected_stdlib_sqlite")
def test_an_affected_sqlite_runs_when_explicitly_allowed(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(make_settings(sqlite_driver="sqlite3", sqlite_allow_affected_version=True))
    try:
        assert "running anyway" in caplog.text
    finally:
        app.state.db.close()
        app.state.hasher.close()


async def test_a_failed_commit_leaves_no_transaction_open(
    make_app: Callable[..., FastAPI], db_path: Path
) -> None:
    """A COMMIT refused by a deferred constraint leaves SQLite's transaction open
    (sqlite.org/foreignkeys.html#fk_deferred); the connection must not go back to the pool
    that way, or the next BEGIN on it fails, or worse, commits the leftovers."""
    app = make_app()
    db = app.state.db
    with db.writer_engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
        conn.exec_driver_sql(
            "CREATE TABLE child (parent_id INTEGER REFERENCES parent(id) "
            "DEFERRABLE INITIALLY DEFERRED)")

    def orphan(conn: Connection) -> None:
        conn.execute(text("INSERT INTO child (parent_id) VALUES (999)"))

    with pytest.raises(IntegrityViolation):
        await db.write("orphan", orphan)

    def parent(conn: Connection) -> None:
        conn.execute(text("INSERT INTO parent (id) VALUES (1)"))

    await db.write("parent", parent)
    assert query(db_path, "SELECT count(*) FROM parent") == [(1,)]
    assert query(db_path, "SELECT count(*) FROM child") == [(0,)]


async def test_the_checkpoint_loop_outlives_a_failed_checkpoint(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With SQLite's auto-checkpoint off, a loop ended by one failure would let the WAL grow
    without bound: a failed checkpoint is logged and the next one runs."""
    app = create_app(make_settings(sqlite_checkpoint_interval_s=0.01))
    db = app.state.db
    real = db.backend.checkpoint
    calls: list[str] = []

    def flaky(dbapi_conn: Any) -> Any:
        if not calls:
            calls.append("driver error")
            dbapi_conn.execute("SELECT * FROM no_such_table")  # a real driver error
        if len(calls) == 1:
            calls.append("unexpected")
            raise RuntimeError("a defect in the checkpoint code")
        calls.append("ok")
        return real(dbapi_conn)

    monkeypatch.setattr(db.backend, "checkpoint", flaky)
    done = checkpoint_recorded(app)
    async with app.router.lifespan_context(app):
        await asyncio.wait_for(done.wait(), timeout=5)
    assert calls[:3] == ["driver error", "unexpected", "ok"]


async def test_an_id_is_never_handed_out_twice(
    client: httpx.AsyncClient, db_path: Path,
) -> None:
    """AUTOINCREMENT: after the newest user is deleted, the next create gets a new id, so a
    client holding an old id never reads someone else's user under it."""
    first = (await client.post("/users/", json={"name": "a", "password": "long enough"})).json()
    conn = pysqlite.connect(db_path, isolation_level=None)
    conn.execute("DELETE FROM users WHERE id = ?", (first["id"],))
    conn.close()
    second = (await client.post("/users/", json={"name": "b", "password": "long enough"})).json()
    assert second["id"] > first["id"]


@pytest.mark.parametrize(("interval_s", "autocheckpoint"), [(0.5, 0), (0, 1000)])
def test_sqlite_s_own_checkpoint_is_off_only_while_the_service_checkpoints(
    make_app: Callable[..., FastAPI], interval_s: float, autocheckpoint: int,
) -> None:
    """With the service's loop on, an automatic checkpoint would run inside some request's
    COMMIT (fsyncs and all); with the loop off, SQLite's must stay on."""
    app = make_app(sqlite_checkpoint_interval_s=interval_s)
    for engine in app.state.db.engines:
        with engine.connect() as conn:
            dbapi = conn.connection.dbapi_connection
            assert dbapi.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == autocheckpoint


def test_a_failed_start_up_leaves_no_thread_behind(
    make_settings: Callable[..., Settings], db_path: Path,
) -> None:
    """The schema cannot be made (another process holds the write lock past the start-up's
    busy timeout): the error reaches the caller, and the lanes' threads are gone."""
    fresh = pysqlite.connect(db_path, isolation_level=None)
    fresh.execute("PRAGMA journal_mode = WAL")
    fresh.close()
    before = {t.ident for t in threading.enumerate()}
    with LockHolder(db_path, "immediate"), pytest.raises(OperationalError, match="locked"):
        create_app(make_settings(sqlite_busy_timeout_ms=1))
    left = [t.name for t in threading.enumerate() if t.ident not in before]
    assert left == []


async def test_no_request_opens_a_connection(
    app: FastAPI, client: httpx.AsyncClient,
) -> None:
    """Every pooled connection is opened at start-up: a request never pays for a
    connection's set-up pragmas (nor waits on a lock in them)."""
    opened: list[int] = []
    for engine in app.state.db.engines:
        event.listen(engine, "connect", lambda *_: opened.append(1))
    created = await client.post("/users/", json={"name": "warm", "password": "long enough"})
    assert (await client.get(f"/users/{created.json()['id']}")).status_code == 200
    assert (await client.get("/readyz")).status_code == 200
    assert opened == []


def test_the_database_folder_is_created_on_first_run(
    make_settings: Callable[..., Settings], tmp_path: Path,
) -> None:
    path = tmp_path / "new" / "folder" / "users.db"
    app = create_app(make_settings(database_url=f"sqlite:///{path}"))
    app.state.db.close()
    app.state.hasher.close()
    assert path.exists()
