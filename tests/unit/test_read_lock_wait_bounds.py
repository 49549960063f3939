"""The busy timeout a reader's (and maintenance's) connection carries into each call
(SqliteBackend.bound_lock_wait): read back from SQLite itself after each bound.

A WAL reader meets a lock only in rare cases (another process in exclusive locking mode, WAL
recovery) that cannot be staged while the service's own connections are open, so these tests
check the bound the busy handler will obey rather than stage the wait; the writer's wait, which
is staged with a real lock holder, is in tests/fault/test_locked_database.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pysqlite3.dbapi2 as driver
import pytest

from app.errors import DeadlineExceeded
from app.resilience import Deadline
from app.settings import Settings
from app.sqlite_backend import LOCK_WAIT_MARGIN_MS, LOCK_WAIT_SLACK_MS, SqliteBackend

pytestmark = pytest.mark.unit


class ReaderSeat:
    """What bound_lock_wait reads and sets of a worker's seat (app/backend.py SeatView)."""

    def __init__(self, dbapi: Any, busy_ms: int) -> None:
        self.dbapi = dbapi
        self.busy_ms = busy_ms
        self.handle = None


@pytest.fixture
def seat(tmp_path: Path) -> Iterator[ReaderSeat]:
    # As a reader connection comes out of set-up: the busy timeout of a call outside any
    # request, far longer than a request's budget.
    with contextlib.closing(driver.connect(str(tmp_path / "users.db"))) as conn:
        conn.execute("PRAGMA busy_timeout = 30000")
        yield ReaderSeat(conn, busy_ms=-1)


@pytest.fixture
def backend(tmp_path: Path) -> SqliteBackend:
    return SqliteBackend(Settings(database_url=f"sqlite:///{tmp_path / 'users.db'}"))


def busy_timeout_ms(seat: ReaderSeat) -> int:
    return int(seat.dbapi.execute("PRAGMA busy_timeout").fetchone()[0])


def test_a_read_s_lock_wait_ends_just_after_its_deadline(
    backend: SqliteBackend, seat: ReaderSeat
) -> None:
    """Not the 30 s the connection came with, and not before the deadline: a wait that gave
    up early would answer 503 storage_busy where the deadline's 504 is due."""
    deadline = Deadline.after(1.0)
    backend.bound_lock_wait(seat, deadline)
    remaining_ms = deadline.remaining() * 1000
    assert remaining_ms + LOCK_WAIT_MARGIN_MS <= busy_timeout_ms(seat)
    assert busy_timeout_ms(seat) <= 1000 + LOCK_WAIT_MARGIN_MS + LOCK_WAIT_SLACK_MS


def test_a_busy_timeout_set_for_a_long_budget_does_not_outlast_a_short_one(
    backend: SqliteBackend, seat: ReaderSeat
) -> None:
    backend.bound_lock_wait(seat, Deadline.after(5.0))
    backend.bound_lock_wait(seat, Deadline.after(0.3))
    assert busy_timeout_ms(seat) <= 300 + LOCK_WAIT_MARGIN_MS + LOCK_WAIT_SLACK_MS


def test_a_close_budget_keeps_the_busy_timeout_already_set(
    backend: SqliteBackend, seat: ReaderSeat
) -> None:
    """The PRAGMA runs only when the bound must change (calls with the same budget queue for
    about the same time): the second call finds its bound already in place."""
    backend.bound_lock_wait(seat, Deadline.after(1.0))
    first = busy_timeout_ms(seat)
    backend.bound_lock_wait(seat, Deadline.after(0.99))
    assert busy_timeout_ms(seat) == first


def test_a_call_past_its_deadline_waits_for_no_lock(
    backend: SqliteBackend, seat: ReaderSeat
) -> None:
    with pytest.raises(DeadlineExceeded):
        backend.bound_lock_wait(seat, Deadline.after(-0.1))
