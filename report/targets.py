"""The services the report judges, each served by a real uvicorn process with a fault agent.

A target says how to start the service and which files its faults aim at; the factories
below (`hardened`, `naive`) mount the fault agent (faults/agent.py) on the service's own app,
so SQL errors and slow statements can be armed inside the running process.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI

from faults.agent import fault_agent
from faults.syscalls import threads_of

# The hardened service runs with a short deadline so that "lock held past the deadline"
# fits in a few seconds of fault window; everything else is its default configuration.
HARDENED_ENV = {
    "DB_DEADLINE_S": "1.0",
    "READYZ_DEADLINE_S": "0.1",
    "SQLITE_CHECKPOINT_INTERVAL_S": "1.0",
}


@dataclass(frozen=True)
class Target:
    name: str
    app: str  # import string of a factory, for uvicorn --factory
    env: dict[str, str] = field(default_factory=dict)
    deadline_s: float | None = None  # the service's own DB deadline, if it has one
    ready_path: str = "/readyz"
    # Served as deployed (python -m app.serve: its limits at the door), or by bare uvicorn.
    served_by_app_serve: bool = False

    @property
    def launcher(self) -> list[str] | None:
        if not self.served_by_app_serve:
            return None
        return [sys.executable, "-m", "app.serve", "--app", self.app]

    def io_threads(self, pid: int) -> list[int]:
        """The threads that do the service's database I/O: the hardened service's worker
        threads (never its event loop), the naive service's event loop itself."""
        threads = threads_of(pid)
        return [t for t in threads if t != pid] if self.name == "hardened" else [pid]

    def write_paths(self, db_path: Path) -> list[Path]:
        """Files a commit writes: the WAL for WAL mode, the journal and database otherwise."""
        suffixes = ("-wal",) if self.name == "hardened" else ("-journal", "")
        return [db_path.with_name(db_path.name + suffix) for suffix in suffixes]


TARGETS = {
    "hardened": Target("hardened", "report.targets:hardened", HARDENED_ENV, deadline_s=1.0,
                       served_by_app_serve=True),
    "naive": Target("naive", "report.targets:naive"),
}


def hardened() -> FastAPI:
    from app.main import create_app

    app = create_app()
    db = app.state.db
    app.include_router(fault_agent(lambda: {"writer": db.writer_engine,
                                            "reader": db.reader_engine}))
    return app


def naive() -> FastAPI:
    from examples.naive_service.app import create_app

    app = create_app()
    engine = app.state.engine  # one engine does everything in the naive service
    app.include_router(fault_agent(lambda: {"writer": engine, "reader": engine}))
    return app
