"""What a disk holds after a power cut: a model of files, syncs and the directory.

The recording VFS (vfs.py) turns every write, truncate, sync, create and delete SQLite makes
into an `Event`. Replaying events into a `Disk` gives, at any point, what is durable and what
is not:

- each file (inode) has its content as of its last sync, and the writes and truncates made
  since, in order: `xSync` makes them durable (SQLite relies on nothing else);
- the directory has its durable entries and the creates and unlinks made since: only a
  directory sync makes them durable. A file's own sync does not, as POSIX promises nothing
  more; the unix VFS syncs the directory itself on the first sync of a journal or WAL it
  created, and on `xDelete` with the dirSync flag (synchronous=EXTRA), and the recording VFS
  emits a `DirSync` exactly there.

Markers from the workload (`Begin`, `Ack`) ride in the same stream, so a cut at any point
knows which commits had been acknowledged before it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

JOURNAL_SUFFIX = "-journal"
WAL_SUFFIX = "-wal"


@dataclass(frozen=True, slots=True)
class Create:
    name: str
    inode: int
    sector_size: int  # as the VFS reports it for this file
    powersafe_overwrite: bool  # SQLITE_IOCAP_POWERSAFE_OVERWRITE: torn writes spare the rest


@dataclass(frozen=True, slots=True)
class Unlink:
    name: str


@dataclass(frozen=True, slots=True)
class DirSync:
    why: str


@dataclass(frozen=True, slots=True)
class Write:
    inode: int
    offset: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Truncate:
    inode: int
    size: int


@dataclass(frozen=True, slots=True)
class Sync:
    inode: int


@dataclass(frozen=True, slots=True)
class Begin:
    commit: int  # 1-based number of the workload's create


@dataclass(frozen=True, slots=True)
class Ack:
    commit: int  # COMMIT returned: the service would now answer 201


@dataclass(frozen=True, slots=True)
class Barrier:
    """Everything so far is durable (the database existed long before the power cut)."""


Event = Create | Unlink | DirSync | Write | Truncate | Sync | Begin | Ack | Barrier
FileOp = Write | Truncate


@dataclass
class Inode:
    sector_size: int
    powersafe_overwrite: bool
    synced: bytearray = field(default_factory=bytearray)
    pending: list[FileOp] = field(default_factory=list)
    acked_at_sync: int = 0  # acknowledged commits when this file was last synced

    def sync(self, acked: int) -> None:
        for op in self.pending:
            apply_op(self.synced, op)
        self.pending.clear()
        self.acked_at_sync = acked


def apply_op(buf: bytearray, op: FileOp) -> None:
    if isinstance(op, Write):
        put(buf, op.offset, op.data)
    elif op.size < len(buf):
        del buf[op.size:]
    else:  # ftruncate past the end extends with zeros
        buf.extend(bytes(op.size - len(buf)))


def put(buf: bytearray, offset: int, data: bytes) -> None:
    if offset > len(buf):
        buf.extend(bytes(offset - len(buf)))  # a hole reads back as zeros
    buf[offset:offset + len(data)] = data


@dataclass
class Disk:
    """The durable and the volatile state of one directory, event by event."""

    inodes: dict[int, Inode] = field(default_factory=dict)
    durable: dict[str, int] = field(default_factory=dict)  # name -> inode, as synced
    pending_dir: list[tuple[str, int | None]] = field(default_factory=list)  # None: unlink
    acked: int = 0
    started: int = 0
    applied: int = 0  # events replayed so far

    def apply(self, event: Event) -> None:
        self.applied += 1
        if isinstance(event, Write | Truncate):
            self.inodes[event.inode].pending.append(event)
        elif isinstance(event, Sync):
            self.inodes[event.inode].sync(self.acked)
        elif isinstance(event, Create):
            self.inodes[event.inode] = Inode(event.sector_size, event.powersafe_overwrite,
                                             acked_at_sync=self.acked)
            self.pending_dir.append((event.name, event.inode))
        elif isinstance(event, Unlink):
            self.pending_dir.append((event.name, None))
        elif isinstance(event, DirSync):
            self.durable = self.current()
            self.pending_dir.clear()
        elif isinstance(event, Begin):
            self.started = event.commit
        elif isinstance(event, Ack):
            self.acked = event.commit
        elif isinstance(event, Barrier):
            for inode in self.inodes.values():
                inode.sync(self.acked)
            self.durable = self.current()
            self.pending_dir.clear()

    def current(self) -> dict[str, int]:
        """The directory as running processes see it (durable plus pending)."""
        names = dict(self.durable)
        for name, inode in self.pending_dir:
            if inode is None:
                names.pop(name, None)
            else:
                names[name] = inode
        return names

    def names(self) -> list[str]:
        return sorted(set(self.durable) | {name for name, _ in self.pending_dir})

    def dir_ops(self, name: str) -> list[int | None]:
        return [inode for n, inode in self.pending_dir if n == name]

    # -- what the contract needs to know about the moment of the cut ---------------------

    def acked_since_wal_sync(self) -> int:
        """Acknowledged commits made after the WAL's last sync: what synchronous=NORMAL may
        lose. 0 when no WAL is open."""
        for name, inode in self.current().items():
            if name.endswith(WAL_SUFFIX):
                return self.acked - self.inodes[inode].acked_at_sync
        return 0

    def journal_unlink_pending(self) -> bool:
        """A rollback journal was deleted and that delete is not durable yet: after a cut the
        journal may be back, hot, and roll back a commit that was acknowledged."""
        return any(inode is None and name.endswith(JOURNAL_SUFFIX)
                   for name, inode in self.pending_dir)
