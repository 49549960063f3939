"""The service's writes, through the recording VFS, with the service's connection settings
(everything about the service comes from its `CrashService`, service.py).

One run: a writer connection and a maintenance connection, both set up with the service's
pragmas (the matrix replaces journal_mode and synchronous); the service's schema and page
size; some users created beforehand and made durable (the database existed before the cut);
then `commits` creates, each the service's own create transaction, each marked as begun and
as acknowledged (COMMIT returned: the service would answer 201). Between creates the
maintenance connection runs the service's checkpoint (`CrashService.checkpoint`; ours:
PASSIVE, or TRUNCATE past journal_size_limit) at seeded moments, standing in for its timer;
when the service leaves checkpoints to SQLite, none is run. The run ends with the service's shutdown
(connections closed: SQLite checkpoints and deletes the WAL).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import apsw

from .model import Event
from .service import CrashService, pragmas_for, set_up
from .vfs import Recorder, RecordingVFS

DB_NAME = "users.db"


def user_name(commit: int) -> str:
    return f"pl{commit:06d}"


def user_key(commit: int) -> str:
    return f"plk{commit:06d}"


def early_name(i: int) -> str:
    return f"pre{i:06d}"


def early_key(i: int) -> str:
    return f"prek{i:06d}"


def workload_sqlite_version() -> str:
    return str(apsw.sqlite_lib_version())


@dataclass(frozen=True)
class Trace:
    events: tuple[Event, ...]
    commits: int
    early_users: int  # created and made durable before the recorded window


def run_workload(service: CrashService, journal_mode: str, synchronous: str, *,
                 commits: int, early_users: int, checkpoint_chance: float,
                 rng: random.Random, folder: Path, drop_syncs: bool = False) -> Trace:
    folder.mkdir(parents=True, exist_ok=True)
    for leftover in folder.iterdir():
        leftover.unlink()
    path = folder / DB_NAME
    recorder = Recorder()
    vfs = RecordingVFS(recorder, drop_syncs=drop_syncs)
    pragmas = pragmas_for(service, journal_mode, synchronous)
    connections: list[apsw.Connection] = []
    try:
        writer = apsw.Connection(str(path), vfs=vfs.vfs_name)
        connections.append(writer)
        # The service sets no page size; its SQLite's default is forced here in case
        # APSW's build defaults to another.
        writer.execute(f"PRAGMA page_size = {service.page_size}")
        set_up(writer, pragmas)
        for ddl in service.schema:
            writer.execute(ddl)
        for i in range(1, early_users + 1):
            service.create(writer, early_name(i), early_key(i))
        maintenance = apsw.Connection(str(path), vfs=vfs.vfs_name)
        connections.append(maintenance)
        set_up(maintenance, pragmas)
        recorder.barrier()
        for commit in range(1, commits + 1):
            recorder.begin(commit)
            service.create(writer, user_name(commit), user_key(commit))
            recorder.ack(commit)
            if service.checkpoint_interval_s > 0 and rng.random() < checkpoint_chance:
                service.checkpoint(maintenance, path)
        # The service's shutdown: the last close checkpoints and deletes the WAL.
        while connections:
            connections.pop().close()
    finally:
        for conn in connections:  # a failed run: close what is still open
            conn.close()
        vfs.unregister()
    return Trace(tuple(recorder.events), commits, early_users)
