"""What the power-loss simulation needs from a service, declared: its connection set-up, page
size and schema as data; its write and its checkpoint as code the simulation runs on
connections it opens itself (APSW through the recording VFS, or the service's own driver).

A service supplies a `CrashService`; the simulation (workload, checker, throughput, matrix)
knows nothing else about it. This repository's is app/crash_service.py:

    python -m sqlite_faults.powerloss --service app.crash_service:crash_services
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol


class Executes(Protocol):
    """What the simulation's connections offer: APSW's and the DB-API's `execute` both fit."""

    def execute(self, sql: str, params: Sequence[Any] = ...) -> Any: ...


@dataclass(frozen=True)
class Pragma:
    name: str
    value: str

    @property
    def sql(self) -> str:
        return f"PRAGMA {self.name} = {self.value}"


@dataclass(frozen=True)
class Rows:
    """Where one create leaves its trace, so a crash state can be judged: a row named by its
    unique value, and a key row pointing at it (written in the same transaction)."""

    table: str
    unique_column: str
    id_column: str
    keys_table: str
    key_column: str
    key_ref_column: str


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
    def rows(self) -> Rows: ...

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

    def driver(self) -> Any:
        """The DB-API module the service uses."""


def pragmas_for(service: CrashService, journal_mode: str,
                synchronous: str) -> tuple[Pragma, ...]:
    """The service's pragmas with the two axes of the matrix replaced. Both must be among the
    service's own pragmas: if it stopped setting one, the matrix would measure something
    else, so that is an error, not a default."""
    wanted = {"journal_mode": journal_mode, "synchronous": synchronous}
    names = {p.name.lower() for p in service.pragmas}
    missing = sorted(set(wanted) - names)
    if missing:
        raise LookupError(f"the service no longer sets {missing}; the matrix needs them")
    return tuple(replace(p, value=wanted.get(p.name.lower(), p.value)) for p in service.pragmas)
