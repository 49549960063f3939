"""The only path from a request to the database.

A DB call is a sync unit of work (a function of a fresh Session) that runs on a worker lane:
one writer thread with one connection, so this process's writers never fight each other in
SQLite's busy handler, and a pool of reader threads with one connection each (WAL lets readers
run beside the writer). The event loop only waits on the result, until the call's deadline:

    handler -> Database.write/read -> RetryPolicy (whole transactions, transient errors only)
            -> WorkerLane.submit (503 at once when full) -> await_until(deadline) -> 504
               worker thread: bound lock wait, BEGIN [IMMEDIATE], work(session), COMMIT
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import Engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from .errors import (
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
from .resilience import CallHandle, Deadline, RetryPolicy, WorkerLane, await_until
from .settings import Settings
from .sqlite_backend import SqliteBackend

log = logging.getLogger(__name__)

T = TypeVar("T")
SessionWork = Callable[[Session], T]
ConnectionWork = Callable[[Any], T]

_HANDLE_KEY = "call_handle"


class Database:
    """Engines, lanes and the retry policy of one app instance."""

    def __init__(self, settings: Settings, metrics: Metrics, retry: RetryPolicy) -> None:
        self.settings = settings
        self.metrics = metrics
        self.retry = retry
        self.backend = make_backend(settings)
        readers = settings.db_read_workers
        writers = self.backend.writer_workers()
        self.backend.check_version(connections=writers + readers + 1)
        queue = settings.db_queue_limit
        # Checkpoints get their own thread and connection: a slow checkpoint (its fsyncs, or
        # a TRUNCATE waiting for readers) must not hold up the writer lane.
        self.writer_engine = self.backend.make_engine(role="writer", pool_size=writers)
        self.reader_engine = self.backend.make_engine(role="reader", pool_size=readers)
        self.maintenance_engine = self.backend.make_engine(role="maintenance", pool_size=1)
        self.writer = WorkerLane("writer", writers, queue, self._lane_changed)
        self.readers = WorkerLane("reader", readers, queue, self._lane_changed)
        self.maintenance = WorkerLane("maintenance", 1, 0, self._lane_changed)
        self._lanes = ((self.writer, self.writer_engine), (self.readers, self.reader_engine),
                       (self.maintenance, self.maintenance_engine))
        for _, engine in self._lanes:
            event.listen(engine, "before_cursor_execute", _stop_if_cancelled)
        # Interrupts are sent from here, off the event loop (await_until). Its one thread is
        # started now, so it is part of the steady state, not a thread that appears later.
        self.interrupter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="db-interrupt")
        self.interrupter.submit(lambda: None).result()
        for lane, _ in self._lanes:
            metrics.describe_lane(lane.name, lane.workers, lane.capacity - lane.workers)
        if self.backend.supports_checkpoints:
            metrics.watch_wal(self.backend.wal_bytes, settings.sqlite_journal_size_limit_bytes,
                              settings.sqlite_checkpoint_interval_s)

    @classmethod
    def open(cls, settings: Settings, metrics: Metrics, retry: RetryPolicy) -> Database:
        db = cls(settings, metrics, retry)
        try:
            Base.metadata.create_all(db.writer_engine)
            db._warm_pools()
        except BaseException:
            db.close()
            raise
        return db

    @property
    def serialises_writes(self) -> bool:
        """True when this process's writes run one at a time (SQLite's single writer lane)."""
        return self.writer.workers == 1

    @property
    def engines(self) -> tuple[Engine, ...]:
        return tuple(engine for _, engine in self._lanes)

    def _warm_pools(self) -> None:
        """Open every pooled connection now, so no request pays for (or waits on a lock in)
        the connection's set-up pragmas."""
        for lane, engine in self._lanes:
            conns = [engine.connect() for _ in range(lane.workers)]
            for conn in conns:
                conn.close()

    def close(self) -> None:
        for lane, engine in getattr(self, "_lanes", ()):
            lane.shutdown(wait=True)
            engine.dispose()
        if hasattr(self, "interrupter"):
            self.interrupter.shutdown(wait=True)

    # -- calls -----------------------------------------------------------------------

    async def write(
        self, operation: str, work: SessionWork[T], deadline: Deadline | None = None
    ) -> T:
        """Run `work` in a BEGIN IMMEDIATE transaction on the writer lane; commit if it returns."""
        return await self._call(operation, self.writer, self.writer_engine, work, deadline)

    async def read(
        self, operation: str, work: SessionWork[T], deadline: Deadline | None = None
    ) -> T:
        """Run `work` in a read transaction (one snapshot) on a reader lane."""
        return await self._call(operation, self.readers, self.reader_engine, work, deadline)

    async def ping(self, deadline: Deadline) -> None:
        await self.read("ping", _select_one, deadline)

    async def checkpoint(self) -> None:
        """Run the backend's checkpoint policy on the maintenance lane and record its lag."""
        if not self.backend.supports_checkpoints:
            return
        deadline = Deadline.after(self.settings.db_deadline_s)
        result = await self._call(
            "checkpoint", self.maintenance, self.maintenance_engine, self.backend.checkpoint,
            deadline,
            in_transaction=False,
        )
        self.metrics.record_checkpoint(result.lag_frames)

    async def _call(
        self,
        operation: str,
        lane: WorkerLane,
        engine: Engine,
        work: Callable[[Any], T],
        deadline: Deadline | None,
        *,
        in_transaction: bool = True,
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
                async for attempt in self.retry.retrying(deadline, count_retry):
                    with attempt:
                        handle = CallHandle(deadline)
                        future = lane.submit(
                            partial(self._attempt, engine, handle, work, in_transaction)
                        )
                        try:
                            result = await await_until(future, handle, self.interrupter)
                        except TransientStorageError as exc:
                            self._count_transient(operation, exc)
                            raise
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
        except StorageError as exc:
            outcome = _OUTCOMES.get(type(exc), "error")
            if isinstance(exc, DeadlineExceeded):
                self.metrics.db_timeouts.labels(operation).inc()
            raise
        finally:
            if retries:
                self.metrics.db_retries.labels(operation, outcome).inc(retries)
            self.metrics.db_calls.labels(operation, outcome).inc()
            self.metrics.db_call_seconds.labels(operation, outcome).observe(
                time.monotonic() - started
            )

    def _attempt(
        self, engine: Engine, handle: CallHandle, work: Callable[[Any], T], in_transaction: bool
    ) -> T:
        """One attempt, on a worker thread: a fresh connection checkout and Session, never
        shared with another thread, rolled back and discarded on any failure (a Session is
        never reused after one: SQLAlchemy's idea of the transaction may no longer match
        SQLite's, e.g. after an interrupted statement)."""
        handle.raise_if_cancelled()  # dropped at its deadline while still queued
        try:
            with self.backend.connecting_within(handle.deadline):
                conn = engine.connect()
        except DBAPIError as exc:  # a new connection's set-up failed (locked, cannot open)
            raise self.backend.classify(exc, cancelled=handle.stopping) from exc
        with conn:
            dbapi_conn = conn.connection.dbapi_connection
            conn.info[_HANDLE_KEY] = handle
            handle.attach(lambda: self.backend.interrupt(dbapi_conn))
            self.backend.watch(dbapi_conn, handle)
            try:
                self.backend.bound_lock_wait(dbapi_conn, handle.deadline)
                if not in_transaction:
                    try:
                        return work(dbapi_conn)
                    except self.backend.driver_error as exc:
                        # Raised by the driver directly, outside SQLAlchemy: wrap it as
                        # SQLAlchemy would, so it is classified like any other.
                        raise DBAPIError.instance(None, None, exc,
                                                  self.backend.driver_error) from exc
                with Session(bind=conn, autoflush=False, expire_on_commit=False) as session:
                    with session.begin():
                        result = work(session)
                        session.flush()
                        # Last chance to give up before COMMIT: past the deadline the client
                        # has its 504, and a commit now would turn it into a silent success.
                        handle.raise_if_cancelled()
                    return result
            except DBAPIError as exc:
                # The Session's block has rolled back already: SQLAlchemy issues ROLLBACK
                # after a failed statement or COMMIT, which also ends a transaction SQLite
                # kept open (tests/unit/test_database.py pins this).
                raise self.backend.classify(exc, cancelled=handle.stopping) from exc
            finally:
                handle.detach()  # from here on no interrupt of this attempt can arrive
                self.backend.unwatch(dbapi_conn)
                if not conn.invalidated:  # touching an invalidated one would reconnect
                    conn.info.pop(_HANDLE_KEY, None)
                    if handle.cancelled:
                        # An interrupt may have reached the connection: the backend makes
                        # sure it cannot act on the connection's next use.
                        self.backend.reset_after_cancel(conn)

    # -- metrics -----------------------------------------------------------------------

    def _count_transient(self, operation: str, exc: TransientStorageError) -> None:
        self.metrics.db_transient_errors.labels(operation, _error_name(exc)).inc()
        if isinstance(exc, LockTimeout):
            self.metrics.db_lock_timeouts.labels(operation).inc()

    def _lane_changed(self, lane: WorkerLane) -> None:
        self.metrics.db_queue_depth.labels(lane.name).set(lane.queued)
        self.metrics.db_inflight.labels(lane.name).set(lane.running)


def make_backend(settings: Settings) -> SqliteBackend | PostgresBackend:
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


def _error_name(exc: BaseException) -> str:
    return getattr(exc, "error_name", None) or type(exc).__name__


def _select_one(session: Session) -> object:
    return session.execute(text("SELECT 1")).scalar()


def _stop_if_cancelled(conn: Any, *_args: Any) -> None:
    """Refuse to start another statement once the call's deadline has passed: an interrupt
    only stops the statement running at that moment."""
    handle = conn.info.get(_HANDLE_KEY)
    if handle is not None:
        handle.raise_if_cancelled()
