"""Open a crash state the way the service would after the power came back, and judge it.

The files are written to a scratch folder and opened with the service's own driver (pysqlite3:
the SQLite the service ships), which runs the recovery a restart would (hot-journal rollback,
WAL recovery). Then:

- `PRAGMA integrity_check` must say `ok`;
- every user created before the recorded window must be there;
- the workload's creates that survived must be commits 1..m for some m (a prefix: no hole),
  each with its Idempotency-Key row pointing at it (no half of a transaction), and m may not
  exceed the creates begun before the cut (nothing from the future);
- acknowledged commits lost = acknowledged before the cut - m, when positive.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .service import CrashService
from .workload import DB_NAME, early_key, early_name, user_key, user_name


@dataclass(frozen=True)
class Verdict:
    survivors: int  # m: commits 1..m survived (meaningful when intact)
    problem: str | None = None  # None: intact
    corrupt: bool = False  # the problem is the database itself (open, integrity_check)

    @property
    def intact(self) -> bool:
        return self.problem is None

    def lost(self, acked: int) -> int:
        return max(0, acked - self.survivors)


class Checker:
    def __init__(self, service: CrashService, scratch: Path) -> None:
        self.service = service
        self.driver = service.driver()
        self.scratch = scratch

    def check(self, files: dict[str, bytes], *, early_users: int, started: int) -> Verdict:
        if self.scratch.exists():
            shutil.rmtree(self.scratch)
        self.scratch.mkdir(parents=True)
        for name, content in files.items():
            (self.scratch / name).write_bytes(content)
        if DB_NAME not in files:
            return Verdict(0, "the database file is gone", corrupt=True)
        try:
            conn = self.driver.connect(str(self.scratch / DB_NAME), isolation_level=None,
                                       timeout=0)
        except self.driver.Error as exc:
            return Verdict(0, f"cannot open: {_describe(exc)}", corrupt=True)
        # A damaged page can hold any bytes, and integrity_check quotes some of them.
        conn.text_factory = _lenient_text
        try:
            return self._judge(conn, early_users, started)
        except self.driver.Error as exc:
            return Verdict(0, _describe(exc), corrupt=True)
        except UnicodeDecodeError as exc:
            # The driver could not even decode SQLite's error message: it quoted damaged
            # bytes (e.g. a schema entry's name) from a garbage page.
            return Verdict(0, f"an error quoting damaged bytes ({exc.reason})", corrupt=True)
        finally:
            conn.close()

    def _judge(self, conn: Any, early_users: int, started: int) -> Verdict:
        report = [row[0] for row in conn.execute("PRAGMA integrity_check")]
        if report != ["ok"]:
            return Verdict(0, "integrity_check: " + "; ".join(report[:3]), corrupt=True)
        users, keys = self.service.written(conn)
        missing = [i for i in range(1, early_users + 1)
                   if early_name(i) not in users or keys.get(early_key(i)) != users[early_name(i)]]
        if missing:
            return Verdict(0, f"{len(missing)} users made durable before the window "
                                     f"are gone or changed (first: {early_name(missing[0])})")
        survivors = 0
        while user_name(survivors + 1) in users:
            survivors += 1
        expected_users = early_users + survivors
        problems = []
        if len(users) != expected_users:
            problems.append(f"not a prefix: commits 1..{survivors} and "
                            f"{len(users) - expected_users} more users")
        for commit in range(1, survivors + 1):
            if keys.get(user_key(commit)) != users[user_name(commit)]:
                problems.append(f"commit {commit}: user without its key (half a transaction)")
                break
        if len(keys) != expected_users:
            problems.append(f"{len(keys) - expected_users} keys without their user")
        if survivors > started:
            problems.append(f"commit {survivors} survived but only {started} had begun")
        if problems:
            return Verdict(survivors, "; ".join(problems))
        return Verdict(survivors)


def _describe(exc: BaseException) -> str:
    name = getattr(exc, "sqlite_errorname", None) or type(exc).__name__
    return f"{name}: {exc}"


def _lenient_text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")
