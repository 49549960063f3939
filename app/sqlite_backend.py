"""Everything SQLite-specific: driver, version gate, pragmas, BEGIN, interrupt, error codes.

The rest of the service talks to this module through `SqliteBackend`'s methods only, so a
PostgreSQL backend can stand beside it with the same shape.

Facts this rests on (sqlite.org; SQLAlchemy's SQLite dialect docs; ../shared/notes):
- pysqlite's own implicit BEGIN is turned off (`isolation_level = None`) and BEGIN is emitted in
  SQLAlchemy's `begin` event ("Enabling Non-Legacy SQLite Transactional Modes"). Writes use
  `BEGIN IMMEDIATE`: a deferred transaction that read first and then writes fails at once with
  SQLITE_BUSY_SNAPSHOT when another writer committed meanwhile, without the busy handler ever
  waiting (c3ref/busy_handler.html).
- `interrupt()` stops a running statement but not a wait in the busy handler, so lock waits are
  bounded from outside it: a reader's by setting `busy_timeout` to the remaining budget, the
  writer's by waiting for the write lock in short busy waits (`begin_write`).
- Errors are classified by the primary result code (rescode.html), never by message text.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import QueuePool

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

# Primary result codes (sqlite.org/rescode.html); extended codes keep them in the low byte.
SQLITE_ERROR = 1
SQLITE_BUSY = 5
SQLITE_LOCKED = 6
SQLITE_NOMEM = 7
SQLITE_READONLY = 8
SQLITE_INTERRUPT = 9
SQLITE_IOERR = 10
SQLITE_CORRUPT = 11
SQLITE_FULL = 13
SQLITE_CANTOPEN = 14
SQLITE_PROTOCOL = 15
SQLITE_SCHEMA = 17
SQLITE_CONSTRAINT = 19
SQLITE_NOTADB = 26

_TRANSIENT = {SQLITE_LOCKED, SQLITE_SCHEMA}
_UNAVAILABLE = {
    SQLITE_NOMEM, SQLITE_READONLY, SQLITE_IOERR, SQLITE_FULL, SQLITE_CANTOPEN, SQLITE_PROTOCOL
}

# How long a busy wait may outlast its call's deadline (see bound_lock_wait).
LOCK_WAIT_MARGIN_MS = 25
# How far past that a busy timeout already set on a connection may end before it is set anew.
LOCK_WAIT_SLACK_MS = 100
# Writes committed in one transaction at most (group commit).
WRITE_GROUP_LIMIT = 64
# SQLite's default busy handler sleeps in growing steps of 1, 2, 5, 10, 15, 20, 25, 25, 25, 50,
# 50 and then 100 ms (sqliteDefaultBusyCallback), so one long busy wait notices a released lock
# up to a step late: measured on 3.53.4, a write lock another process held for 150-200 ms was
# taken 29 ms after its release, one held for 250 ms 79 ms after. The writer waits for its
# lock in busy waits this short instead, whose longest step is 10 ms.
LOCK_POLL_MS = 20
# What each role's transactions begin with. Writers: IMMEDIATE (see the module docstring).
# Readers: nothing. In autocommit each SELECT is its own read transaction with its own WAL
# snapshot, and the service's reads are single statements. Maintenance works outside any
# transaction (checkpoints).
BEGIN_SQL = {"writer": "BEGIN IMMEDIATE", "reader": None, "maintenance": None}
_JOURNAL_MODE = "WAL"
# Virtual-machine steps between two looks at a call's cancel flag (see SqliteBackend.watch);
# a primary-key read takes a few dozen.
PROGRESS_OPCODES = 1000

# The WAL-reset bug: two connections, a checkpoint racing a commit, can corrupt the database.
# Present from 3.7.0 (WAL's introduction) and fixed in 3.51.3.
WAL_RESET_BUG_FIRST = (3, 7, 0)
WAL_RESET_BUG_FIXED = (3, 51, 3)


class UnsafeSqliteVersion(RuntimeError):
    """Refusal to start WAL with several connections on an SQLite with the WAL-reset bug."""


def has_wal_reset_bug(version: tuple[int, ...]) -> bool:
    return WAL_RESET_BUG_FIRST <= tuple(version[:3]) < WAL_RESET_BUG_FIXED


def load_driver(name: str) -> ModuleType:
    """The DB-API module: "pysqlite3" (bundled current SQLite) or "sqlite3" (the system's)."""
    return importlib.import_module("pysqlite3.dbapi2" if name == "pysqlite3" else "sqlite3")


@dataclass(frozen=True)
class CheckpointResult:
    mode: str
    busy: bool
    wal_frames: int
    checkpointed_frames: int

    @property
    def lag_frames(self) -> int:
        return max(0, self.wal_frames - self.checkpointed_frames)


class SqliteBackend:
    name = "sqlite"
    supports_checkpoints = True

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # The deadline of the call whose worker is opening a connection, if any: a new
        # connection's set-up pragmas may wait on a lock too (see connecting_within).
        self._connecting = ConnectDeadline()
        self.driver = load_driver(settings.sqlite_driver)
        self.driver_error: type[Exception] = self.driver.Error
        self.version: tuple[int, ...] = tuple(self.driver.sqlite_version_info)
        url = make_url(settings.database_url)
        if url.get_backend_name() != "sqlite":
            raise ValueError(
                f"DATABASE_URL must be an sqlite:/// URL; {url.get_backend_name()!r} is not "
                "supported by this backend"
            )
        database = url.database
        if not database or database == ":memory:" or database.startswith("file:"):
            raise ValueError(
                "DATABASE_URL must name an SQLite file: WAL needs a file shared by the "
                f"service's connections (got {settings.database_url!r})"
            )
        self.path = Path(database).resolve()
        # SQLAlchemy engine plugins named in the URL (`?plugin=...`, CreateEnginePlugin) are
        # honoured, e.g. the fault toolkit's; any other query parameter is not passed on.
        self.plugins = {"plugin": url.query["plugin"]} if "plugin" in url.query else {}

    # -- start-up ------------------------------------------------------------------------

    def writer_workers(self) -> int:
        """One: SQLite admits one writer at a time, and writers of this process queued on
        one thread never wait for each other in SQLite's busy handler (which sleeps in
        growing steps); busy waits then come only from other processes."""
        return 1

    def check_version(self, connections: int) -> None:
        version = ".".join(map(str, self.version))
        log.info("SQLite %s via %s at %s", version, self.settings.sqlite_driver, self.path)
        if connections > 1 and has_wal_reset_bug(self.version):
            message = (
                f"SQLite {version} has the WAL-reset corruption bug (3.7.0 to 3.51.2, fixed in "
                f"3.51.3) and this service runs WAL with {connections} connections"
            )
            if not self.settings.sqlite_allow_affected_version:
                raise UnsafeSqliteVersion(
                    f"{message}. Use SQLITE_DRIVER=pysqlite3 (bundles a fixed SQLite) or set "
                    "SQLITE_ALLOW_AFFECTED_VERSION=true to run anyway."
                )
            log.warning("%s; running anyway (SQLITE_ALLOW_AFFECTED_VERSION=true)", message)

    def make_engine(self, *, role: str, pool_size: int) -> Engine:
        """An engine whose connections carry the service's pragmas; `role` is "writer"
        (BEGIN IMMEDIATE), "reader" (deferred BEGIN: a snapshot, never a write lock) or
        "maintenance" (checkpoints)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            make_url(f"sqlite:///{self.path}").update_query_dict(self.plugins),
            module=self.driver,
            poolclass=QueuePool,
            pool_size=pool_size,
            # Each worker holds one pooled connection for its life; the overflow is for tools
            # and tests that open one of their own beside them, never for a request.
            max_overflow=SPARE_CONNECTIONS,
            pool_timeout=1.0,
            # Parameters (names, password hashes) never appear in error messages or logs.
            hide_parameters=True,
            connect_args={"check_same_thread": False},
        )
        begin_sql = BEGIN_SQL[role]

        @event.listens_for(engine, "connect")
        def _configure(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # the driver must not BEGIN on its own
            deadline = self._connecting.current
            if deadline is None:
                busy_ms = self.settings.sqlite_busy_timeout_ms
            else:
                busy_ms = int(deadline.remaining() * 1000) + LOCK_WAIT_MARGIN_MS
            for name, value in self.connection_pragmas(busy_ms):
                row = dbapi_conn.execute(f"PRAGMA {name} = {value}").fetchone()
                if name == "journal_mode" and str(row[0]).upper() != value:
                    raise StorageUnavailable(
                        f"could not enable {value} (journal_mode is {row[0]!r})")

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            # Nothing when the driver's transaction is open already: begin_write emitted it.
            if begin_sql and not conn.connection.dbapi_connection.in_transaction:
                conn.exec_driver_sql(begin_sql)

        return engine

    def connection_pragmas(self, busy_timeout_ms: int) -> list[tuple[str, str]]:
        """The PRAGMAs every connection runs once, in order, when it is opened, as (name,
        value): the same for every role (what differs per role is BEGIN_SQL). Data rather
        than SQL, so the power-loss simulation (app/crash_service.py) writes with exactly
        these settings without reading them back out of statements."""
        settings = self.settings
        pragmas = [
            ("busy_timeout", str(busy_timeout_ms)),
            ("journal_mode", _JOURNAL_MODE),
            ("synchronous", settings.sqlite_synchronous),
            ("foreign_keys", "ON"),
            ("journal_size_limit", str(settings.sqlite_journal_size_limit_bytes)),
        ]
        if settings.sqlite_checkpoint_interval_s > 0:
            # The service checkpoints from its maintenance thread; an automatic checkpoint
            # would run inside some request's COMMIT, fsyncs and all
            # (sqlite.org/wal.html#application_initiated_checkpoints).
            pragmas.append(("wal_autocheckpoint", "0"))
        return pragmas

    def write_group_limit(self) -> int:
        """Writes committed together at most (group commit on the one writer lane)."""
        return WRITE_GROUP_LIMIT

    # -- per attempt ---------------------------------------------------------------------

    def connecting_within(self, deadline: Deadline) -> contextlib.AbstractContextManager[None]:
        """Bound the set-up of a connection opened in this block by `deadline`."""
        return self._connecting.within(deadline)

    def bound_lock_wait(self, seat: Any, deadline: Deadline) -> None:
        """Let the busy handler wait for a lock no longer than the call's remaining budget (a
        reader's or maintenance's: in WAL they meet a lock only in rare cases, such as another
        process in exclusive locking mode; the writer waits in begin_write).

        The wait ends a little after the deadline, not before it: the event loop answers 504
        at the deadline, and a busy wait that gave up a few ms early would turn that into a
        503 for an exhausted retry budget instead. The PRAGMA runs only when the bound must
        change: the timeout already set on the connection is kept while it ends the wait
        between LOCK_WAIT_MARGIN_MS and LOCK_WAIT_MARGIN_MS + LOCK_WAIT_SLACK_MS past this
        deadline (calls with the same budget queue for about the same time).
        """
        remaining_ms = int(deadline.remaining() * 1000)
        if remaining_ms <= 0:
            raise DeadlineExceeded("the DB call outlived its deadline")
        low = remaining_ms + LOCK_WAIT_MARGIN_MS
        if low <= seat.busy_ms <= low + LOCK_WAIT_SLACK_MS:
            return
        seat.busy_ms = low + LOCK_WAIT_SLACK_MS // 2
        seat.dbapi.execute(f"PRAGMA busy_timeout = {seat.busy_ms}")

    def begin_write(self, seat: Any, conn: Connection, deadline: Deadline,
                    abandoned: Callable[[], bool]) -> None:
        """BEGIN IMMEDIATE, waiting for the write lock while the group still wants it.

        The wait is a series of busy waits of LOCK_POLL_MS, so a released lock is taken
        within 10 ms instead of up to 100 ms late (see LOCK_POLL_MS), and it ends as soon as
        `abandoned()` says every call of the group is cancelled or past its deadline (the
        latest of which is `deadline`): the 504s are the event loop's, and a client who has
        gone stops the wait at once rather than at a busy timeout.
        """
        if deadline.expired:
            raise DeadlineExceeded("the DB call outlived its deadline")
        if seat.busy_ms != LOCK_POLL_MS:
            seat.dbapi.execute(f"PRAGMA busy_timeout = {LOCK_POLL_MS}")
            seat.busy_ms = LOCK_POLL_MS
        while True:
            try:
                seat.dbapi.execute(BEGIN_SQL["writer"])
                break
            except self.driver.OperationalError as exc:
                if getattr(exc, "sqlite_errorcode", 0) & 0xFF != SQLITE_BUSY:
                    raise
                if abandoned():
                    raise DeadlineExceeded("the DB call outlived its deadline") from exc
        conn.begin()  # SQLAlchemy's side only: the begin event sees SQLite's transaction

    def watch(self, dbapi_conn: Any, seat: Any) -> None:
        """Stop a call's statements from inside SQLite once the call is cancelled.

        An interrupt can be lost: SQLite clears the interrupt flag when a statement starts on
        a connection running none (c3ref/interrupt.html: an interrupt while no statement
        runs "is a no-op"). A cancel landing between the service's before-statement check
        and the statement's start would let that statement run to its end, past the
        deadline (seen as a lane held for a long statement's whole length). A progress
        handler, installed once per connection, reads the sticky cancel flag of the call on
        the seat every PROGRESS_OPCODES virtual-machine steps: a long statement stops soon
        after the cancel, whenever it came; a short one never reaches the handler and pays
        nothing.
        """
        def cancelled() -> bool:
            handle = seat.handle
            return handle is not None and handle.cancelled

        dbapi_conn.set_progress_handler(cancelled, PROGRESS_OPCODES)

    def end_read(self, conn: Connection) -> None:
        """Nothing: a reader runs in autocommit, so each statement was its own snapshot."""

    def in_transaction(self, dbapi_conn: Any) -> bool:
        return bool(dbapi_conn.in_transaction)

    def interrupt(self, dbapi_conn: Any) -> None:
        """Stop the statement running on `dbapi_conn`; safe from any thread."""
        with contextlib.suppress(self.driver.ProgrammingError):  # closed: nothing runs
            dbapi_conn.interrupt()

    def reset_after_cancel(self, conn: Connection) -> None:
        """Clear an interrupt left on the connection by a cancelled attempt.

        sqlite3_interrupt() sets a flag that only the start of the connection's next
        statement clears. Until then the flag stays set, and closing the connection runs its
        last checkpoint with the flag up: the checkpoint stops as interrupted and the -wal
        file outlives a clean shutdown (measured with pysqlite3's SQLite 3.53.4; it was the
        durability suite's "WAL outlived a clean stop" flake: a shutdown cancelled a running
        checkpoint). One trivial statement clears it; a connection that cannot run one is
        discarded.
        """
        try:
            # Checked out, so the pool connection holds its driver connection.
            assert conn.connection.dbapi_connection is not None
            conn.connection.dbapi_connection.execute("SELECT 1").fetchall()
        except self.driver_error:
            conn.invalidate()

    def classify(self, exc: DBAPIError, *, cancelled: bool) -> StorageError:
        """Map a driver error to the service's error tree by SQLite result code."""
        orig = exc.orig
        code = getattr(orig, "sqlite_errorcode", None)
        name = getattr(orig, "sqlite_errorname", None) or type(orig).__name__
        if code is None:
            if isinstance(orig, self.driver.IntegrityError):
                return IntegrityViolation("constraint violated", error_name=name)
            return StorageBug(f"{type(orig).__name__} from the database", error_name=name)
        primary = code & 0xFF
        if primary == SQLITE_BUSY:
            return LockTimeout("the database is locked by another connection", error_name=name)
        if primary in _TRANSIENT:
            return TransientStorageError("transient database error", error_name=name)
        if primary == SQLITE_INTERRUPT:
            if cancelled:
                return DeadlineExceeded("the DB call outlived its deadline", error_name=name)
            return StorageBug("statement interrupted", error_name=name)
        if primary == SQLITE_CONSTRAINT:
            return IntegrityViolation("constraint violated", error_name=name)
        if primary in _UNAVAILABLE:
            return StorageUnavailable("the database cannot be used now", error_name=name)
        return StorageBug("database error", error_name=name)

    # -- WAL upkeep ----------------------------------------------------------------------

    @property
    def wal_path(self) -> Path:
        return self.path.with_name(self.path.name + "-wal")

    def wal_bytes(self) -> int:
        try:
            return os.stat(self.wal_path).st_size
        except FileNotFoundError:
            return 0

    def checkpoint(self, dbapi_conn: Any) -> CheckpointResult:
        """PASSIVE checkpoint normally (never waits for readers or writers); TRUNCATE once the
        WAL is past the journal size limit, e.g. after a long reader pinned a snapshot."""
        limit = self.settings.sqlite_journal_size_limit_bytes
        mode = "TRUNCATE" if self.wal_bytes() > limit else "PASSIVE"
        if mode == "TRUNCATE":
            # TRUNCATE takes the WAL's write lock and then waits in the busy handler for
            # readers to move on: every write would wait behind it for as long as a reader
            # pins an old snapshot. Without a busy wait it tries once, and the next tick
            # tries again (found by tests/durability/test_checkpoint_starvation.py).
            dbapi_conn.execute("PRAGMA busy_timeout = 0")
        busy, log_frames, done = dbapi_conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
        return CheckpointResult(mode, bool(busy), log_frames, done)
