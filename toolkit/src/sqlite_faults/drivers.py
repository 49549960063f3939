"""Which SQLite library the toolkit opens database files with, in the test process and in
its lock-holder children.

pysqlite3 (a current SQLite, the one the hardened service ships) when it is installed, the
stdlib's `sqlite3` otherwise; `SQLITE_FAULTS_DRIVER` overrides. See inspect_db.py for why
one process must not mix the two on the same file.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from types import ModuleType

DRIVERS = {"pysqlite3": "pysqlite3.dbapi2", "sqlite3": "sqlite3"}


def default_driver() -> str:
    chosen = os.environ.get("SQLITE_FAULTS_DRIVER")
    if chosen:
        if chosen not in DRIVERS:
            raise ValueError(f"SQLITE_FAULTS_DRIVER must be one of {sorted(DRIVERS)}, "
                             f"got {chosen!r}")
        return chosen
    return "pysqlite3" if importlib.util.find_spec("pysqlite3") is not None else "sqlite3"


def sqlite_dbapi(driver: str | None = None) -> ModuleType:
    return importlib.import_module(DRIVERS[driver or default_driver()])
