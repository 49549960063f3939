"""What the power-loss simulation needs from a service, declared: its connection set-up, page
size and schema as data; its write and its checkpoint as code the simulation runs on
connections it opens itself (APSW through the recording VFS, or the service's own driver).

A service supplies a `CrashService`; the simulation (workload, checker, throughput, matrix)
knows nothing else about it. This repository's is app/crash_service.py:

    python -m sqlite_faults.powerloss --service app.crash_service:crash_services
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

# A PRAGMA as data: (name, value), e.g. ("synchronous", "NORMAL").
Pragma = tuple[str, str]


class Executes(Protocol):
    """What the simulation's connections offer: APSW's and the DB-API's `execute` both fit."""

    def execute(self, sql: str, params: Sequence[Any] = ...) -> Any: ...


class CrashService(Protocol):
    """A service as the power-loss simulation sees it."""

    @property
    def label(self) -> str:
        """What distinguishes this variant (e.g. "journal_size_limit 64 KiB")."""

    @property
    def pragmas(self) -> tuple[Pragma, ...]:
        """Every connection's set-up, in order; journal_mode and synchronous among them."""

    @property
    def page_size(self) -> int:
        """The page size its SQLite gives a new database."""

    @property
    def schema(self) -> tuple[str, ...]:
        """CREATE statements, in creation order."""

    @property
    def sqlite_version(self) -> str:
        """Of the driver the service ships (crash states are opened with it)."""

    @property
    def checkpoint_interval_s(self) -> float:
        """How often the service checkpoints on its own; 0: it leaves that to SQLite."""

    def create(self, conn: Executes, name: str, key: str) -> None:
        """One create, as the service writes it: a whole transaction, BEGIN to COMMIT."""

    def checkpoint(self, conn: Executes, db_path: Path) -> None:
        """The service's checkpoint policy, once, on its maintenance connection."""

    def written(self, conn: Executes) -> tuple[dict[str, Any], dict[str, Any]]:
        """What the creates left in a database: each create's row id by its name, and the
        row id each key points at (written in the same transaction as its row)."""

    def driver(self) -> Any:
        """The DB-API module the service uses."""


def pragmas_for(service: CrashService, journal_mode: str,
                synchronous: str) -> tuple[Pragma, ...]:
    """The service's pragmas with the two axes of the matrix replaced. Both must be among the
    service's own pragmas: if it stopped setting one, the matrix would measure something
    else, so that is an error, not a default."""
    wanted = {"journal_mode": journal_mode, "synchronous": synchronous}
    missing = sorted(set(wanted) - {name.lower() for name, _ in service.pragmas})
    if missing:
        raise LookupError(f"the service no longer sets {missing}; the matrix needs them")
    return tuple((name, wanted.get(name.lower(), value)) for name, value in service.pragmas)


def set_up(conn: Executes, pragmas: Sequence[Pragma]) -> None:
    """Run the pragmas on a fresh connection, in order."""
    for name, value in pragmas:
        conn.execute(f"PRAGMA {name} = {value}").fetchall()
