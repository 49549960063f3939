"""Lock holders: a second, real SQLite connection in another process that takes a lock and
keeps it, as another program sharing the database file would.

Modes:
  "immediate"  BEGIN IMMEDIATE: blocks writers; in WAL, readers go on.
  "exclusive"  BEGIN EXCLUSIVE: in WAL it behaves like IMMEDIATE (readers go on).
  "locking-mode-exclusive"  PRAGMA locking_mode=EXCLUSIVE plus a write: the process keeps an
               exclusive lock on the file and, in WAL, blocks readers too. In WAL every open
               connection holds a SHARED lock on the database file, so this mode can only be
               taken while no other connection (a running service's pool included) is open.
  "read"       BEGIN plus a SELECT: a long reader. In WAL it pins a snapshot (checkpoints
               cannot pass it, the WAL grows); in a rollback-journal mode its SHARED lock
               keeps writers from committing.

`db_path` may also be a PostgreSQL URL: the same modes then take the nearest table locks on
`users` ("immediate"/"exclusive": LOCK TABLE ... IN EXCLUSIVE MODE, which blocks writers but
not readers; "locking-mode-exclusive": ACCESS EXCLUSIVE, which blocks readers too; "read": a
REPEATABLE READ transaction holding its snapshot).

The child process is started once (`start()`) and then takes and drops the lock on command,
as often as asked: starting a Python process costs tens of milliseconds of CPU, which on a
small machine would itself disturb the service at the moment the fault begins. The holder
reports when it has the lock and when it let go, so callers synchronise on those events, not
on sleeps. As a context manager it takes the lock on entry and always lets go on exit.
From the shell:
    python -m sqlite_faults.locks DB_PATH --mode immediate --seconds 2
"""

from __future__ import annotations

import argparse
import contextlib
import select
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from sqlite_faults.drivers import DRIVERS, default_driver, sqlite_dbapi

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
        db_path: str | Path,  # an SQLite file, or a postgresql:// URL
        mode: str = "immediate",
        hold_s: float | None = None,
        driver: str | None = None,  # pysqlite3 or sqlite3; default: drivers.default_driver
        acquire_timeout_s: float = 10.0,
        commit: bool = False,
    ) -> None:
        if mode not in LOCK_MODES:
            raise ValueError(f"mode must be one of {LOCK_MODES}, got {mode!r}")
        target = str(db_path)
        # An SQLite file (a path or an sqlite:/// URL) or a PostgreSQL URL.
        self.db_path: str | Path = (
            target if target.startswith("postgresql")
            else Path(target.split("///", 1)[1] if target.startswith("sqlite") else target))
        self.mode = mode
        self.hold_s = hold_s
        self.driver = driver or default_driver()
        self.acquire_timeout_s = acquire_timeout_s
        self.commit = commit
        self.acquired_at: float | None = None  # time.monotonic() in this process
        self.released_at: float | None = None
        self.held = False
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> LockHolder:
        self.acquire(self.hold_s)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        """Spawn the child and open its connection, without taking any lock yet."""
        if self._proc is not None:
            return
        args = [sys.executable, "-m", "sqlite_faults.locks", str(self.db_path), "--mode", self.mode,
                "--driver", self.driver, "--busy-timeout-s", str(self.acquire_timeout_s),
                "--serve"]
        if self.commit:
            args.append("--commit")
        self._proc = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
        self._expect("ready")

    def acquire(self, hold_s: float | None = None) -> None:
        """Take the lock; with `hold_s`, the child lets go by itself after that long."""
        self.start()
        self._send("lock" if hold_s is None else f"lock {hold_s}")
        self._expect("locked")
        self.held = True
        self.acquired_at = time.monotonic()
        self.released_at = None

    def wait_released(self) -> None:
        """Block until a timed hold has ended (the child says so)."""
        self._expect("released")
        self.held = False
        self.released_at = time.monotonic()

    def release(self) -> None:
        """Let go now, if held; returns once the child has released the lock."""
        if not self.held:
            return
        self._send("release")
        self.wait_released()

    def close(self) -> None:
        """Release (if held) and end the child; idempotent, also after a failure."""
        proc = self._proc
        if proc is None:
            return
        with contextlib.suppress(BrokenPipeError, RuntimeError, OSError):
            self.release()
        with contextlib.suppress(BrokenPipeError, OSError):
            if proc.stdin is not None:
                proc.stdin.close()  # EOF: the child lets go of everything and exits
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        self._proc = None
        self.held = False
        if self.released_at is None:
            self.released_at = time.monotonic()

    def _send(self, command: str) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write(command + "\n")
        self._proc.stdin.flush()

    def _expect(self, word: str) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        line = self._proc.stdout.readline().strip()
        if line != word:
            self._proc.kill()
            raise RuntimeError(f"lock holder: expected {word!r}, got {line!r} "
                               f"(mode {self.mode}, {self.db_path})")


# -- the child process -----------------------------------------------------------------------


_PG_LOCKS = {
    "immediate": "LOCK TABLE users IN EXCLUSIVE MODE",
    "exclusive": "LOCK TABLE users IN EXCLUSIVE MODE",
    "locking-mode-exclusive": "LOCK TABLE users IN ACCESS EXCLUSIVE MODE",
}


class _Child:
    def __init__(self, db_path: str, mode: str, driver: str, busy_s: float,
                 commit: bool) -> None:
        self.postgres = db_path.startswith("postgresql")
        if self.postgres:
            import psycopg

            from sqlite_faults.inspect_db import libpq_url

            self.connect: Any = lambda: psycopg.connect(libpq_url(db_path), autocommit=True)
        else:
            dbapi = sqlite_dbapi(driver)
            self.connect = lambda: dbapi.connect(db_path, isolation_level=None, timeout=busy_s)
        self.conn = self.connect()
        self.mode = mode
        self.commit = commit

    def lock(self) -> None:
        conn = self.conn
        if self.postgres:
            if self.mode == "read":
                conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
                conn.execute("SELECT count(*) FROM users").fetchall()
                return
            conn.execute("BEGIN")
            conn.execute(_PG_LOCKS[self.mode])
            if self.commit:
                conn.execute("CREATE TABLE IF NOT EXISTS fault_lock_probe (x int)")
                conn.execute("INSERT INTO fault_lock_probe VALUES (1)")
            return
        if self.mode == "locking-mode-exclusive":
            conn.execute("PRAGMA locking_mode = EXCLUSIVE")
            conn.execute("BEGIN EXCLUSIVE")
            # A write makes the exclusive lock stick after COMMIT in this locking mode.
            conn.execute("CREATE TABLE IF NOT EXISTS fault_lock_probe (x)")
            conn.execute("COMMIT")
        elif self.mode == "read":
            conn.execute("BEGIN")
            conn.execute("SELECT count(*) FROM sqlite_master").fetchall()
        else:
            conn.execute("BEGIN EXCLUSIVE" if self.mode == "exclusive" else "BEGIN IMMEDIATE")
            if self.commit:
                conn.execute("CREATE TABLE IF NOT EXISTS fault_lock_probe (x)")
                conn.execute("INSERT INTO fault_lock_probe VALUES (1)")

    def release(self) -> None:
        if self.postgres:
            self.conn.execute("COMMIT" if self.commit else "ROLLBACK")
        elif self.mode == "locking-mode-exclusive":
            self.conn.close()  # closing the connection is what drops an EXCLUSIVE-mode lock
            self.conn = self.connect()
        else:
            self.conn.execute("COMMIT" if self.commit else "ROLLBACK")


def _serve(child: _Child) -> None:
    """Commands on stdin: "lock [SECONDS]", "release"; EOF ends the process."""
    print("ready", flush=True)
    held = False
    for line in sys.stdin:
        command, *args = line.split()
        if command == "lock":
            child.lock()
            held = True
            print("locked", flush=True)
            if args:  # a timed hold; an early "release" (or EOF) cuts it short
                readable, _, _ = select.select([sys.stdin], [], [], float(args[0]))
                child.release()
                held = False
                print("released", flush=True)
                if readable and sys.stdin.readline().strip() != "release":
                    break  # EOF
        elif command == "release" and held:
            child.release()
            held = False
            print("released", flush=True)
    if held:
        child.release()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Hold an SQLite lock from this process.")
    parser.add_argument("db_path")
    parser.add_argument("--mode", choices=LOCK_MODES, default="immediate")
    parser.add_argument("--seconds", type=float, default=None,
                        help="hold this long, then exit (default: until Ctrl-C)")
    parser.add_argument("--driver", choices=sorted(DRIVERS), default=default_driver())
    parser.add_argument("--busy-timeout-s", type=float, default=10.0)
    parser.add_argument("--commit", action="store_true",
                        help="write a row and commit it on release (default: roll back)")
    parser.add_argument("--serve", action="store_true",
                        help="take commands on stdin (used by LockHolder)")
    args = parser.parse_args(argv)
    child = _Child(args.db_path, args.mode, args.driver, args.busy_timeout_s, args.commit)
    if args.serve:
        _serve(child)
        return
    child.lock()
    print("locked", flush=True)
    try:
        if args.seconds is None:
            while True:
                time.sleep(3600)
        time.sleep(args.seconds)
    except KeyboardInterrupt:
        pass
    child.release()
    print("released", flush=True)


if __name__ == "__main__":
    main()
