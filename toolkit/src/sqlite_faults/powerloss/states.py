"""Crash states: the files a disk may hold after the power goes at a given moment.

For a `Disk` at the moment of the cut, four kinds of state are built, in the spirit of
SQLite's own crash tests (src/test6.c):

- SYNCED: only what was synced, files and directory;
- ALL: every write reached the disk (what an application crash leaves);
- SUBSET: synced content plus a random subset of the unsynced writes and truncates (the OS
  may write back in any order), and a random prefix of each name's pending creates and
  unlinks (a journaling filesystem keeps metadata operations in order);
- SECTORS: as SUBSET, but each unsynced write is cut at the sector size the VFS reported and
  each piece is written, dropped, torn (a linear prefix or suffix of it reached the platter:
  sqlite.org/atomiccommit.html "Hardware Assumptions") or replaced by garbage; a file that
  grew may keep its new size with its new space never written (zeros).

Garbage is confined to the bytes a write covered when the file reported
SQLITE_IOCAP_POWERSAFE_OVERWRITE (the unix VFS does), and spans whole sectors when it did not:
SQLite trusts that flag (it stops padding WAL frames to sectors), so breaking it would be a
fault of the simulated disk, not of SQLite.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from enum import Enum

from .model import Disk, Inode, Truncate, Write, apply_op, put


class Kind(Enum):
    SYNCED = "synced"
    ALL = "all"
    SUBSET = "subset"
    SECTORS = "sectors"


# Chances for one sector piece of an unsynced write in a SECTORS state.
_KEEP, _DROP, _TORN = 0.4, 0.3, 0.15  # the rest: garbage


def materialise(disk: Disk, kind: Kind, rng: random.Random) -> dict[str, bytes]:
    """File name -> content after a cut now, for one draw of `kind`."""
    files: dict[str, bytes] = {}
    for name in disk.names():
        ops = disk.dir_ops(name)
        if kind is Kind.SYNCED:
            kept = 0
        elif kind is Kind.ALL:
            kept = len(ops)
        else:
            kept = rng.randint(0, len(ops))
        inode = ops[kept - 1] if kept else disk.durable.get(name)
        if inode is not None:
            files[name] = _content(disk.inodes[inode], kind, rng)
    return files


def _content(inode: Inode, kind: Kind, rng: random.Random) -> bytes:
    buf = bytearray(inode.synced)
    if kind is Kind.SYNCED or not inode.pending:
        return bytes(buf)
    if kind is Kind.ALL:
        for op in inode.pending:
            apply_op(buf, op)
        return bytes(buf)
    for op in inode.pending:
        if isinstance(op, Truncate) or kind is Kind.SUBSET:
            if rng.random() < 0.5:
                apply_op(buf, op)
            continue
        for offset, piece in _pieces(op, inode.sector_size):
            _land(buf, offset, piece, inode, rng)
    grown_to = max((op.offset + len(op.data) for op in inode.pending if isinstance(op, Write)),
                   default=0)
    if kind is Kind.SECTORS and grown_to > len(buf) and rng.random() < 0.5:
        # The size reached the disk, the data did not: new space reads as zeros.
        buf.extend(bytes(grown_to - len(buf)))
    return bytes(buf)


def _pieces(write: Write, sector: int) -> Iterator[tuple[int, bytes]]:
    """The write cut at sector boundaries."""
    offset, data = write.offset, write.data
    while data:
        take = min(len(data), sector - offset % sector)
        yield offset, data[:take]
        offset, data = offset + take, data[take:]


def _land(buf: bytearray, offset: int, piece: bytes, inode: Inode, rng: random.Random) -> None:
    roll = rng.random()
    if roll < _KEEP:
        put(buf, offset, piece)
    elif roll < _KEEP + _DROP:
        return
    elif roll < _KEEP + _DROP + _TORN:
        cut = rng.randint(1, len(piece) - 1) if len(piece) > 1 else 0
        if rng.random() < 0.5:
            put(buf, offset, piece[:cut])  # the write began at its first byte
        else:
            put(buf, offset + cut, piece[cut:])  # ... or at its last
    else:
        start, end = offset, offset + len(piece)
        if not inode.powersafe_overwrite:
            start = offset - offset % inode.sector_size
            end = max(end, min(start + inode.sector_size, len(buf)))
        put(buf, start, _garbage(end - start, rng))


def _garbage(size: int, rng: random.Random) -> bytes:
    # Zeros too: an unwritten block of a grown file, or a wiped sector.
    return bytes(size) if rng.random() < 0.3 else rng.randbytes(size)
