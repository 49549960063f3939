"""The service's own connection set-up and write, read from the service itself.

The power-loss workload must write the way the service writes: same pragmas, same page size,
same schema, same transaction, same checkpoint policy. Instead of copying values, this module
reads what `app/` exposes as data and runs the service's own code on a scratch database for
the rest, recording what it does:

- the pragmas: the statements `SqliteBackend.connection_setup` lists, which the service's
  connect hook runs and nothing else;
- the schema: what `Database.open` created (`sqlite_master`), and the page size it got;
- the create: one `app.users.create_user` through `Database`, its statements captured with
  SQLAlchemy's cursor events, with sentinel values standing in for name, key and user id.

This is the one module of `powerloss/` that imports `app/`; everything else works on the
`ServiceProfile` it returns, so the simulation itself stays independent of the service.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import event, text

from app.db import Database
from app.main import retry_policy
from app.metrics import Metrics
from app.models import IdempotencyKey, User
from app.passwords import PasswordHasher
from app.settings import Settings
from app.sqlite_backend import BEGIN_SQL, SqliteBackend, load_driver
from app.users import create_user

# Sentinels for the values a create carries; replaced per commit when the recipe is replayed.
_NAME = "powerloss-sentinel-name"
_KEY = "powerloss-sentinel-key"
_PASSWORD = "powerloss-sentinel-password"
# A user id no other parameter can equal by chance: the probe's AUTOINCREMENT starts past it.
_ID_BASE = 7_340_032

_PRAGMA = re.compile(r"^\s*PRAGMA\s+(\w+)\s*=\s*(.+?)\s*;?\s*$", re.IGNORECASE)


class Slot(Enum):
    NAME = "name"
    KEY = "key"
    USER_ID = "user_id"


@dataclass(frozen=True)
class Step:
    """One statement of the service's create: SQL and parameters (literals or slots)."""

    sql: str
    params: tuple[Any, ...]
    yields_user_id: bool = False  # the INSERT whose rowid the later statements refer to


class Executes(Protocol):
    """What replay needs from a connection: APSW's and the DB-API's `execute` both fit."""

    def execute(self, sql: str, params: Sequence[Any] = ...) -> Any: ...


@dataclass(frozen=True)
class Pragma:
    name: str
    value: str

    @property
    def sql(self) -> str:
        return f"PRAGMA {self.name} = {self.value}"


@dataclass(frozen=True)
class ServiceProfile:
    """Everything the simulation needs to write like the service, as plain data."""

    settings: Settings
    pragmas: tuple[Pragma, ...]  # in the order the service's connect hook runs them
    page_size: int  # what the service's SQLite gave its database (the service sets none)
    schema: tuple[str, ...]  # CREATE statements, in creation order
    create: tuple[Step, ...]  # one create_user transaction, BEGIN to COMMIT
    users_table: str
    keys_table: str
    sqlite_version: str  # of the driver the service ships

    def pragmas_for(self, journal_mode: str, synchronous: str) -> tuple[Pragma, ...]:
        """The service's pragmas with the two axes of the matrix replaced. Both must be among
        the service's own pragmas: if it stopped setting one, the matrix would measure
        something else, so that is an error, not a default."""
        wanted = {"journal_mode": journal_mode, "synchronous": synchronous}
        names = {p.name.lower() for p in self.pragmas}
        missing = sorted(set(wanted) - names)
        if missing:
            raise LookupError(f"the service no longer sets {missing}; the matrix needs them")
        return tuple(replace(p, value=wanted.get(p.name.lower(), p.value)) for p in self.pragmas)

    def backend(self, db_path: Path) -> SqliteBackend:
        """The service's SQLite backend on `db_path`: its checkpoint policy, its driver."""
        return SqliteBackend(self.settings.model_copy(
            update={"database_url": f"sqlite:///{db_path}"}))

    @property
    def checkpoints_by_service(self) -> bool:
        """True: the service checkpoints on its own lane (auto-checkpoint off); False: it
        leaves checkpoints to SQLite's auto-checkpoint."""
        return self.settings.sqlite_checkpoint_interval_s > 0

    @property
    def checkpoint_interval_s(self) -> float:
        return self.settings.sqlite_checkpoint_interval_s

    def driver(self) -> Any:
        """The DB-API module the service uses (pysqlite3: SQLite 3.53)."""
        return load_driver(self.settings.sqlite_driver)


def replay_create(conn: Executes, steps: Sequence[Step], name: str, key: str) -> None:
    """Run one create transaction, BEGIN to COMMIT, on `conn` (APSW or DB-API)."""
    user_id: int | None = None
    for step in steps:
        params: list[Any] = []
        for value in step.params:
            if value is Slot.NAME:
                params.append(name)
            elif value is Slot.KEY:
                params.append(key)
            elif value is Slot.USER_ID:
                params.append(user_id)
            else:
                params.append(value)
        cursor = conn.execute(step.sql, params)
        cursor.fetchall()
        if step.yields_user_id:
            # DB-API cursors know the rowid; an APSW cursor asks its connection.
            user_id = getattr(cursor, "lastrowid", None) or cursor.connection.last_insert_rowid()


def load_profile(settings: Settings | None = None) -> ServiceProfile:
    """Derive the profile from `settings` (default: the environment, as the service does)."""
    settings = settings or Settings()
    with tempfile.TemporaryDirectory(prefix="powerloss-probe-") as tmp:
        folder = Path(tmp)
        pragmas = _service_pragmas(settings)
        schema, page_size, create = _traced_create(_scratch(settings, folder / "create.db"))
    return ServiceProfile(
        settings=settings, pragmas=pragmas, page_size=page_size, schema=schema, create=create,
        users_table=User.__tablename__, keys_table=IdempotencyKey.__tablename__,
        sqlite_version=load_driver(settings.sqlite_driver).sqlite_version,
    )


# A journal_size_limit the WAL passes within one simulated run (the service's default, 64 MiB,
# it never reaches): the TRUNCATE branch of the service's checkpoint policy, and SQLite's own
# truncation of a WAL past the limit, then run too.
SMALL_WAL_LIMIT_BYTES = 64 * 1024


def load_profiles(settings: Settings | None = None) -> tuple[ServiceProfile, ...]:
    """The service as configured, and the same with SMALL_WAL_LIMIT_BYTES."""
    settings = settings or Settings()
    small = settings.model_copy(update={"sqlite_journal_size_limit_bytes":
                                        SMALL_WAL_LIMIT_BYTES})
    return load_profile(settings), load_profile(small)


def _scratch(settings: Settings, path: Path) -> Settings:
    return settings.model_copy(update={"database_url": f"sqlite:///{path}"})


def _service_pragmas(settings: Settings) -> tuple[Pragma, ...]:
    """The PRAGMAs the service's connect hook runs, from the backend's own list (the busy
    timeout as outside a request)."""
    statements = SqliteBackend(settings).connection_setup(settings.sqlite_busy_timeout_ms)
    pragmas = tuple(Pragma(m[1].lower(), m[2]) for s in statements if (m := _PRAGMA.match(s)))
    if not pragmas:
        raise RuntimeError("the service's connection set-up has no PRAGMA")
    return pragmas


def _traced_create(settings: Settings) -> tuple[tuple[str, ...], int, tuple[Step, ...]]:
    db = Database.open(settings, Metrics(), retry_policy(settings))
    try:
        with db.writer_engine.begin() as conn:
            # AUTOINCREMENT continues from sqlite_sequence: the probe's user id is then a
            # number that cannot be mistaken for any other parameter.
            conn.execute(text("INSERT INTO sqlite_sequence (name, seq) VALUES (:t, :s)"),
                         {"t": User.__tablename__, "s": _ID_BASE})
            # sqlite_sequence comes with the first AUTOINCREMENT table; it cannot be created.
            schema = tuple(conn.execute(text(
                "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL "
                "AND name NOT LIKE 'sqlite_%' ORDER BY rowid")).scalars())
            page_size = int(conn.execute(text("PRAGMA page_size")).scalar_one())
        captured = _capture(db, lambda: asyncio.run(create_user(
            db, PasswordHasher(settings), _NAME, _PASSWORD, _KEY)))
    finally:
        db.close()
    return schema, page_size, _steps(captured, _ID_BASE + 1)


def _capture(db: Database, run: Callable[[], Any]) -> list[tuple[str, tuple[Any, ...]]]:
    """The statements `run` makes the writer engine execute, with their parameters."""
    statements: list[tuple[str, tuple[Any, ...]]] = []

    def before(_conn: Any, _cursor: Any, sql: str, params: Any, _ctx: Any, many: bool) -> None:
        if many:
            raise RuntimeError("the service's create used executemany; replay cannot follow")
        statements.append((sql, tuple(params or ())))

    def begin(_conn: Any) -> None:
        # The writer's BEGIN goes to the driver itself (it waits for the lock in short busy
        # waits, SqliteBackend.begin_write), so no cursor event sees it: the begin event says
        # a transaction began, and BEGIN_SQL what it began with.
        statements.append((BEGIN_SQL["writer"] or "BEGIN", ()))

    def commit(_conn: Any) -> None:
        statements.append(("COMMIT", ()))

    event.listen(db.writer_engine, "begin", begin)
    event.listen(db.writer_engine, "before_cursor_execute", before)
    event.listen(db.writer_engine, "commit", commit)
    try:
        run()
    finally:
        event.remove(db.writer_engine, "begin", begin)
        event.remove(db.writer_engine, "before_cursor_execute", before)
        event.remove(db.writer_engine, "commit", commit)
    return statements


def _steps(captured: list[tuple[str, tuple[Any, ...]]], user_id: int) -> tuple[Step, ...]:
    steps: list[Step] = []
    seen_name = False
    for sql, params in captured:
        mapped = tuple(
            Slot.NAME if p == _NAME else Slot.KEY if p == _KEY
            else Slot.USER_ID if isinstance(p, int) and p == user_id else p
            for p in params
        )
        yields = Slot.NAME in mapped and sql.lstrip().upper().startswith("INSERT")
        seen_name = seen_name or yields
        if Slot.USER_ID in mapped and not seen_name:
            raise RuntimeError(f"the user id is used before the user is inserted: {sql!r}")
        steps.append(Step(sql, mapped, yields_user_id=yields))
    if not steps or not steps[0].sql.upper().startswith("BEGIN") or steps[-1].sql != "COMMIT":
        raise RuntimeError(f"the service's create is not one BEGIN..COMMIT: {captured!r}")
    if sum(s.yields_user_id for s in steps) != 1:
        raise RuntimeError(f"expected one INSERT of the user: {captured!r}")
    return tuple(steps)
