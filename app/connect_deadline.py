"""The deadline of the call whose worker thread is opening a connection, for the backends'
connect hooks: a new connection's set-up (SQLite's pragmas, which may wait on a lock; libpq's
connect) must not outlast the call that caused it."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from .resilience import Deadline


class ConnectDeadline:
    def __init__(self) -> None:
        self._local = threading.local()

    @property
    def current(self) -> Deadline | None:
        """The deadline of the connection being opened on this thread, if a call set one."""
        return getattr(self._local, "deadline", None)

    @contextlib.contextmanager
    def within(self, deadline: Deadline) -> Iterator[None]:
        self._local.deadline = deadline
        try:
            yield
        finally:
            self._local.deadline = None
