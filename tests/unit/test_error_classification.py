"""SqliteBackend: driver errors classified by result code, the WAL-reset version gate, and the
refusal of in-memory databases."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pysqlite3.dbapi2 as driver
import pytest
from sqlalchemy.exc import DBAPIError, OperationalError

from app.errors import (
    DeadlineExceeded,
    IntegrityViolation,
    LockTimeout,
    StorageBug,
    StorageError,
    StorageUnavailable,
    TransientStorageError,
)
from app.settings import Settings
from app.sqlite_backend import SqliteBackend, UnsafeSqliteVersion, has_wal_reset_bug

pytestmark = pytest.mark.unit


@pytest.fixture
def backend(tmp_path: Path) -> SqliteBackend:
    return SqliteBackend(Settings(database_url=f"sqlite:///{tmp_path / 'users.db'}"))


def coded(cls: type[driver.Error], code: int, name: str) -> DBAPIError:
    """A real driver exception carrying an SQLite result code, wrapped as SQLAlchemy does."""
    orig = cls("driver text that must not matter")
    orig.sqlite_errorcode = code
    orig.sqlite_errorname = name
    return DBAPIError.instance("SELECT 1", None, orig, driver.Error)


@pytest.mark.parametrize(
    ("code", "name", "expected"),
    [
        (5, "SQLITE_BUSY", LockTimeout),
        (5 | (1 << 8), "SQLITE_BUSY_RECOVERY", LockTimeout),
        (5 | (2 << 8), "SQLITE_BUSY_SNAPSHOT", LockTimeout),
        (6, "SQLITE_LOCKED", TransientStorageError),
        (6 | (1 << 8), "SQLITE_LOCKED_SHAREDCACHE", TransientStorageError),
        (17, "SQLITE_SCHEMA", TransientStorageError),
        (19, "SQLITE_CONSTRAINT", IntegrityViolation),
        (19 | (8 << 8), "SQLITE_CONSTRAINT_UNIQUE", IntegrityViolation),
        (7, "SQLITE_NOMEM", StorageUnavailable),
        (8, "SQLITE_READONLY", StorageUnavailable),
        (10, "SQLITE_IOERR", StorageUnavailable),
        (10 | (4 << 8), "SQLITE_IOERR_WRITE", StorageUnavailable),
        (10 | (13 << 8), "SQLITE_IOERR_FSTAT", StorageUnavailable),
        (13, "SQLITE_FULL", StorageUnavailable),
        (14, "SQLITE_CANTOPEN", StorageUnavailable),
        (15, "SQLITE_PROTOCOL", StorageUnavailable),
        (1, "SQLITE_ERROR", StorageBug),
        (11, "SQLITE_CORRUPT", StorageBug),
        (26, "SQLITE_NOTADB", StorageBug),
    ],
)
def test_result_code_selects_the_error_class(
    backend: SqliteBackend, code: int, name: str, expected: type[StorageError]
) -> None:
    error = backend.classify(coded(driver.OperationalError, code, name), cancelled=False)
    assert type(error) is expected
    assert error.error_name == name


def test_busy_family_is_retryable() -> None:
    assert issubclass(LockTimeout, TransientStorageError)


@pytest.mark.parametrize(("cancelled", "expected"), [(True, DeadlineExceeded), (False, StorageBug)])
def test_interrupt_is_a_deadline_only_when_the_call_was_cancelled(
    backend: SqliteBackend, cancelled: bool, expected: type[StorageError]
) -> None:
    exc = coded(driver.OperationalError, 9, "SQLITE_INTERRUPT")
    error = backend.classify(exc, cancelled=cancelled)
    assert type(error) is expected
    assert error.error_name == "SQLITE_INTERRUPT"


def test_code_wins_over_exception_class(backend: SqliteBackend) -> None:
    # A constraint code on an OperationalError, a busy code on an IntegrityError.
    exc = coded(driver.OperationalError, 19 | (8 << 8), "SQLITE_CONSTRAINT_UNIQUE")
    assert type(backend.classify(exc, cancelled=False)) is IntegrityViolation
    exc = coded(driver.IntegrityError, 5, "SQLITE_BUSY")
    assert type(backend.classify(exc, cancelled=False)) is LockTimeout


def test_error_without_code_is_a_bug(backend: SqliteBackend) -> None:
    orig = driver.ProgrammingError("closed")
    exc = OperationalError.instance("SELECT 1", None, orig, driver.Error)
    error = backend.classify(exc, cancelled=False)
    assert type(error) is StorageBug
    assert error.error_name == "ProgrammingError"


def test_integrity_error_without_code_is_a_violation(backend: SqliteBackend) -> None:
    exc = DBAPIError.instance("INSERT", None, driver.IntegrityError("dup"), driver.Error)
    error = backend.classify(exc, cancelled=False)
    assert type(error) is IntegrityViolation
    assert error.error_name == "IntegrityError"


def real_error(db: Path, setup: list[str], statement: str) -> DBAPIError:
    """Run `statement` on a real pysqlite3 connection and return its error, wrapped."""
    with contextlib.closing(driver.connect(str(db))) as conn:
        for sql in setup:
            conn.execute(sql)
        with pytest.raises(driver.Error) as caught:
            conn.execute(statement)
    return DBAPIError.instance(statement, None, caught.value, driver.Error)


def test_real_unique_violation(backend: SqliteBackend, tmp_path: Path) -> None:
    setup = ["CREATE TABLE users (name TEXT UNIQUE)", "INSERT INTO users VALUES ('ada')"]
    exc = real_error(tmp_path / "u.db", setup, "INSERT INTO users VALUES ('ada')")
    error = backend.classify(exc, cancelled=False)
    assert type(error) is IntegrityViolation
    # The driver does not turn on extended result codes: the primary name is reported.
    assert error.error_name == "SQLITE_CONSTRAINT"


def test_real_missing_table(backend: SqliteBackend, tmp_path: Path) -> None:
    exc = real_error(tmp_path / "m.db", [], "SELECT * FROM no_such_table")
    error = backend.classify(exc, cancelled=False)
    assert type(error) is StorageBug
    assert error.error_name == "SQLITE_ERROR"


def test_real_busy_from_a_second_writer(backend: SqliteBackend, tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    with contextlib.closing(driver.connect(str(db), isolation_level=None)) as holder:
        holder.execute("BEGIN IMMEDIATE")
        exc = real_error(db, ["PRAGMA busy_timeout = 0"], "BEGIN IMMEDIATE")
        holder.execute("ROLLBACK")
    error = backend.classify(exc, cancelled=False)
    assert type(error) is LockTimeout
    assert error.error_name == "SQLITE_BUSY"


def test_real_interrupt(backend: SqliteBackend) -> None:
    with contextlib.closing(driver.connect(":memory:")) as conn:
        conn.set_progress_handler(lambda: 1, 100)  # a non-zero return interrupts
        with pytest.raises(driver.OperationalError) as caught:
            conn.execute(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1e6)"
                " SELECT count(*) FROM n"
            ).fetchone()
    exc = DBAPIError.instance("SELECT", None, caught.value, driver.Error)
    assert type(backend.classify(exc, cancelled=True)) is DeadlineExceeded
    assert type(backend.classify(exc, cancelled=False)) is StorageBug


@pytest.mark.parametrize(
    ("version", "affected"),
    [
        ((3, 6, 23), False),
        ((3, 7, 0), True),
        ((3, 40, 1), True),
        ((3, 51, 2), True),
        ((3, 51, 3), False),
        ((3, 53, 4), False),
        ((3, 51, 2, 1), True),
    ],
)
def test_wal_reset_bug_versions(version: tuple[int, ...], affected: bool) -> None:
    assert has_wal_reset_bug(version) is affected


def test_affected_version_with_several_connections_is_refused(
    backend: SqliteBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backend, "version", (3, 40, 1))
    with pytest.raises(UnsafeSqliteVersion, match=r"SQLite 3\.40\.1 has the WAL-reset"):
        backend.check_version(connections=5)


@pytest.mark.parametrize(
    ("version", "connections", "allow"),
    [
        ((3, 40, 1), 1, False),  # one connection: the race needs two
        ((3, 40, 1), 5, True),  # SQLITE_ALLOW_AFFECTED_VERSION=true
        ((3, 51, 3), 5, False),  # fixed
    ],
)
def test_version_gate_lets_safe_setups_start(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    version: tuple[int, ...],
    connections: int,
    allow: bool,
) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'a.db'}", sqlite_allow_affected_version=allow
    )
    backend = SqliteBackend(settings)
    monkeypatch.setattr(backend, "version", version)
    backend.check_version(connections=connections)  # does not raise


def test_bundled_driver_is_not_affected(backend: SqliteBackend) -> None:
    assert backend.version == tuple(driver.sqlite_version_info)
    assert has_wal_reset_bug(backend.version) is False


@pytest.mark.parametrize(
    "url", ["sqlite:///:memory:", "sqlite://", "sqlite:///file:users?mode=memory&uri=true"]
)
def test_database_url_without_a_file_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="must name an SQLite file"):
        SqliteBackend(Settings(database_url=url))


def test_non_sqlite_database_url_is_refused() -> None:
    with pytest.raises(ValueError, match="sqlite"):
        SqliteBackend(Settings(database_url="postgresql://u:p@db.example/users"))
