"""Read a service's SQLite database from the test process, without breaking its locks.

Open the file only through the same SQLite library the service uses (pysqlite3's bundled
SQLite). POSIX advisory locks belong to the process, and closing any descriptor of a file
drops every lock the process holds on it. One SQLite library tracks its own descriptors and
defers such closes, but a second copy in the same process (the stdlib's `sqlite3` beside
pysqlite3) does not know about the first one's locks: closing its connection silently releases
the service's locks (sqlite.org/howtocorrupt.html, section 2.2). Seen here: after a stdlib
connection opened and closed the file, rows the service had committed were missing.

So the library is pysqlite3 when it is installed (the hardened service's), the stdlib's
`sqlite3` otherwise; `SQLITE_FAULTS_DRIVER=sqlite3|pysqlite3` picks one for a service that
runs in the test process with the other.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from .drivers import sqlite_dbapi

dbapi = sqlite_dbapi()


def query(db_path: str | Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one read-only statement in its own short-lived connection."""
    conn = dbapi.connect(str(db_path), isolation_level=None)
    try:
        rows: list[tuple[Any, ...]] = conn.execute(sql, params).fetchall()
        return rows
    finally:
        conn.close()


def names_in_main_file_alone(db_path: Path, scratch: Path) -> set[str] | None:
    """The user names the main database file holds without its WAL, i.e. what was already
    checkpointed. None when that file alone is not readable (a checkpoint was cut short:
    only the WAL makes it consistent)."""
    scratch.mkdir(parents=True, exist_ok=True)
    copy = scratch / "main-only.db"
    for stale in scratch.glob("main-only.db*"):
        stale.unlink()
    shutil.copyfile(db_path, copy)
    try:
        return {name for (name,) in query(copy, "SELECT name FROM users")}
    except dbapi.Error:  # not readable alone
        return None


def query_url(database_url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """`query` for a SQLAlchemy-style URL: an SQLite file (through pysqlite3, as above) or a
    PostgreSQL database (through psycopg, in autocommit)."""
    if database_url.startswith("sqlite"):
        return query(database_url.split("///", 1)[1], sql, params)
    import psycopg

    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        if not params:  # psycopg reads "%" as a placeholder only when given parameters
            return list(conn.execute(sql).fetchall())
        return list(conn.execute(sql.replace("?", "%s"), params).fetchall())


def libpq_url(database_url: str) -> str:
    """postgresql+psycopg://... -> postgresql://... (what libpq accepts)."""
    scheme, rest = database_url.split("://", 1)
    return f"{scheme.split('+', 1)[0]}://{rest}"
