"""Inject driver errors into a SQLAlchemy engine through its own events.

The error is a real DB-API exception of the engine's driver, carrying the SQLite result code
the service classifies by, so it travels the same path as an error SQLite itself raised:

    with InjectSqlError(engine, "busy", match=r"^INSERT INTO users", times=2) as fault:
        ...                      # the first two INSERTs into users fail with SQLITE_BUSY
    assert fault.injected == 2

Knobs: `at` ("statement": before a matching statement runs; "commit": in place of COMMIT,
after the transaction's statements ran), `match` (regex on the SQL text), `times` (the first N
matching calls; None = every one), `probability` with a seeded `rng`.
"""

from __future__ import annotations

import random
import re
import threading
from dataclasses import dataclass
from types import TracebackType
from typing import Any, cast

from sqlalchemy import Engine, event
from sqlalchemy.exc import DBAPIError


@dataclass(frozen=True)
class ErrorKind:
    dbapi_class: str  # name of the DB-API exception class (SQLite drivers)
    message: str
    errorcode: int | None  # SQLite extended result code, None when SQLite gives none
    errorname: str | None
    sqlstate: str  # the PostgreSQL error of the same meaning (psycopg)


ERROR_KINDS: dict[str, ErrorKind] = {
    # Transient: SQLite's lock errors; PostgreSQL's serialization failure and deadlock.
    "busy": ErrorKind("OperationalError", "database is locked", 5, "SQLITE_BUSY", "40001"),
    "busy_snapshot": ErrorKind(
        "OperationalError", "database is locked", 517, "SQLITE_BUSY_SNAPSHOT", "40P01"
    ),
    "locked": ErrorKind("OperationalError", "database table is locked", 6, "SQLITE_LOCKED",
                        "40001"),
    "no_such_table": ErrorKind("OperationalError", "no such table: users", 1, "SQLITE_ERROR",
                               "42P01"),
    "unique": ErrorKind(
        "IntegrityError", "UNIQUE constraint failed: users.name", 2067,
        "SQLITE_CONSTRAINT_UNIQUE", "23505",
    ),
    "programming": ErrorKind(
        "ProgrammingError", "Incorrect number of bindings supplied", None, None, "42601"
    ),
    "disk_full": ErrorKind("OperationalError", "database or disk is full", 13, "SQLITE_FULL",
                           "53100"),
    "io_error": ErrorKind("OperationalError", "disk I/O error", 10, "SQLITE_IOERR", "58030"),
}


def make_driver_error(dbapi: Any, kind: str) -> Exception:
    """A real exception of the engine's driver: coded as SQLite codes it for pysqlite, the
    class psycopg raises for that SQLSTATE for PostgreSQL."""
    spec = ERROR_KINDS[kind]
    if dbapi.__name__.startswith("psycopg"):
        import psycopg.errors

        return psycopg.errors.lookup(spec.sqlstate)(spec.message)
    error = getattr(dbapi, spec.dbapi_class)(spec.message)
    if spec.errorcode is not None:
        error.sqlite_errorcode = spec.errorcode
        error.sqlite_errorname = spec.errorname
    return cast(Exception, error)


class InjectSqlError:
    """Raise `kind` from `engine`'s events while active; counts what it injected."""

    def __init__(
        self,
        engine: Engine,
        kind: str,
        *,
        at: str = "statement",
        match: str | None = None,
        times: int | None = None,
        probability: float = 1.0,
        rng: random.Random | None = None,
    ) -> None:
        if kind not in ERROR_KINDS:
            raise ValueError(f"unknown error kind {kind!r}; known: {sorted(ERROR_KINDS)}")
        if at not in ("statement", "commit"):
            raise ValueError("at must be 'statement' or 'commit'")
        if probability < 1.0 and rng is None:
            raise ValueError("a probability needs a seeded rng, so a failure can be replayed")
        self.engine = engine
        self.kind = kind
        self.at = at
        self.pattern = re.compile(match, re.IGNORECASE) if match else None
        self.times = times
        self.probability = probability
        self.rng = rng
        self.injected = 0  # errors raised so far
        self.seen = 0  # matching calls seen so far
        self._lock = threading.Lock()

    def __enter__(self) -> InjectSqlError:
        target = "before_cursor_execute" if self.at == "statement" else "commit"
        listener = self._before_statement if self.at == "statement" else self._at_commit
        event.listen(self.engine, target, listener)
        self._listener = (target, listener)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        target, listener = self._listener
        event.remove(self.engine, target, listener)

    def _fire(self) -> bool:
        with self._lock:
            self.seen += 1
            if self.times is not None and self.injected >= self.times:
                return False
            if self.probability < 1.0 and self.rng.random() >= self.probability:  # type: ignore[union-attr]
                return False
            self.injected += 1
            return True

    def _before_statement(self, conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if self.pattern is not None and not self.pattern.search(statement):
            return
        if self._fire():
            # Raised inside SQLAlchemy's execute: it arrives wrapped, as a real error would.
            raise make_driver_error(self.engine.dialect.loaded_dbapi, self.kind)

    def _at_commit(self, conn: Any) -> None:
        if self._fire():
            dbapi = self.engine.dialect.loaded_dbapi
            # The commit event runs outside SQLAlchemy's error wrapping: wrap it here the way
            # SQLAlchemy wraps a failed COMMIT.
            raise DBAPIError.instance(
                "COMMIT", None, make_driver_error(dbapi, self.kind), dbapi.Error
            )
