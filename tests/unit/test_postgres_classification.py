"""PostgreSQL errors are classified by SQLSTATE (never by message), like SQLite's by result
code. psycopg's own exception classes carry their SQLSTATE, so no server is needed."""

from __future__ import annotations

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
