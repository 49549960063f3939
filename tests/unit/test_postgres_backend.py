"""The PostgreSQL backend without a server: errors are classified by SQLSTATE (psycopg's own
exception classes carry it), and connecting to a host that never answers ends in bounded
time, at start-up and inside a call."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import psycopg
import psycopg.errors as pg
import pytest
from sqlalchemy.exc import DBAPIError

from app.errors import (
    DeadlineExceeded,
    IntegrityViolation,
    LockTimeout,
    StorageBug,
    StorageError,
    StorageUnavailable,
    TransientStorageError,
)
from app.postgres_backend import PostgresBackend
from app.resilience import Deadline
from app.settings import Settings

pytestmark = pytest.mark.unit


@pytest.fixture
def backend() -> PostgresBackend:
    return PostgresBackend(Settings(database_url="postgresql+psycopg://u@127.0.0.1:1/db"))


def wrapped(orig: Exception, invalidated: bool = False) -> DBAPIError:
    return DBAPIError.instance("SELECT 1", None, orig, psycopg.Error,
                               connection_invalidated=invalidated)


@pytest.mark.parametrize(
    ("error", "cancelled", "expected"),
    [
        (pg.SerializationFailure("driver text"), False, TransientStorageError),
        (pg.DeadlockDetected(), False, TransientStorageError),
        (pg.AdminShutdown(), False, TransientStorageError),  # 57P01: the server is stopping
        (pg.CrashShutdown(), False, TransientStorageError),
        (pg.CannotConnectNow(), False, TransientStorageError),
        (pg.ConnectionFailure(), False, TransientStorageError),  # 08006
        (psycopg.OperationalError("connection refused"), False, TransientStorageError),
        (pg.LockNotAvailable(), False, LockTimeout),
        (pg.LockNotAvailable(), True, DeadlineExceeded),
        (pg.QueryCanceled(), True, DeadlineExceeded),
        (pg.QueryCanceled(), False, StorageBug),
        (pg.UniqueViolation(), False, IntegrityViolation),
        (pg.DiskFull(), False, StorageUnavailable),
        (pg.IoError(), False, StorageUnavailable),
        (pg.UndefinedTable(), False, StorageBug),
        (pg.SyntaxError(), False, StorageBug),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else str(value),
)
def test_sqlstate_selects_the_error_class(
    backend: PostgresBackend, error: Exception, cancelled: bool, expected: type[StorageError],
) -> None:
    classified = backend.classify(wrapped(error), cancelled=cancelled)
    assert type(classified) is expected


def test_a_connection_lost_mid_call_is_transient_whatever_its_error(
    backend: PostgresBackend,
) -> None:
    """SQLAlchemy marks a disconnect by invalidating the connection; the call is retried."""
    classified = backend.classify(wrapped(pg.InternalError(), invalidated=True),
                                  cancelled=False)
    assert type(classified) is TransientStorageError


class BlackHole:
    """A TCP server that accepts connections and never says a word: a PostgreSQL host that
    hangs (overloaded, or a half-dead network path)."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]

    def url(self) -> str:
        return f"postgresql+psycopg://u@127.0.0.1:{self.port}/db"

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def black_hole() -> Iterator[BlackHole]:
    hole = BlackHole()
    yield hole
    hole.close()


def ends_within(seconds: float, fn: Callable[[], object]) -> BaseException | None:
    """Run `fn` on a thread; the error it ended with, or fail if it is still running."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            fn()
            outcome.append(None)
        except BaseException as exc:  # the point: what it ended with
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)  # a hung connect must not block exit
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still waiting after {seconds} s: no connect timeout"
    return outcome[0]


def test_start_up_against_a_silent_server_fails_in_bounded_time(
    black_hole: BlackHole,
) -> None:
    settings = Settings(database_url=black_hole.url(), db_deadline_s=1.0)
    error = ends_within(10.0, lambda: PostgresBackend(settings).check_version(connections=1))
    assert isinstance(error, DBAPIError), error


def test_a_connection_opened_for_a_call_waits_no_longer_than_its_budget(
    black_hole: BlackHole,
) -> None:
    backend = PostgresBackend(Settings(database_url=black_hole.url(), db_deadline_s=60.0))
    engine = backend.make_engine(role="reader", pool_size=1)
    try:
        def connect() -> None:
            with backend.connecting_within(Deadline.after(1.0)):
                engine.connect().close()

        # libpq counts whole seconds and takes anything below 2 as 2.
        error = ends_within(10.0, connect)
        assert isinstance(error, DBAPIError), error
    finally:
        engine.dispose()
