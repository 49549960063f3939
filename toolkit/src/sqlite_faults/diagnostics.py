"""What an engine is configured to do, read from inside the service's process: the evidence
for or against the configuration causes of the catalogue (causes.toml: rollback-journal,
affected-sqlite, lock-not-waited, pool-exhaustion).

`diagnose(engine)` never touches the service's own pool: it opens one connection through a
copy of the pool (`Pool.recreate()`, which keeps the engine's creator and its event
listeners), so the connection carries the PRAGMAs the service's 'connect' handlers set, and
it is closed again at once. A service whose pool is exhausted is diagnosed all the same.

The engine plugin's control server answers `GET /diagnostics` with one `EngineDiagnosis`
per registered engine (engine_plugin.py), so a harness reads them from outside.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Engine

# SQLite's "WAL-reset" bug (a checkpoint racing a commit on another connection can corrupt
# the database): present from 3.7.0 to 3.51.2, fixed in 3.51.3.
WAL_RESET_BUG = ((3, 7, 0), (3, 51, 2))
SYNCHRONOUS = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


@dataclass(frozen=True)
class EngineDiagnosis:
    dialect: str
    driver: str  # the DB-API module the engine uses
    version: str  # the SQLite library's, or the PostgreSQL server's
    wal_reset_bug: bool | None  # None: not SQLite
    journal_mode: str | None
    synchronous: str | None
    # The lock wait a fresh connection starts with: SQLite's busy_timeout, PostgreSQL's
    # lock_timeout (0: none, so no wait for SQLite and no bound for PostgreSQL).
    lock_wait_ms: int | None
    statement_timeout_ms: int | None  # PostgreSQL's; None for SQLite (it has none)
    isolation_level: str | None  # what the engine asks for; None: the driver's default
    pool: str
    pool_size: int | None
    max_overflow: int | None
    pool_timeout_s: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def wal_reset_bug(version: str) -> bool:
    parts = tuple(int(p) for p in re.findall(r"\d+", version)[:3])
    low, high = WAL_RESET_BUG
    return low <= parts <= high


def diagnose(engine: Engine) -> EngineDiagnosis:
    pool = engine.pool
    settings = _connection_settings(engine)
    dialect = engine.dialect
    return EngineDiagnosis(
        dialect=dialect.name,
        driver=getattr(dialect.dbapi, "__name__", str(dialect.driver)),
        version=settings["version"],
        wal_reset_bug=(wal_reset_bug(settings["version"]) if dialect.name == "sqlite"
                       else None),
        journal_mode=settings.get("journal_mode"),
        synchronous=settings.get("synchronous"),
        lock_wait_ms=settings.get("lock_wait_ms"),
        statement_timeout_ms=settings.get("statement_timeout_ms"),
        isolation_level=(engine.get_execution_options().get("isolation_level")
                         or getattr(dialect, "isolation_level", None)),
        pool=type(pool).__name__,
        pool_size=_call(pool, "size"),
        max_overflow=getattr(pool, "_max_overflow", None),
        pool_timeout_s=getattr(pool, "_timeout", None),
    )


def _call(pool: Any, name: str) -> int | None:
    method = getattr(pool, name, None)
    return int(method()) if callable(method) else None


def _connection_settings(engine: Engine) -> dict[str, Any]:
    """Read on one new connection made as the service's pool makes them. An async engine's
    (aiosqlite, asyncpg) connections work only inside SQLAlchemy's greenlet bridge, which
    needs an event loop: this runs on the control server's own thread, which has none."""
    if engine.dialect.is_async:
        from sqlalchemy.util import greenlet_spawn

        async def bridged() -> dict[str, Any]:
            return await greenlet_spawn(_read_settings, engine)

        return asyncio.run(bridged())
    return _read_settings(engine)


def _read_settings(engine: Engine) -> dict[str, Any]:
    copy = engine.pool.recreate()
    try:
        record = copy.connect()
        try:
            cursor = record.dbapi_connection.cursor()  # type: ignore[union-attr]
            try:
                if engine.dialect.name == "sqlite":
                    return _sqlite(cursor)
                return _postgres(cursor)
            finally:
                cursor.close()
        finally:
            record.close()
    finally:
        copy.dispose()


def _one(cursor: Any, sql: str) -> Any:
    cursor.execute(sql)
    return cursor.fetchone()[0]


def _sqlite(cursor: Any) -> dict[str, Any]:
    return {"version": str(_one(cursor, "SELECT sqlite_version()")),
            "journal_mode": str(_one(cursor, "PRAGMA journal_mode")).lower(),
            "synchronous": SYNCHRONOUS.get(int(_one(cursor, "PRAGMA synchronous")), "?"),
            "lock_wait_ms": int(_one(cursor, "PRAGMA busy_timeout"))}


def _postgres(cursor: Any) -> dict[str, Any]:
    def ms(setting: str) -> int:
        cursor.execute("SELECT setting::int FROM pg_settings WHERE name = %s", (setting,))
        return int(cursor.fetchone()[0])

    return {"version": str(_one(cursor, "SHOW server_version")),
            "synchronous": str(_one(cursor, "SHOW synchronous_commit")),
            "lock_wait_ms": ms("lock_timeout"), "statement_timeout_ms": ms("statement_timeout")}
