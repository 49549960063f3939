"""The service as the power-loss simulation sees it (app/crash_service.py) writes what the
service writes: the same schema, and a create that leaves the same rows, of the same types, as
`create_user` through the service's own Database."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pysqlite3.dbapi2 as pysqlite
import pytest

from app.crash_service import crash_services
from app.db import Database
from app.main import retry_policy
from app.metrics import Metrics
from app.passwords import PasswordHasher
from app.settings import Settings
from app.users import create_user

pytestmark = pytest.mark.sqlite_only("the SQLite power-loss simulation's view of the service")


def _schema(path: Path) -> list[str]:
    conn = pysqlite.connect(str(path))
    try:
        return [" ".join(sql.split()) for (sql,) in conn.execute(
            "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL "
            "AND name NOT LIKE 'sqlite_%' ORDER BY rowid")]
    finally:
        conn.close()


def _rows(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, each value with its SQLite storage class."""
    conn = pysqlite.connect(str(path))
    try:
        tables = [name for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        found = {}
        for table in tables:
            columns = [c[1] for c in conn.execute(f'PRAGMA table_info("{table}")')]
            typed = ", ".join(f'"{c}", typeof("{c}")' for c in columns)
            found[table] = conn.execute(f'SELECT {typed} FROM "{table}"').fetchall()
        return found
    finally:
        conn.close()


def _by_the_service(settings: Settings, name: str, key: str) -> None:
    db = Database.open(settings, Metrics(), retry_policy(settings))
    try:
        asyncio.run(create_user(db, PasswordHasher(settings), name, "a password", key))
    finally:
        db.close()


def test_the_simulated_create_leaves_what_the_service_leaves(
        make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    served, simulated = tmp_path / "served.db", tmp_path / "simulated.db"
    settings = make_settings(database_url=f"sqlite:///{served}")
    _by_the_service(settings, "ada", "key-1")

    service = crash_services(settings)[0]
    conn = service.driver().connect(str(simulated), isolation_level=None)
    try:
        for name, value in service.pragmas:
            conn.execute(f"PRAGMA {name} = {value}").fetchall()
        for ddl in service.schema:
            conn.execute(ddl)
        service.create(conn, "ada", "key-1")
    finally:
        conn.close()

    assert _schema(simulated) == _schema(served)
    by_service, by_simulation = _rows(served), _rows(simulated)
    assert by_simulation.keys() == by_service.keys()
    for table, rows in by_service.items():
        assert len(by_simulation[table]) == len(rows), table
        for ours, theirs in zip(by_simulation[table], rows, strict=True):
            # Storage classes everywhere; the values where they do not depend on the moment
            # or the salt (names, keys, ids, the hash's algorithm).
            assert ours[1::2] == theirs[1::2], (table, ours, theirs)
            for mine, served_value in zip(ours[0::2], theirs[0::2], strict=True):
                if isinstance(served_value, str) and served_value.startswith("$argon2"):
                    assert str(mine).split("$")[1:3] == served_value.split("$")[1:3]
                elif isinstance(served_value, str) and served_value[:2] == "20":
                    assert len(str(mine)) == len(served_value)  # the same datetime format
                else:
                    assert mine == served_value, (table, ours, theirs)


def test_the_variants_differ_only_in_the_journal_size_limit(
        make_settings: Callable[..., Settings]) -> None:
    service, small = crash_services(make_settings(sqlite_checkpoint_interval_s=1.0))
    differ = {p[0] for p, q in zip(service.pragmas, small.pragmas, strict=True) if p != q}
    assert differ == {"journal_size_limit"}
    assert ("wal_autocheckpoint", "0") in service.pragmas
    assert service.checkpoint_interval_s == 1.0
