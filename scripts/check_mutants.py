"""Break each hardening mechanism on purpose and show which tests catch it.

Each mutant is one textual replacement in app/; the script applies it to a scratch copy of the
repository (never to your work tree), runs the chosen tests there, and reports the tests that
went red. A mutant no test catches is a hole in the suite: the script exits non-zero.

    .venv/bin/python scripts/check_mutants.py            # every mutant, tests/fault + tests/unit
    .venv/bin/python scripts/check_mutants.py no-retry   # one mutant
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str
    old: str
    new: str
    what: str


MUTANTS = [
    Mutant("no-retry", "app/resilience.py",
           "state.attempt_number >= self.max_attempts", "True",
           "transient errors are not retried"),
    Mutant("retry-everything", "app/resilience.py",
           "isinstance(exc, TransientStorageError)", "isinstance(exc, Exception)",
           "every error is retried (integrity, schema, programming, deadline)"),
    Mutant("no-deadline", "app/resilience.py",
           "timeout=handle.deadline.remaining()", "timeout=None",
           "the event loop waits for the worker however long it takes"),
    Mutant("no-interrupt", "app/sqlite_backend.py",
           "            dbapi_conn.interrupt()", "            pass",
           "a running statement is not interrupted at the deadline"),
    Mutant("unbounded-lock-wait", "app/sqlite_backend.py",
           'dbapi_conn.execute(f"PRAGMA busy_timeout = {remaining_ms + LOCK_WAIT_MARGIN_MS}")',
           "pass",
           "lock waits use the connection's busy_timeout, not the remaining budget"),
    Mutant("unbounded-connect-wait", "app/sqlite_backend.py",
           "deadline = self._connecting.current",
           "deadline = None",
           "a new connection's set-up waits the static busy timeout, not the deadline"),
    Mutant("deferred-begin", "app/sqlite_backend.py",
           'begin_sql = "BEGIN IMMEDIATE" if role == "writer" else "BEGIN"',
           'begin_sql = "BEGIN"',
           "writes start deferred transactions"),
    Mutant("commit-after-deadline", "app/db.py",
           "                        handle.raise_if_cancelled()\n                    return result",
           "                        pass\n                    return result",
           "a transaction past its deadline still commits"),
    Mutant("blocking-on-event-loop", "app/resilience.py",
           "            asyncio.wrap_future(future), timeout=handle.deadline.remaining()",
           "            _blocking(future), timeout=handle.deadline.remaining()",
           "the handler blocks the event loop until the worker finishes"),
    Mutant("unbounded-queue", "app/resilience.py",
           "if self._pending >= self.capacity:", "if False:",
           "a full DB work queue accepts more calls"),
]

# Appended to app/resilience.py for the blocking-on-event-loop mutant.
_BLOCKING_HELPER = '''

async def _blocking(future):
    return future.result()
'''


def run_mutant(mutant: Mutant, tests: list[str]) -> list[str]:
    with tempfile.TemporaryDirectory(prefix=f"mutant-{mutant.name}-") as scratch:
        copy = Path(scratch) / "repo"
        copy.mkdir()
        # The committed tree only: what CI would test.
        archive = subprocess.run(["git", "archive", "HEAD"], cwd=ROOT, capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(copy)], input=archive, check=True)
        target = copy / mutant.path
        source = target.read_text()
        if source.count(mutant.old) != 1:
            raise SystemExit(f"{mutant.name}: the text to replace is not in {mutant.path} once")
        source = source.replace(mutant.old, mutant.new)
        if mutant.name == "blocking-on-event-loop":
            source += _BLOCKING_HELPER
        target.write_text(source)
        try:
            result = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                 "--timeout=30", *tests],
                cwd=copy, capture_output=True, text=True, timeout=900,
                # The scratch copy must shadow the editable install of the real app/.
                env={**os.environ, "PYTHONPATH": str(copy)},
            )
        except subprocess.TimeoutExpired:
            return ["(the whole run hung past 900 s)"]
        return sorted(set(re.findall(r"^(?:FAILED|ERROR) (\S+)", result.stdout, re.M)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="mutants to run (default: all)")
    parser.add_argument("--tests", nargs="+", default=["tests/fault", "tests/unit"])
    args = parser.parse_args()
    chosen = [m for m in MUTANTS if not args.names or m.name in args.names]
    uncaught = []
    for mutant in chosen:
        red = run_mutant(mutant, args.tests)
        print(f"\n## {mutant.name}: {mutant.what}", flush=True)
        print(f"caught by {len(red)} test(s)" if red else "NOT CAUGHT")
        for test in red:
            print(f"  - {test}", flush=True)
        if not red:
            uncaught.append(mutant.name)
    if uncaught:
        print(f"\nuncaught mutants: {', '.join(uncaught)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
