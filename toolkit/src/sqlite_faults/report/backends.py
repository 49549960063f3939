"""The database the report's targets run on: embedded SQLite (the default) or PostgreSQL.

With PostgreSQL the report starts its own throwaway server (sqlite_faults/postgres_server.py) for
the run and gives each target a fresh database on it, so a run never touches an existing
server and leaves nothing behind:

    with open_backend("postgres") as backend:
        url = backend.database_url("hardened")   # postgresql+psycopg://.../report_hardened
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlite_faults.errors import SqliteFaultsError
from sqlite_faults.postgres_server import PostgresServer, pg_bin_dir

BACKENDS = ("sqlite", "postgres")


class BackendUnavailable(SqliteFaultsError, RuntimeError):
    """The backend cannot be used on this machine (e.g. PostgreSQL is not installed)."""


@dataclass
class Backend:
    name: str  # "sqlite" or "postgres"
    postgres: PostgresServer | None = None
    version: str = ""

    @property
    def label(self) -> str:
        """For the report's header: what the service's data lived in."""
        if self.postgres is None:
            return "embedded SQLite (a temporary database file per service)"
        return (f"PostgreSQL {self.version} (a throwaway server started for this run, "
                "a fresh database per service)")

    def database_url(self, target: str) -> str | None:
        """The DATABASE_URL a target's server gets; None leaves ServerProcess's own default
        (an SQLite file in the server's data folder), so the SQLite run is what it always was."""
        if self.postgres is None:
            return None
        return self.postgres.url(self.postgres.create_database(f"report_{target}"))

    def ledger_db(self, database_url: str | None, db_path: Path) -> Path | str:
        """What WriteLedger.check reads the table from: the SQLite file, or the URL."""
        return database_url if database_url is not None else db_path


@contextlib.contextmanager
def open_backend(name: str) -> Iterator[Backend]:
    if name == "sqlite":
        yield Backend("sqlite")
        return
    if name != "postgres":
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    if pg_bin_dir() is None:
        raise BackendUnavailable(
            "PostgreSQL is not installed: the report starts its own throwaway server and needs "
            "initdb and pg_ctl (apt-get install postgresql)")
    with PostgresServer() as server:
        version = server.psql("SHOW server_version").strip()
        yield Backend("postgres", server, version)
