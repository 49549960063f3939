"""Everything PostgreSQL-specific, behind the same methods as app/sqlite_backend.py.

- Writes run at READ COMMITTED and let unique indexes settle races: two concurrent creates
  with one Idempotency-Key cannot both insert (the name and the key are unique), and the loser
  looks its key up again and replays the winner's user (app/users.py). SERIALIZABLE was tried
  first: under write-lock pulses its predicate locks failed innocent concurrent creates with
  40001 until some ran out of retries (measured by the resilience report).
- Deadlines are enforced by the server too: every attempt sets `statement_timeout` and
  `lock_timeout` (SET LOCAL: this transaction only) to the remaining budget, and at the
  deadline the running query is cancelled, so nothing keeps running after the 504.
- Errors are classified by SQLSTATE, never by message text.
- `pool_pre_ping` tests a pooled connection before use, so a restarted server does not leave
  dead connections behind; a connection lost mid-call is invalidated by SQLAlchemy and the
  call retried as transient.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from .backend import SPARE_CONNECTIONS
from .connect_deadline import ConnectDeadline
from .errors import (
    DeadlineExceeded,
    IntegrityViolation,
    LockTimeout,
    StorageBug,
    StorageError,
    StorageUnavailable,
    TransientStorageError,
)
from .resilience import Deadline
from .settings import Settings

log = logging.getLogger(__name__)

SERIALIZATION_FAILURE = "40001"
DEADLOCK_DETECTED = "40P01"
LOCK_NOT_AVAILABLE = "55P03"
QUERY_CANCELED = "57014"
# Server going away or refusing: admin_shutdown, crash_shutdown, cannot_connect_now.
_SERVER_GONE = {"57P01", "57P02", "57P03"}


class PostgresBackend:
    name = "postgresql"
    supports_checkpoints = False  # the server checkpoints by itself

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        url = make_url(settings.database_url)
        if url.get_backend_name() != "postgresql":
            raise ValueError(f"not a PostgreSQL URL: {url.get_backend_name()!r}")
        self.url = url
        self._connecting = ConnectDeadline()
        import psycopg

        self.driver_error: type[Exception] = psycopg.Error
        self._operational_error: type[Exception] = psycopg.OperationalError

    def writer_workers(self) -> int:
        # The server admits concurrent writers; serialising them in-process (as for SQLite)
        # would only cap throughput.
        return self.settings.db_read_workers

    def check_version(self, connections: int) -> None:
        # A server that accepts and never answers must not hang the start-up: the same bound
        # as the pools' own connections opened outside a call.
        engine = create_engine(self.url, poolclass=None, hide_parameters=True,
                               connect_args={"connect_timeout": _connect_timeout(
                                   self.settings.db_deadline_s)})
        try:
            with engine.connect() as conn:
                version = conn.execute(text("SHOW server_version")).scalar()
        finally:
            engine.dispose()
        log.info("PostgreSQL %s at %s (%d pooled connections)", version,
                 self.url.render_as_string(hide_password=True), connections)

    def make_engine(self, *, role: str, pool_size: int) -> Engine:
        engine = create_engine(
            self.url,
            pool_size=pool_size,
            max_overflow=SPARE_CONNECTIONS,
            pool_timeout=1.0,
            pool_pre_ping=True,
            hide_parameters=True,
            isolation_level="READ COMMITTED",
        )

        @event.listens_for(engine, "do_connect")
        def _connect_within_deadline(dialect: Any, record: Any, cargs: Any,
                                     cparams: dict[str, Any]) -> None:
            deadline = self._connecting.current
            budget = deadline.remaining() if deadline else self.settings.db_deadline_s
            cparams["connect_timeout"] = _connect_timeout(budget)

        return engine

    def connecting_within(self, deadline: Deadline) -> contextlib.AbstractContextManager[None]:
        """Bound the set-up of a connection opened in this block by `deadline`."""
        return self._connecting.within(deadline)

    def bound_lock_wait(self, seat: Any, deadline: Deadline) -> None:
        """Server-side timeouts for this transaction from the remaining budget (plus a small
        margin, so the client's own deadline answers first and cancels). They are what ends
        the query when the cancel is lost (it is a separate connection to the server).
        statement_timeout alone would end a lock wait too; lock_timeout makes the server's
        log say which one it was. SET LOCAL lasts one transaction, so every attempt sets them
        (and so begins its transaction)."""
        remaining_ms = int(deadline.remaining() * 1000)
        if remaining_ms <= 0:
            raise DeadlineExceeded("the DB call outlived its deadline")
        with seat.dbapi.cursor() as cursor:
            cursor.execute(f"SET LOCAL statement_timeout = {remaining_ms + 25}")
            cursor.execute(f"SET LOCAL lock_timeout = {remaining_ms + 25}")

    def begin_write(self, seat: Any, conn: Connection, deadline: Deadline,
                    abandoned: Callable[[], bool]) -> None:
        """The server-side timeouts bound the lock wait (lock_timeout); a query cancel at the
        deadline ends it sooner, so `abandoned` is not polled here."""
        self.bound_lock_wait(seat, deadline)
        conn.begin()

    def watch(self, dbapi_conn: Any, seat: Any) -> None:
        """Nothing to add: a query that starts after its cancel was sent still ends at the
        attempt's statement_timeout, set from the same deadline."""

    def end_read(self, conn: Connection) -> None:
        """End the read's transaction (psycopg began one at its first statement, the SET
        LOCALs included), so no snapshot is held between calls."""
        conn.commit()
        dbapi_conn = conn.connection.dbapi_connection
        assert dbapi_conn is not None  # checked out: the pool connection holds one
        dbapi_conn.commit()

    def in_transaction(self, dbapi_conn: Any) -> bool:
        import psycopg

        busy: bool = dbapi_conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE
        return busy

    def write_group_limit(self) -> int:
        """One: the server runs this service's writers side by side on their own connections
        (writer_workers), and groups their WAL flushes itself (commit_delay); a group on one
        connection would serialise what the server runs in parallel, and a conflict
        (40001) in one call's savepoint would hold back the others' commit."""
        return 1

    def interrupt(self, dbapi_conn: Any) -> None:
        """Cancel the query running on `dbapi_conn` on the server; safe from any thread."""
        cancel = getattr(dbapi_conn, "cancel_safe", None) or dbapi_conn.cancel
        with contextlib.suppress(Exception):  # closed or broken: nothing left to cancel
            cancel()

    def reset_after_cancel(self, conn: Connection) -> None:
        """Discard the connection: a cancel is a separate request to the server, and one
        sent before the attempt ended may still arrive after it and hit the next query."""
        conn.invalidate()

    def classify(self, exc: DBAPIError, *, cancelled: bool) -> StorageError:
        orig = exc.orig
        state = getattr(orig, "sqlstate", None) or ""
        name = state or type(orig).__name__
        if exc.connection_invalidated or state.startswith("08") or state in _SERVER_GONE:
            return TransientStorageError("the database connection was lost", error_name=name)
        if not state and isinstance(orig, self._operational_error):
            # Raised by libpq before any SQLSTATE exists: the server refused or is unreachable.
            return TransientStorageError("cannot connect to the database", error_name=name)
        if state in (SERIALIZATION_FAILURE, DEADLOCK_DETECTED):
            return TransientStorageError("transaction conflict", error_name=name)
        if state in (LOCK_NOT_AVAILABLE, QUERY_CANCELED):
            if cancelled:
                return DeadlineExceeded("the DB call outlived its deadline", error_name=name)
            if state == LOCK_NOT_AVAILABLE:
                return LockTimeout("a lock was not available in time", error_name=name)
            return StorageBug("query cancelled", error_name=name)
        if state.startswith("23"):
            return IntegrityViolation("constraint violated", error_name=name)
        if state.startswith(("53", "58")):  # insufficient resources, system (I/O) errors
            return StorageUnavailable("the database cannot be used now", error_name=name)
        return StorageBug("database error", error_name=name)

    def wal_bytes(self) -> int:
        return 0  # the server's WAL is its own business

    def checkpoint(self, dbapi_conn: Any) -> Any:
        raise NotImplementedError("PostgreSQL checkpoints by itself")


def _connect_timeout(budget_s: float) -> int:
    """libpq's connect_timeout for a budget: it counts whole seconds and takes anything below
    2 as 2."""
    return max(2, math.ceil(budget_s))
