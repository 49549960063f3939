"""Diagnostics of an engine's configuration, each read both ways: on a service built to have
the cause (the naive service: SQLAlchemy's and the standard library's defaults) and on one
built not to (the hardened service), in process and through the engine plugin's control
server, as a harness outside the service reads them (that last one in
test_engine_plugin.py, beside the control server it shares)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi import FastAPI
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import QueuePool
from sqlite_faults.diagnostics import diagnose, wal_reset_bug

from examples.naive_service.app import create_app as create_naive_app


@pytest.mark.parametrize(("version", "affected"), [
    ("3.6.23", False), ("3.7.0", True), ("3.40.1", True), ("3.51.2", True),
    ("3.51.3", False), ("3.53.4", False), ("4.0.0", False)])
def test_the_wal_reset_bug_spans_3_7_0_to_3_51_2(version: str, affected: bool) -> None:
    assert wal_reset_bug(version) is affected


def test_the_naive_service_has_each_configuration_cause(tmp_path: Path) -> None:
    naive = create_naive_app(f"sqlite:///{tmp_path / 'naive.db'}")
    try:
        found = diagnose(naive.state.engine)
    finally:
        naive.state.engine.dispose()
    assert found.journal_mode == "delete"  # rollback-journal
    assert found.driver == "sqlite3.dbapi2" and found.wal_reset_bug is (
        wal_reset_bug(found.version))  # affected-sqlite, on the standard library's SQLite
    assert (found.pool, found.pool_size, found.max_overflow, found.pool_timeout_s) == (
        "QueuePool", 5, 10, 30.0)  # the seed's pool: 15 connections, a 30 s wait for one


def test_the_hardened_service_has_none_of_them(make_app: Callable[..., FastAPI]) -> None:
    app = make_app()
    for engine in (app.state.db.writer_engine, app.state.db.reader_engine):
        found = diagnose(engine)
        assert found.journal_mode == "wal" and found.synchronous in ("NORMAL", "FULL")
        assert found.driver == "pysqlite3.dbapi2" and found.wal_reset_bug is False
        assert found.pool_timeout_s is not None and found.pool_timeout_s <= 1.0


def test_diagnosis_leaves_the_services_pool_alone(tmp_path: Path) -> None:
    """It opens its own connection, so an exhausted pool is diagnosed too, and nothing the
    service holds is touched."""
    engine = create_engine(f"sqlite:///{tmp_path / 'full.db'}", poolclass=QueuePool,
                           pool_size=1, max_overflow=0, pool_timeout=30)
    try:
        with engine.connect() as held:  # the pool's only connection, checked out
            assert diagnose(engine).pool_size == 1
            assert held.execute(text("SELECT 1")).scalar_one() == 1
        assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    finally:
        engine.dispose()


def test_an_async_engine_is_diagnosed_through_sqlalchemys_greenlet_bridge(
        tmp_path: Path) -> None:
    """Prefect's server runs on aiosqlite: its connections open only inside the bridge (a
    plain connect raised MissingGreenlet, and the report took the engine for absent)."""
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'async.db'}")
    try:
        found = diagnose(engine.sync_engine)
    finally:
        asyncio.run(engine.dispose())
    assert (found.dialect, found.journal_mode) == ("sqlite", "delete")
    assert found.driver and found.version and found.lock_wait_ms is not None
