"""The seam between the database layer (app/db.py) and a database: one declared interface.

`Database` talks to SQLite (app/sqlite_backend.py) and PostgreSQL (app/postgres_backend.py)
through these methods only, as httpx talks to its transports through `BaseTransport`. What
differs per backend is data or a policy here, never a branch in the callers:

- connection set-up per role: the engine's connect hook only runs what the backend lists
  (`SqliteBackend.connection_pragmas`); the writer's, reader's and maintenance's BEGIN differ;
- lane policy: how many writers (`writer_workers`) and how many writes share one transaction
  (`write_group_limit`: group commit on SQLite, one per transaction on PostgreSQL);
- maintenance: `supports_checkpoints` says whether the service checkpoints this database
  at all (SQLite: yes; PostgreSQL checkpoints by itself), and `checkpoint` is what `Database`
  runs on its own lane and connection.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Protocol

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from .errors import StorageError
from .resilience import CallHandle, Deadline

# Connections an engine opens beyond its workers' own, which each worker holds for its life:
# for tools and tests that open one beside them, never for a request.
SPARE_CONNECTIONS = 2


class SeatView(Protocol):
    """What a backend may read and set on a worker's seat (app/db.py `Seat`)."""

    handle: CallHandle | None
    busy_ms: int

    @property
    def dbapi(self) -> Any: ...


class Backend(Protocol):
    name: str
    driver_error: type[Exception]
    supports_checkpoints: bool

    # -- start-up
    def writer_workers(self) -> int:
        """Writer threads (each with its own connection)."""

    def write_group_limit(self) -> int:
        """Writes committed in one transaction at most."""

    def check_version(self, connections: int) -> None:
        """Refuse to start on a server or library this service cannot run safely on."""

    def make_engine(self, *, role: str, pool_size: int) -> Engine:
        """An engine whose connections are set up for `role`: writer, reader, maintenance."""

    # -- per call (worker threads)
    def connecting_within(self, deadline: Deadline) -> contextlib.AbstractContextManager[None]:
        """Bound the set-up of a connection opened in this block by `deadline`."""

    def bound_lock_wait(self, seat: SeatView, deadline: Deadline) -> None:
        """Make every lock wait of the seat's next transaction end just past `deadline`."""

    def begin_write(self, seat: SeatView, conn: Connection, deadline: Deadline,
                    abandoned: Callable[[], bool]) -> None:
        """Begin a write transaction on the seat's connection `conn`, its lock wait ending
        just past `deadline` (the latest of the group's) or once `abandoned()`."""

    def watch(self, dbapi_conn: Any, seat: SeatView) -> None:
        """Once per connection: let the database stop the seat's cancelled call by itself."""

    def end_read(self, conn: Connection) -> None:
        """End what a read left open (a transaction, a snapshot), if anything."""

    def in_transaction(self, dbapi_conn: Any) -> bool:
        """The driver's view: is a transaction open on this connection now?"""

    def interrupt(self, dbapi_conn: Any) -> None:
        """Stop the statement running on `dbapi_conn`; safe from any thread."""

    def reset_after_cancel(self, conn: Connection) -> None:
        """Make sure a cancel sent to a finished call cannot act on the connection's next."""

    def classify(self, exc: DBAPIError, *, cancelled: bool) -> StorageError:
        """The service's error for a driver error (by code, never by message)."""

    # -- maintenance
    def checkpoint(self, dbapi_conn: Any) -> Any:
        """One checkpoint on the maintenance connection (only if `supports_checkpoints`);
        returns what it did, with its `lag_frames`."""

    def wal_bytes(self) -> int:
        """Size of the write-ahead log the service is responsible for (0: none)."""
