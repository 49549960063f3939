"""A crash-simulating SQLite VFS (APSW): the default VFS, with every durable-state change
recorded as a model `Event`.

Reads and writes go through to the default ("unix") VFS, so the running SQLite sees an
ordinary filesystem. What a power cut would leave is not read from that filesystem but
computed from the recorded events (model.py, states.py), which is why a sync is recorded and
not performed: durability is modelled, a real fsync would only cost time.

The cut itself is chosen after the run: the state at event N depends only on events before
N, so one recorded run yields the crash states of every moment in it, the Nth sync, the Nth
write or any other.

`drop_syncs=True` makes a broken VFS: it acknowledges every sync (file or directory) and
drops it. The checker must catch what that does to acknowledged commits.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

import apsw

from .model import Ack, Barrier, Begin, Create, DirSync, Event, Sync, Truncate, Unlink, Write

# Files whose loss or survival matters after a cut. Temporary files and statement journals
# (no name, or deleted on close) hold nothing a restart reads.
_TRACKED = apsw.SQLITE_OPEN_MAIN_DB | apsw.SQLITE_OPEN_MAIN_JOURNAL | apsw.SQLITE_OPEN_WAL \
    | apsw.SQLITE_OPEN_SUPER_JOURNAL
# The unix VFS syncs the directory on the first sync of a journal or WAL it opened with
# SQLITE_OPEN_CREATE (os_unix.c: unixOpen's syncDir, unixSync's UNIXFILE_DIRSYNC).
_DIRSYNC_ON_FIRST_SYNC = apsw.SQLITE_OPEN_MAIN_JOURNAL | apsw.SQLITE_OPEN_WAL \
    | apsw.SQLITE_OPEN_SUPER_JOURNAL

_names = itertools.count(1)


class Recorder:
    """The event stream of one run, shared by every connection and file of it."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._inodes = itertools.count(1)
        self._current: dict[str, int] = {}  # the directory as the running process sees it

    def opened(self, path: str, existed: bool, sector_size: int, psow: bool) -> int:
        inode = self._current.get(path) if existed else None
        if inode is None:
            inode = next(self._inodes)
            self._current[path] = inode
            self.events.append(Create(os.path.basename(path), inode, sector_size, psow))
        return inode

    def deleted(self, path: str) -> None:
        if self._current.pop(path, None) is not None:
            self.events.append(Unlink(os.path.basename(path)))

    def record(self, event: Event) -> None:
        self.events.append(event)

    def begin(self, commit: int) -> None:
        self.events.append(Begin(commit))

    def ack(self, commit: int) -> None:
        self.events.append(Ack(commit))

    def barrier(self) -> None:
        self.events.append(Barrier())


class RecordingVFS(apsw.VFS):
    def __init__(self, recorder: Recorder, *, drop_syncs: bool = False) -> None:
        self.vfs_name = f"powerloss-{os.getpid()}-{next(_names)}"
        self.recorder = recorder
        self.drop_syncs = drop_syncs
        super().__init__(self.vfs_name, "")  # "": inherit from the default VFS

    def xOpen(self, name: Any, flags: list[int]) -> apsw.VFSFile:
        path = name.filename() if isinstance(name, apsw.URIFilename) else name
        tracked = path is not None and bool(flags[0] & _TRACKED)
        existed = tracked and os.path.exists(path)
        return RecordingFile(self, name, flags, path if tracked else None, existed)

    def xDelete(self, filename: str, syncdir: bool) -> None:
        super().xDelete(filename, False)  # durability is modelled; see RecordingFile.xSync
        self.recorder.deleted(filename)
        if syncdir and not self.drop_syncs:
            self.recorder.record(DirSync("xDelete with dirSync"))


class RecordingFile(apsw.VFSFile):
    def __init__(self, vfs: RecordingVFS, name: Any, flags: list[int], path: str | None,
                 existed: bool) -> None:
        super().__init__("", name, flags)
        self.recorder = vfs.recorder
        self.drop_syncs = vfs.drop_syncs
        self.inode: int | None = None
        self.dirsync_pending = False
        if path is not None:
            psow = bool(self.xDeviceCharacteristics() & apsw.SQLITE_IOCAP_POWERSAFE_OVERWRITE)
            self.inode = self.recorder.opened(path, existed, self.xSectorSize(), psow)
            self.dirsync_pending = bool(flags[0] & apsw.SQLITE_OPEN_CREATE) and bool(
                flags[0] & _DIRSYNC_ON_FIRST_SYNC)

    def xWrite(self, data: Any, offset: int) -> None:
        super().xWrite(data, offset)
        if self.inode is not None:
            self.recorder.record(Write(self.inode, offset, bytes(data)))

    def xTruncate(self, newsize: int) -> None:
        super().xTruncate(newsize)
        if self.inode is not None:
            self.recorder.record(Truncate(self.inode, newsize))

    def xSync(self, flags: int) -> None:
        if self.inode is None:
            super().xSync(flags)
            return
        if self.drop_syncs:
            return  # "done", says the broken disk
        self.recorder.record(Sync(self.inode))
        if self.dirsync_pending:
            self.dirsync_pending = False
            self.recorder.record(DirSync("first sync of a created journal/WAL"))
