"""The service as the toolkit's power-loss simulation sees it (`CrashService` in
sqlite_faults/powerloss/service.py): what the simulation needs to write exactly as the service
writes, taken from the same data and statements the service itself runs.

- pragmas: `SqliteBackend.connection_pragmas`, the list the connect hook runs;
- schema: the models' CREATE statements, as `Base.metadata.create_all` emits them on SQLite;
- create: the writer's BEGIN (`BEGIN_SQL`), then the create's Core statements
  (`users.CREATE_STATEMENTS`) compiled for SQLite, with their types' own bind processing;
- checkpoint: `SqliteBackend.checkpoint`, the maintenance lane's policy.

The simulation opens its own connections (APSW through its recording VFS, or the service's
driver), which SQLAlchemy cannot drive, hence compiled statements; that they leave what
`create_user` leaves is tested (tests/unit/test_crash_service.py). Structural typing: app/
does not import the toolkit, which is a test dependency.

    python -m sqlite_faults.powerloss --service app.crash_service:crash_services
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher as Argon2Hasher
from sqlalchemy.dialects import sqlite
from sqlalchemy.schema import CreateIndex, CreateTable
from sqlalchemy.sql.compiler import SQLCompiler

from .models import Base, IdempotencyKey, User
from .settings import Settings
from .sqlite_backend import BEGIN_SQL, SqliteBackend, load_driver
from .users import CREATE_STATEMENTS

_DIALECT = sqlite.dialect()
# A journal_size_limit the WAL passes within one simulated run (the service's default, 64 MiB,
# it never reaches): the TRUNCATE branch of the service's checkpoint policy, and SQLite's own
# truncation of a WAL past the limit, then run too.
SMALL_WAL_LIMIT_BYTES = 64 * 1024


@dataclass(frozen=True)
class _Compiled:
    sql: str
    names: tuple[str, ...]  # the parameters, in the order the SQL takes them
    processors: tuple[Any, ...]  # each parameter's bind processing (None: as is)
    returns_id: bool  # RETURNING the new row's id


def _compile(statement: Any) -> _Compiled:
    compiled = statement.compile(dialect=_DIALECT)
    assert isinstance(compiled, SQLCompiler)
    names = tuple(compiled.positiontup or ())
    # A column's generic type processes nothing; its SQLite implementation does (DateTime
    # into SQLite's text format, as the service's engine stores it).
    processors = tuple(compiled.binds[name].type.dialect_impl(_DIALECT).bind_processor(_DIALECT)
                       for name in names)
    return _Compiled(str(compiled), names, processors, bool(compiled.effective_returning))


@dataclass(frozen=True)
class UsersCrashService:
    settings: Settings
    label: str
    password_hash: str  # one real hash at the settings' cost: its length shapes the pages

    @property
    def pragmas(self) -> tuple[tuple[str, str], ...]:
        backend = SqliteBackend(self.settings)
        return tuple(backend.connection_pragmas(self.settings.sqlite_busy_timeout_ms))

    @property
    def page_size(self) -> int:
        conn = self.driver().connect(":memory:")
        try:
            return int(conn.execute("PRAGMA page_size").fetchone()[0])
        finally:
            conn.close()

    @property
    def schema(self) -> tuple[str, ...]:
        statements = []
        for table in Base.metadata.sorted_tables:
            statements.append(str(CreateTable(table).compile(dialect=_DIALECT)).strip())
            statements += [str(CreateIndex(index).compile(dialect=_DIALECT)).strip()
                           for index in sorted(table.indexes, key=lambda i: str(i.name))]
        return tuple(statements)

    @property
    def sqlite_version(self) -> str:
        return str(self.driver().sqlite_version)

    @property
    def checkpoint_interval_s(self) -> float:
        return self.settings.sqlite_checkpoint_interval_s

    def create(self, conn: Any, name: str, key: str) -> None:
        """One create with a new key, BEGIN to COMMIT, on `conn` (APSW or DB-API)."""
        now = datetime.now(UTC).replace(tzinfo=None)
        values: dict[str, Any] = {"name": name, "key": key, "created_at": now,
                                  "password_hash": self.password_hash}
        conn.execute(BEGIN_SQL["writer"] or "BEGIN")
        for step in _CREATE:
            params = [value if process is None else process(value)
                      for value, process in zip((values[n] for n in step.names),
                                                step.processors, strict=True)]
            rows = conn.execute(step.sql, params).fetchall()
            if step.returns_id:
                values["user_id"] = rows[0][0]
        conn.execute("COMMIT")

    def checkpoint(self, conn: Any, db_path: Path) -> None:
        backend = SqliteBackend(self.settings.model_copy(
            update={"database_url": f"sqlite:///{db_path}"}))
        backend.checkpoint(conn)

    def written(self, conn: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        users, keys = User.__tablename__, IdempotencyKey.__tablename__
        return (dict(conn.execute(f'SELECT name, id FROM "{users}"')),
                dict(conn.execute(f'SELECT "key", user_id FROM "{keys}"')))

    def driver(self) -> Any:
        return load_driver(self.settings.sqlite_driver)


_CREATE = tuple(_compile(statement) for statement in CREATE_STATEMENTS)


def crash_services(settings: Settings | None = None) -> tuple[UsersCrashService, ...]:
    """The service as configured (from the environment, as it runs), and the same with
    SMALL_WAL_LIMIT_BYTES."""
    settings = settings or Settings()
    hasher = Argon2Hasher(time_cost=settings.password_hash_time_cost,
                          memory_cost=settings.password_hash_memory_kib,
                          parallelism=settings.password_hash_parallelism)
    password_hash = hasher.hash("power-loss simulation")
    small = settings.model_copy(update={"sqlite_journal_size_limit_bytes":
                                        SMALL_WAL_LIMIT_BYTES})
    return (UsersCrashService(settings, "as configured", password_hash),
            UsersCrashService(small, f"journal_size_limit {SMALL_WAL_LIMIT_BYTES // 1024} KiB",
                              password_hash))
