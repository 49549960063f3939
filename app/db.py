"""The only path from a request to the database.

A DB call is a sync unit of work (a function of a SQLAlchemy Core `Connection`) that runs on
a worker lane: one writer thread with one connection, so this process's writers never fight
each other in SQLite's busy handler, and a few reader threads with one connection each (WAL
lets readers run beside the writer). Each worker holds its connection for its life. The event
loop only waits on the result, until the call's deadline:

    handler -> Database.write/read -> WorkerLane.submit (503 at once when full)
            -> await_until(deadline) -> 504 at the deadline
               worker thread, per wake-up, every call waiting (up to a bound):
                 reads:  bound the lock wait if it must change, work(conn)  (autocommit)
                 writes: BEGIN IMMEDIATE, per call SAVEPOINT work(conn) RELEASE, one COMMIT
            <- one callback into the event loop settles the batch's futures
    a transient error -> RetryPolicy (tenacity; whole transactions, transient errors only)
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar, cast

from sqlalchemy import Connection, Engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from .backend import Backend
from .errors import (
    ClientGone,
    DeadlineExceeded,
    IntegrityViolation,
    LockTimeout,
    QueueFull,
    RetriesExhausted,
    StorageError,
    StorageUnavailable,
    TransientStorageError,
)
from .metrics import Metrics
from .models import Base
from .postgres_backend import PostgresBackend
from .resilience import (
    CallHandle,
    Deadline,
    LaneCall,
    RetryPolicy,
    WorkerLane,
    await_until,
    run_each_with,
)
from .settings import Settings
from .sqlite_backend import SqliteBackend

log = logging.getLogger(__name__)

T = TypeVar("T")
ConnectionWork = Callable[[Connection], T]

_HANDLE_KEY = "call_handle"
# Point reads handed to a reader thread per wake-up, at most.
READ_BATCH_LIMIT = 32
# One savepoint name serves every call of a group: each is released (or rolled back and
# released) before the next call's begins.
_SAVEPOINT = "SAVEPOINT group_call"
_RELEASE = "RELEASE SAVEPOINT group_call"
_ROLLBACK_TO = "ROLLBACK TO SAVEPOINT group_call"


class Seat:
    """One worker's connection, held for the worker's life (no checkout per call), and what
    the worker knows about it: the call running on it now (read by the connection's progress
    handler) and the busy timeout last set on it (so the PRAGMA runs only when the bound must
    change)."""

    __slots__ = ("busy_ms", "conn", "engine", "handle")

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.conn: Connection | None = None
        self.handle: CallHandle | None = None
        self.busy_ms = -1

    @property
    def dbapi(self) -> Any:
        assert self.conn is not None
        return self.conn.connection.dbapi_connection


class Database:
    """Engines, lanes and the retry policy of one app instance."""

    def __init__(self, settings: Settings, metrics: Metrics, retry: RetryPolicy) -> None:
        self.settings = settings
        self.metrics = metrics
        self.retry = retry
        self.backend: Backend = make_backend(settings)
        readers = settings.db_read_workers
        writers = self.backend.writer_workers()
        self.backend.check_version(connections=writers + readers + 1)
        queue = settings.db_queue_limit
        # Checkpoints get their own thread and connection: a slow checkpoint (its fsyncs, or
        # a TRUNCATE waiting for readers) must not hold up the writer lane.
        self.writer_engine = self.backend.make_engine(role="writer", pool_size=writers)
        self.reader_engine = self.backend.make_engine(role="reader", pool_size=readers)
        self.maintenance_engine = self.backend.make_engine(role="maintenance", pool_size=1)
        self._seats: dict[str, list[Seat]] = {
            "writer": [Seat(self.writer_engine) for _ in range(writers)],
            "reader": [Seat(self.reader_engine) for _ in range(readers)],
            "maintenance": [Seat(self.maintenance_engine)],
        }
        self.writer = WorkerLane("writer", writers, queue,
                                 batch_limit=self.backend.write_group_limit(),
                                 run_batch=self._run_writes)
        self.readers = WorkerLane("reader", readers, queue,
                                  batch_limit=READ_BATCH_LIMIT, run_batch=self._run_reads)
        self.maintenance = WorkerLane("maintenance", 1, 0, run_batch=self._run_maintenance)
        self._lanes = ((self.writer, self.writer_engine), (self.readers, self.reader_engine),
                       (self.maintenance, self.maintenance_engine))
        for _, engine in self._lanes:
            event.listen(engine, "before_cursor_execute", _stop_if_cancelled)
        # Interrupts are sent from here, off the event loop (await_until). Its one thread is
        # started now, so it is part of the steady state, not a thread that appears later.
        self.interrupter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="db-interrupt")
        self.interrupter.submit(lambda: None).result()
        for lane, _ in self._lanes:
            metrics.watch_lane(lane.name, lane.workers, lane.capacity - lane.workers,
                               _reading(lane, "queued"), _reading(lane, "running"))
        if self.backend.supports_checkpoints:
            metrics.watch_wal(self.backend.wal_bytes, settings.sqlite_journal_size_limit_bytes,
                              settings.sqlite_checkpoint_interval_s)
        self._call_series: dict[tuple[str, str], tuple[Any, Any]] = {}

    @classmethod
    def open(cls, settings: Settings, metrics: Metrics, retry: RetryPolicy) -> Database:
        db = cls(settings, metrics, retry)
        try:
            Base.metadata.create_all(db.writer_engine)
            db._open_seats()
        except BaseException:
            db.close()
            raise
        return db

    @property
    def serialises_writes(self) -> bool:
        """True when this process's writes run one at a time (SQLite's single writer lane):
        two writes can then never race between one's key lookup and its insert."""
        return self.writer.workers == 1

    @property
    def engines(self) -> tuple[Engine, ...]:
        return tuple(engine for _, engine in self._lanes)

    def _open_seats(self) -> None:
        """Open every worker's connection now, so no request pays for (or waits on a lock in)
        the connection's set-up pragmas."""
        for seats in self._seats.values():
            for seat in seats:
                self._connect(seat, None)

    def close(self) -> None:
        for lane, _ in getattr(self, "_lanes", ()):
            lane.shutdown(wait=True)
        self.close_connections()
        if hasattr(self, "interrupter"):
            self.interrupter.shutdown(wait=True)

    def close_connections(self) -> None:
        """Close every worker's connection (and the pools' spares); each worker opens a new
        one at its next call, within that call's deadline, as after a lost connection. Only
        while the lanes are idle (shutdown, or a test emptying the pools)."""
        for lane, _ in getattr(self, "_lanes", ()):
            assert lane.running == 0, f"the {lane.name} lane is busy"
        for seats in getattr(self, "_seats", {}).values():
            for seat in seats:
                if seat.conn is not None:
                    with contextlib.suppress(Exception):  # closing: nothing left to save
                        seat.conn.close()
                    seat.conn = None
        for _, engine in getattr(self, "_lanes", ()):
            engine.dispose()

    # -- calls (event loop) --------------------------------------------------------------

    async def write(
        self, operation: str, work: ConnectionWork[T], deadline: Deadline | None = None
    ) -> T:
        """Run `work(connection)` in a write transaction on the writer lane; it is committed
        (with whatever other writes waited beside it, each in its own savepoint) before this
        returns."""
        return await self._call(operation, self.writer, work, deadline)

    async def read(
        self, operation: str, work: ConnectionWork[T], deadline: Deadline | None = None
    ) -> T:
        """Run `work(connection)` on a reader lane. On SQLite each statement is its own
        snapshot (autocommit: a single-statement read needs no BEGIN/COMMIT in WAL)."""
        return await self._call(operation, self.readers, work, deadline)

    async def ping(self, deadline: Deadline) -> None:
        await self.read("ping", _select_one, deadline)

    async def checkpoint(self) -> None:
        """Run the backend's checkpoint policy on the maintenance lane and record its lag."""
        if not self.backend.supports_checkpoints:
            return
        deadline = Deadline.after(self.settings.db_deadline_s)
        result = await self._call("checkpoint", self.maintenance, self.backend.checkpoint,
                                  deadline)
        self.metrics.record_checkpoint(result.lag_frames)

    async def _call(
        self, operation: str, lane: WorkerLane, work: Callable[[Any], T],
        deadline: Deadline | None,
    ) -> T:
        deadline = deadline or Deadline.after(self.settings.db_deadline_s)
        started = time.monotonic()
        outcome = "error"
        retries = 0

        def count_retry(_exc: BaseException) -> None:
            nonlocal retries
            retries += 1

        try:
            try:
                try:
                    result = await self._attempt(operation, lane, work, deadline)
                except TransientStorageError as first:
                    # Only now does the retry machinery start: the success path has none.
                    result = await self._retry(operation, lane, work, deadline, first,
                                               count_retry)
            except TransientStorageError as exc:
                if deadline.expired:
                    # The last attempt's lock wait ran to its bound, just past the deadline,
                    # before the loop's own timeout fired (a busy loop): the honest answer
                    # is the deadline's, as if the loop had been on time.
                    raise DeadlineExceeded("the DB call outlived its deadline",
                                           error_name=exc.error_name) from exc
                raise RetriesExhausted(
                    "transient database errors outlasted the retry budget",
                    error_name=exc.error_name,
                ) from exc
            outcome = "ok"
            return result
        except ClientGone:
            outcome = "client_gone"
            raise
        except StorageError as exc:
            outcome = _OUTCOMES.get(type(exc), "error")
            if isinstance(exc, DeadlineExceeded):
                self.metrics.db_timeouts.labels(operation).inc()
            raise
        finally:
            if retries:
                self.metrics.db_retries.labels(operation, outcome).inc(retries)
            calls, seconds = self._series(operation, outcome)
            calls.inc()
            seconds.observe(time.monotonic() - started)

    async def _attempt(self, operation: str, lane: WorkerLane, work: Callable[[Any], T],
                       deadline: Deadline) -> T:
        call = lane.submit(work, CallHandle(deadline))
        budget = self.retry.budget
        try:
            result: T = await await_until(call, self.interrupter)
        except TransientStorageError as exc:
            self._count_transient(operation, exc)
            if budget is not None:
                budget.record(succeeded=False)
            raise
        if budget is not None:
            budget.record(succeeded=True)
        return result

    async def _retry(self, operation: str, lane: WorkerLane, work: Callable[[Any], T],
                     deadline: Deadline, first: TransientStorageError,
                     on_retry: Callable[[BaseException], None]) -> T:
        """Attempts after a transient error, under the retry policy (tenacity). The policy's
        first attempt is the one that already failed: it re-raises that error, so attempt
        counts, backoff and the stop rule are exactly the policy's."""
        failed: TransientStorageError | None = first
        def denied() -> None:
            self.metrics.db_retries_denied.labels(operation).inc()

        async for attempt in self.retry.retrying(deadline, on_retry, denied):
            with attempt:
                if failed is not None:
                    error, failed = failed, None
                    raise error
                return await self._attempt(operation, lane, work, deadline)
        raise AssertionError("unreachable: tenacity reraises the last error")

    # -- attempts (worker threads) -------------------------------------------------------

    def _run_reads(self, worker: int, calls: list[LaneCall]) -> None:
        seat = self._seats["reader"][worker]
        run_each_with(calls, lambda call: self._read_on(seat, call.handle, call.fn))

    def _run_maintenance(self, worker: int, calls: list[LaneCall]) -> None:
        seat = self._seats["maintenance"][worker]
        run_each_with(calls, lambda call: self._maintain_on(seat, call.handle, call.fn))

    def _read_on(self, seat: Seat, handle: CallHandle, work: Callable[[Any], T]) -> T:
        handle.raise_if_cancelled()  # dropped at its deadline while still queued
        conn = self._connection(seat, handle.deadline)
        self._attach(seat, conn, handle)
        try:
            self.backend.bound_lock_wait(seat, handle.deadline)
            result = work(conn)
            self.backend.end_read(conn)
            return result
        except DBAPIError as exc:
            self._rollback(seat)
            raise self.backend.classify(exc, cancelled=handle.stopping) from exc
        except BaseException:
            self._rollback(seat)
            raise
        finally:
            self._detach(seat, conn, handle)

    def _maintain_on(self, seat: Seat, handle: CallHandle, work: Callable[[Any], T]) -> T:
        """Work on the driver's connection itself, outside any transaction (a checkpoint)."""
        handle.raise_if_cancelled()
        conn = self._connection(seat, handle.deadline)
        self._attach(seat, conn, handle)
        try:
            self.backend.bound_lock_wait(seat, handle.deadline)
            try:
                return work(seat.dbapi)
            finally:
                seat.busy_ms = -1  # the work may have set its own busy timeout
        except self.backend.driver_error as exc:
            # Raised by the driver directly, outside SQLAlchemy: wrapped as SQLAlchemy would,
            # so it is classified like any other.
            # A driver error always comes back as a DBAPIError (typed as StatementError).
            wrapped = cast(DBAPIError, DBAPIError.instance(None, None, exc,
                                                           self.backend.driver_error))
            raise self.backend.classify(wrapped, cancelled=handle.stopping) from exc
        except DBAPIError as exc:
            raise self.backend.classify(exc, cancelled=handle.stopping) from exc
        finally:
            self._detach(seat, conn, handle)

    def _run_writes(self, worker: int, calls: list[LaneCall]) -> None:
        """Group commit: the writes that waited together run in one transaction, each in its
        own savepoint, and are acknowledged only after the COMMIT that holds them."""
        seat = self._seats["writer"][worker]
        while calls:
            calls = self._commit_group(seat, calls, worker)

    def _commit_group(self, seat: Seat, calls: list[LaneCall], worker: int) -> list[LaneCall]:
        """One transaction for `calls`; returns the calls to run again in a fresh one (their
        work was lost with a transaction another call's failure ended)."""
        live = []
        for call in calls:
            if call.start():  # not withdrawn meanwhile
                if call.handle.stopping:  # its deadline passed while it waited
                    call.fail(DeadlineExceeded("the DB call outlived its deadline"))
                else:
                    live.append(call)
        if not live:
            return []
        # The lock wait lasts while a call of the group still wants its answer, so until the
        # latest deadline at most: each earlier one gets its 504 from the event loop at its
        # own deadline and is left out before COMMIT.
        group = Deadline(max(call.handle.deadline.at for call in live))
        try:
            conn = self._connection(seat, group)
            with self.writer.waiting_for_lock(worker):
                self.backend.begin_write(
                    seat, conn, group, lambda: all(call.handle.stopping for call in live))
        except BaseException as exc:
            self._fail_all(seat, live, exc)
            return []
        savepoints = len(live) > 1
        done: list[tuple[LaneCall, Any]] = []
        for index, call in enumerate(live):
            handle = call.handle
            if handle.stopping:
                call.fail(DeadlineExceeded("the DB call outlived its deadline"))
                continue
            self._attach(seat, conn, handle)
            error: BaseException | None = None
            try:
                # Savepoints go to the driver directly: they are this layer's own
                # bookkeeping, not the call's work, and SQLAlchemy's execution path costs
                # more than the statement itself (about 17 us against 1 us).
                if savepoints:
                    seat.dbapi.execute(_SAVEPOINT)
                result = call.fn(conn)
                if savepoints:
                    seat.dbapi.execute(_RELEASE)
            except BaseException as exc:
                error = exc
            finally:
                self._detach(seat, conn, handle)
            if error is None:
                done.append((call, result))
                continue
            call.fail(self._storage_error(error, handle))
            if not (savepoints and self._undo_savepoint(seat)):
                # The whole transaction is gone (an interrupted or failed DML statement ends
                # it in SQLite, every savepoint included): the others run again.
                self._rollback(seat)
                return [c for c, _ in done] + live[index + 1:]
        # The commit point (CallHandle.begin_commit): past its deadline a client has its 504,
        # and a commit now would turn it into a silent success; a call that wins its commit
        # point is waited for by its client instead.
        committing = [c for c, _ in done if c.handle.begin_commit()]
        late = [c for c, _ in done if c not in committing]
        if late:
            for call in late:
                call.fail(DeadlineExceeded("the DB call outlived its deadline"))
            for call in committing:
                call.handle.abandon_commit()
            self._rollback(seat)
            return committing
        if not done:
            self._rollback(seat)
            return []
        try:
            conn.commit()
        except BaseException as exc:
            self._fail_all(seat, [c for c, _ in done], exc)
            return []
        for call, result in done:
            call.resolve(result)
        return []

    def _undo_savepoint(self, seat: Seat) -> bool:
        """Roll one call's savepoint back, keeping the group's transaction; False when the
        transaction itself is gone."""
        assert seat.conn is not None
        if seat.conn.invalidated or not self.backend.in_transaction(seat.dbapi):
            return False
        try:
            seat.dbapi.execute(_ROLLBACK_TO)
            seat.dbapi.execute(_RELEASE)
        except self.backend.driver_error:
            return False
        return True

    def _fail_all(self, seat: Seat, calls: list[LaneCall], exc: BaseException) -> None:
        for call in calls:
            call.fail(self._storage_error(exc, call.handle))
        self._rollback(seat)

    def _storage_error(self, exc: BaseException, handle: CallHandle) -> BaseException:
        if isinstance(exc, self.backend.driver_error):  # from a savepoint, run on the driver
            exc = DBAPIError.instance(None, None, exc, self.backend.driver_error)
        if isinstance(exc, DBAPIError):
            error = self.backend.classify(exc, cancelled=handle.stopping)
            error.__cause__ = exc
            return error
        return exc

    # -- connections ---------------------------------------------------------------------

    def _connection(self, seat: Seat, deadline: Deadline) -> Connection:
        conn = seat.conn
        if conn is None or conn.invalidated:
            conn = self._connect(seat, deadline)
        return conn

    def _connect(self, seat: Seat, deadline: Deadline | None) -> Connection:
        """(Re)open a seat's connection, its set-up bounded by the call's deadline."""
        if seat.conn is not None:
            with contextlib.suppress(Exception):  # an invalidated one: nothing to save
                seat.conn.close()
            seat.conn = None
        try:
            if deadline is None:
                conn = seat.engine.connect()
            else:
                with self.backend.connecting_within(deadline):
                    conn = seat.engine.connect()
        except DBAPIError as exc:  # a new connection's set-up failed (locked, cannot open)
            if deadline is None:
                raise
            raise self.backend.classify(exc, cancelled=deadline.expired) from exc
        seat.conn = conn
        seat.busy_ms = -1  # set by the connect hook; the next bound sets its own
        self.backend.watch(seat.dbapi, seat)
        return conn

    def _attach(self, seat: Seat, conn: Connection, handle: CallHandle) -> None:
        conn.info[_HANDLE_KEY] = handle
        seat.handle = handle
        dbapi_conn = seat.dbapi
        handle.attach(lambda: self.backend.interrupt(dbapi_conn))

    def _detach(self, seat: Seat, conn: Connection, handle: CallHandle) -> None:
        handle.detach()  # from here on no interrupt of this attempt can arrive
        seat.handle = None
        if conn.invalidated:  # touching an invalidated one would reconnect
            return
        conn.info.pop(_HANDLE_KEY, None)
        if handle.cancelled:
            # An interrupt may have reached the connection: the backend makes sure it cannot
            # act on the connection's next use.
            self.backend.reset_after_cancel(conn)

    def _rollback(self, seat: Seat) -> None:
        """End whatever transaction a failed call left (SQLAlchemy's idea of it may no longer
        match the database's, e.g. after an interrupted statement); a connection that cannot
        roll back is discarded and reopened by its next call."""
        conn = seat.conn
        if conn is None or conn.invalidated:
            return
        try:
            conn.rollback()
            # And the driver's too: after a failed COMMIT (a deferred constraint) SQLAlchemy
            # considers its transaction over while SQLite's is still open.
            seat.dbapi.rollback()
        except (DBAPIError, self.backend.driver_error):
            conn.invalidate()

    # -- metrics -----------------------------------------------------------------------

    def _series(self, operation: str, outcome: str) -> tuple[Any, Any]:
        """The call counter and latency histogram of one (operation, outcome), looked up once."""
        key = (operation, outcome)
        series = self._call_series.get(key)
        if series is None:
            series = (self.metrics.db_calls.labels(operation, outcome),
                      self.metrics.db_call_seconds.labels(operation, outcome))
            self._call_series[key] = series
        return series

    def _count_transient(self, operation: str, exc: TransientStorageError) -> None:
        self.metrics.db_transient_errors.labels(operation, _error_name(exc)).inc()
        if isinstance(exc, LockTimeout):
            self.metrics.db_lock_timeouts.labels(operation).inc()


def make_backend(settings: Settings) -> Backend:
    """The backend DATABASE_URL names: embedded SQLite (the default) or PostgreSQL."""
    name = make_url(settings.database_url).get_backend_name()
    if name == "postgresql":
        return PostgresBackend(settings)
    if name == "sqlite":
        return SqliteBackend(settings)
    raise ValueError(f"DATABASE_URL: unsupported database {name!r}; use sqlite:///PATH or "
                     "postgresql+psycopg://USER@HOST:PORT/DB")


_OUTCOMES: dict[type[StorageError], str] = {
    DeadlineExceeded: "timeout",
    RetriesExhausted: "busy",
    QueueFull: "overloaded",
    StorageUnavailable: "unavailable",
    IntegrityViolation: "conflict",
}


def _reading(lane: WorkerLane, counter: str) -> Callable[[], float]:
    return lambda: getattr(lane, counter)


def _error_name(exc: BaseException) -> str:
    return getattr(exc, "error_name", None) or type(exc).__name__


_SELECT_ONE = text("SELECT 1")


def _select_one(conn: Connection) -> object:
    return conn.execute(_SELECT_ONE).scalar()


def _stop_if_cancelled(conn: Any, *_args: Any) -> None:
    """Refuse to start another statement once the call's deadline has passed: an interrupt
    only stops the statement running at that moment."""
    handle = conn.info.get(_HANDLE_KEY)
    if handle is not None:
        handle.raise_if_cancelled()
