"""Lock holders: a second, real SQLite connection in another process that takes a lock and
keeps it, as another program sharing the database file would.

Modes:
  "immediate"  BEGIN IMMEDIATE: blocks writers; in WAL, readers go on.
  "exclusive"  BEGIN EXCLUSIVE: in WAL it behaves like IMMEDIATE (readers go on).
  "locking-mode-exclusive"  PRAGMA locking_mode=EXCLUSIVE plus a write: the process keeps an
               exclusive lock on the file and, in WAL, blocks readers too. In WAL every open
               connection holds a SHARED lock on the database file, so this mode can only be
               taken while no other connection (a running service's pool included) is open.

The holder reports when it has the lock and when it let go, so tests synchronise on those
events, not on sleeps. Usable as a context manager (always released on exit) or from the shell:
    python -m faults.locks DB_PATH --mode immediate --seconds 2
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

LOCK_MODES = ("immediate", "exclusive", "locking-mode-exclusive", "read")


class LockHolder:
    """Hold an SQLite lock on `db_path` from a child process.

    `hold_s` None holds until `release()` or exit; a number makes the child let go by itself
    after that many seconds (the fault's duration, timed in the child). With `commit=True`
    ("immediate"/"exclusive" modes) the holder writes a row into its own table and commits it
    on release, as a real concurrent writer would; otherwise it rolls back.
    """

    def __init__(
        self,
        db_path: str | Path,
        mode: str = "immediate",
        hold_s: float | None = None,
        driver: str = "pysqlite3",
        acquire_timeout_s: float = 10.0,
        commit: bool = False,
    ) -> None:
        if mode not in LOCK_MODES:
            raise ValueError(f"mode must be one of {LOCK_MODES}, got {mode!r}")
        self.db_path = Path(db_path)
        self.mode = mode
        self.hold_s = hold_s
        self.driver = driver
        self.acquire_timeout_s = acquire_timeout_s
        self.commit = commit
        self.acquired_at: float | None = None  # time.monotonic() in this process
        self.released_at: float | None = None
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> LockHolder:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def acquire(self) -> None:
        args = [sys.executable, "-m", "faults.locks", str(self.db_path), "--mode", self.mode,
                "--driver", self.driver, "--busy-timeout-s", str(self.acquire_timeout_s)]
        if self.hold_s is not None:
            args += ["--seconds", str(self.hold_s)]
        if self.commit:
            args.append("--commit")
        self._proc = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
        line = self._read_line()
        if line != "locked":
            self._kill()
            raise RuntimeError(f"lock holder failed to take the lock: {line!r}")
        self.acquired_at = time.monotonic()

    def wait_released(self, timeout_s: float = 30.0) -> None:
        """Block until a timed holder (hold_s) has let go."""
        assert self._proc is not None
        line = self._read_line()
        if line != "released":
            raise RuntimeError(f"lock holder did not release cleanly: {line!r}")
        self.released_at = time.monotonic()
        self._proc.wait(timeout=timeout_s)
        self._close_pipes()

    def release(self) -> None:
        """Let go now (idempotent); returns when the child has released the lock."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            self._close_pipes()
            return
        try:
            assert proc.stdin is not None
            proc.stdin.write("release\n")
            proc.stdin.flush()
        except BrokenPipeError:
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._kill()
        if self.released_at is None:
            self.released_at = time.monotonic()
        self._close_pipes()

    def _read_line(self) -> str:
        assert self._proc is not None and self._proc.stdout is not None
        return self._proc.stdout.readline().strip()

    def _kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._close_pipes()

    def _close_pipes(self) -> None:
        if self._proc is None:
            return
        for pipe in (self._proc.stdin, self._proc.stdout):
            if pipe is not None and not pipe.closed:
                with contextlib.suppress(BrokenPipeError):
                    pipe.close()


def _hold(
    db_path: str, mode: str, seconds: float | None, driver: str, busy_s: float, commit: bool
) -> None:
    import importlib
    import select

    dbapi = importlib.import_module("pysqlite3.dbapi2" if driver == "pysqlite3" else "sqlite3")
    conn = dbapi.connect(db_path, isolation_level=None, timeout=busy_s)
    if mode == "locking-mode-exclusive":
        conn.execute("PRAGMA locking_mode = EXCLUSIVE")
        conn.execute("BEGIN EXCLUSIVE")
        # A write makes the exclusive lock stick after COMMIT in this locking mode.
        conn.execute("CREATE TABLE IF NOT EXISTS fault_lock_probe (x)")
        conn.execute("COMMIT")
    elif mode == "read":
        conn.execute("BEGIN")
        conn.execute("SELECT count(*) FROM sqlite_master").fetchall()
    else:
        conn.execute("BEGIN EXCLUSIVE" if mode == "exclusive" else "BEGIN IMMEDIATE")
        if commit:
            conn.execute("CREATE TABLE IF NOT EXISTS fault_lock_probe (x)")
            conn.execute("INSERT INTO fault_lock_probe VALUES (1)")
    print("locked", flush=True)
    # Wait for "release" on stdin, or for the fault's duration to end.
    started = time.monotonic()
    readable, _, _ = select.select([sys.stdin], [], [], seconds)
    if readable and not sys.stdin.readline() and seconds is not None:
        # stdin is closed (e.g. /dev/null from a shell): hold for the duration regardless.
        time.sleep(max(0.0, seconds - (time.monotonic() - started)))
    if mode == "locking-mode-exclusive":
        conn.close()  # closing the connection is what drops an EXCLUSIVE-mode lock
    else:
        conn.execute("COMMIT" if commit else "ROLLBACK")
        conn.close()
    print("released", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Hold an SQLite lock from this process.")
    parser.add_argument("db_path")
    parser.add_argument("--mode", choices=LOCK_MODES, default="immediate")
    parser.add_argument("--seconds", type=float, default=None,
                        help="let go after this long (default: on a line on stdin)")
    parser.add_argument("--driver", choices=("pysqlite3", "sqlite3"), default="pysqlite3")
    parser.add_argument("--busy-timeout-s", type=float, default=10.0)
    parser.add_argument("--commit", action="store_true",
                        help="write a row and commit it on release (default: roll back)")
    args = parser.parse_args(argv)
    _hold(args.db_path, args.mode, args.seconds, args.driver, args.busy_timeout_s, args.commit)


if __name__ == "__main__":
    main()
