"""Make SQL statements slow the way a long scan is slow: interruptibly.

Before each matching statement, on the same connection and in the same transaction, the fault
runs a statement that loops inside SQLite for `seconds` (a recursive CTE that counts rows until
a clock passes a limit). It is a real long-running statement: SQLite checks for
`sqlite3_interrupt()` at every loop step, as it would in a big scan. Each step waits a few
milliseconds off the CPU (STEP_S), as a scan waiting on the disk does. On PostgreSQL the fault
runs `pg_sleep(seconds)`, which a query cancel ends at once.

Two simpler designs do not work, and would let a broken interrupt pass unnoticed:
- one sleeping Python SQL function: an interrupt cannot stop a function mid-call;
- a sleeping progress handler: SQLite checks the interrupt flag only at loop (jump)
  opcodes, and a short statement such as a primary-key SELECT has none, so it is interrupted
  only once it has finished anyway (measured: a 12-step SELECT slowed to 1.2 s, interrupted at
  0.2 s, stopped at 1.2 s).

    with SlowStatements(engine, seconds=1.0, match=r"^SELECT") as slow:
        ...   # each SELECT on that engine now takes at least a second
    slow.started, slow.interrupted   # spins begun / spins stopped by an interrupt
"""

from __future__ import annotations

import re
import threading
import time
from types import TracebackType
from typing import Any

from sqlalchemy import Engine, event

# Counts until fault_clock() passes the bound parameter. fault_clock is registered on the
# connection by the fault; SQLite steps through the loop, checking for an interrupt at each step.
_SPIN_SQL = (
    "WITH RECURSIVE fault_spin(n) AS ("
    " SELECT 1 UNION ALL SELECT n + 1 FROM fault_spin WHERE fault_clock() < ?"
    ") SELECT count(*) FROM fault_spin"
)
# How long each step of a slowed statement waits, off the CPU and off the GIL: the statement is
# slow the way a scan waiting on a cold disk is, and answers an interrupt within a step. A busy
# loop (step 0) is slow the way a scan of a hot table is, and costs a core per statement: four
# took 1.6 of a 2-core machine's CPUs, so a slow-statements scenario there measured CPU
# starvation of the service's event loop and of the load generator, not slow statements.
STEP_S = 0.005


def spin(dbapi_conn: Any, seconds: float, step_s: float = 0.0) -> None:
    """Run one statement that loops inside SQLite for `seconds` on a DB-API connection (an
    interruptible long statement; raises the driver's error when interrupted). Each step
    waits `step_s` off the CPU; with 0 the loop is busy, thousands of steps a millisecond."""
    if step_s > 0:
        def clock() -> float:
            time.sleep(step_s)
            return time.monotonic()
        dbapi_conn.create_function("fault_clock", 0, clock)
    else:
        dbapi_conn.create_function("fault_clock", 0, time.monotonic)
    dbapi_conn.execute(_SPIN_SQL, (time.monotonic() + seconds,)).fetchall()


class SlowStatements:
    def __init__(self, engine: Engine, seconds: float = 1.0, match: str | None = None,
                 step_s: float = STEP_S) -> None:
        self.engine = engine
        self.seconds = seconds
        self.step_s = step_s
        self.pattern = re.compile(match, re.IGNORECASE) if match else None
        self.started = 0  # spins begun
        self.interrupted = 0  # spins that ended by an interrupt rather than the clock
        self._lock = threading.Lock()

    def _before(self, conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if self.pattern is not None and not self.pattern.search(statement):
            return
        dbapi_conn = conn.connection.dbapi_connection
        with self._lock:
            self.started += 1
        try:
            if conn.dialect.name == "postgresql":
                # pg_sleep: a server-side wait that a query cancel ends at once.
                with dbapi_conn.cursor() as cursor:
                    cursor.execute("SELECT pg_sleep(%s)", (self.seconds,))
                return
            spin(dbapi_conn, self.seconds, self.step_s)
        except Exception as exc:
            interrupted = ("SQLITE_INTERRUPT", "57014")  # SQLite interrupt, PG query_canceled
            code = getattr(exc, "sqlite_errorname", None) or getattr(exc, "sqlstate", None)
            if code in interrupted:
                with self._lock:
                    self.interrupted += 1
            raise  # SQLAlchemy wraps it, as it would the statement's own error

    def __enter__(self) -> SlowStatements:
        event.listen(self.engine, "before_cursor_execute", self._before)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        event.remove(self.engine, "before_cursor_execute", self._before)


class StallAfterStatement:
    """After each matching statement, stall the calling thread in Python for `seconds`.

    A stand-in for what `sqlite3_interrupt()` cannot reach: the worker is not inside SQLite
    but paused between statements (a GIL-heavy neighbour, a stopped thread, slow application
    code). Only the service's own checks between statements and before COMMIT can stop the
    transaction then.
    """

    def __init__(self, engine: Engine, seconds: float, match: str | None = None,
                 until: threading.Event | None = None) -> None:
        self.engine = engine
        self.seconds = seconds  # with `until`: the longest a stall may last
        self.pattern = re.compile(match, re.IGNORECASE) if match else None
        # A stall that ends when the test says so (e.g. once the client has its 504),
        # rather than after a duration that a loaded machine may not honour.
        self.until = until
        self.stalls = 0

    def _after(self, conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if self.pattern is None or self.pattern.search(statement):
            self.stalls += 1
            # The fault itself: a thread that is not making progress.
            if self.until is not None:
                self.until.wait(self.seconds)
            else:
                time.sleep(self.seconds)

    def __enter__(self) -> StallAfterStatement:
        event.listen(self.engine, "after_cursor_execute", self._after)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        event.remove(self.engine, "after_cursor_execute", self._after)
