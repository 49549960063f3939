"""The naive baseline (examples/naive_service) serves the hardened service's API shape, so one
load generator drives both, and keeps the naive choices it exists to show.

Its database is read only through its own API or the stdlib `sqlite3` module, the SQLite
library it uses itself: never through sqlite_faults.inspect_db (pysqlite3), since two SQLite
libraries on one file in one process drop each other's locks.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.pool import QueuePool

from examples.naive_service.app import create_app

PASSWORD = "correct horse battery"


@pytest.fixture
def naive_db(tmp_path: Path) -> Path:
    return tmp_path / "naive.db"


@pytest.fixture
def naive_app(naive_db: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FastAPI]:
    monkeypatch.setenv("PASSWORD_HASH_TIME_COST", "1")
    monkeypatch.setenv("PASSWORD_HASH_MEMORY_KIB", "8")
    app = create_app(f"sqlite:///{naive_db}")
    yield app
    app.state.engine.dispose()  # ASGITransport runs no lifespan, so no shutdown does it


@pytest.fixture
def naive(naive_app: FastAPI,
          client_for: Callable[[FastAPI], httpx.AsyncClient]) -> httpx.AsyncClient:
    return client_for(naive_app)


async def test_create_read_and_missing_user_have_the_hardened_shape(
    naive: httpx.AsyncClient,
) -> None:
    created = await naive.post("/users/", json={"name": "ada", "password": PASSWORD})
    assert created.status_code == 201, created.text
    body = created.json()
    assert set(body) == {"id", "name", "created_at"}
    assert body["name"] == "ada" and body["id"] > 0
    datetime.fromisoformat(body["created_at"])  # naive UTC: no zone, unlike the hardened one

    read = await naive.get(f"/users/{body['id']}")
    assert read.status_code == 200
    assert read.json() == body

    assert (await naive.get("/users/424242")).status_code == 404


async def test_service_routes_answer(naive: httpx.AsyncClient) -> None:
    assert (await naive.get("/healthz")).json() == {"status": "ok"}
    assert (await naive.get("/readyz")).json() == {"status": "ready"}
    info = await naive.get("/")
    assert info.status_code == 200
    assert set(info.json()) == {"service", "version", "database"}
    assert info.json()["database"] == "ok"


async def test_password_is_stored_only_as_a_salted_argon2_hash(
    naive: httpx.AsyncClient, naive_db: Path
) -> None:
    for name in ("first", "second"):  # same password
        response = await naive.post("/users/", json={"name": name, "password": PASSWORD})
        assert PASSWORD not in response.text
    with sqlite3.connect(naive_db) as conn:  # the app's own SQLite library
        hashes = [h for (h,) in conn.execute("SELECT password_hash FROM users ORDER BY id")]
    conn.close()  # the context manager only ends the transaction
    assert all(h.startswith("$argon2id$") for h in hashes)
    assert PASSWORD not in "".join(hashes)
    assert hashes[0] != hashes[1]


async def test_a_duplicate_name_is_a_500_as_in_the_report(naive: httpx.AsyncClient) -> None:
    user = {"name": "twice", "password": PASSWORD}
    assert (await naive.post("/users/", json=user)).status_code == 201
    duplicate = await naive.post("/users/", json=user)
    assert duplicate.status_code == 500
    assert duplicate.json() == {"detail": "Database error occurred"}


def test_it_keeps_the_naive_defaults_it_exists_to_show(naive_app: FastAPI) -> None:
    """The baseline must stay naive: SQLAlchemy's default pool (5 + 10 connections, 30 s
    checkout timeout, the cause of the stall at 16 clients) and SQLite's rollback journal."""
    engine = naive_app.state.engine
    pool = engine.pool
    assert isinstance(pool, QueuePool)
    # No public accessor for max_overflow; size() and timeout() are public.
    assert (pool.size(), pool._max_overflow, pool.timeout()) == (5, 10, 30)
    assert engine.dialect.dbapi is sqlite3.dbapi2  # the stdlib driver, the system SQLite
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "delete"
