"""What sqlite.org promises for each journal mode and synchronous level, as checks.

Source: sqlite.org/pragma.html#pragma_synchronous (and wal.html for when NORMAL syncs the
WAL). A crash state breaks a promise when the database is damaged where the documentation
says it cannot be, or when more acknowledged commits are gone than it allows. The bound
depends on the moment of the cut, so it is computed from the disk model at that moment.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .model import Disk

JOURNAL_MODES = ("WAL", "DELETE")
SYNC_LEVELS = ("OFF", "NORMAL", "FULL", "EXTRA")


@dataclass(frozen=True)
class Cell:
    journal_mode: str
    synchronous: str

    @property
    def name(self) -> str:
        return f"{self.journal_mode}/{self.synchronous}"

    @classmethod
    def parse(cls, text: str) -> Cell:
        mode, _, level = text.upper().partition("/")
        if mode not in JOURNAL_MODES or level not in SYNC_LEVELS:
            raise ValueError(f"not a cell of the matrix: {text!r} (e.g. WAL/NORMAL)")
        return cls(mode, level)


CELLS = tuple(Cell(mode, level) for mode in JOURNAL_MODES for level in SYNC_LEVELS)


@dataclass(frozen=True)
class Promise:
    may_corrupt: bool
    # Acknowledged commits a cut at this moment may take; None: no bound is promised.
    loss_bound: Callable[[Disk], int] | None
    documented: str  # what the documentation says, quoted in a contradiction's message
    for_a_201: str  # what the service's 201 means under this setting, for the docs
    # The simulation must show this setting losing an acknowledged commit at least once;
    # otherwise it cannot tell this setting from a safer one and proves nothing about it.
    must_show_loss: bool = False


def _nothing(_disk: Disk) -> int:
    return 0


def _since_wal_sync(disk: Disk) -> int:
    return disk.acked_since_wal_sync()


def _last_if_unlink_pending(disk: Disk) -> int:
    return 1 if disk.journal_unlink_pending() else 0


_OFF = Promise(
    may_corrupt=True, loss_bound=None,
    documented="OFF: the database might become corrupted if the operating system crashes "
               "or the computer loses power before that data has been written to the disk",
    for_a_201="nothing past an application crash: after a power loss the database may be "
              "corrupt and any number of acknowledged users gone",
)


def promise(cell: Cell) -> Promise:
    if cell.synchronous == "OFF":
        return _OFF
    if cell.journal_mode == "WAL":
        if cell.synchronous == "NORMAL":
            return Promise(
                may_corrupt=False, loss_bound=_since_wal_sync, must_show_loss=True,
                documented="WAL with NORMAL is safe from corruption; a commit may roll back "
                           "after a power loss until the WAL is next synced (at a "
                           "checkpoint)",
                for_a_201="the user survives a crash of the service; a power loss may take "
                          "it back until the next checkpoint syncs the WAL (the service "
                          "checkpoints every SQLITE_CHECKPOINT_INTERVAL_S); the database "
                          "is never corrupted",
            )
        return Promise(
            may_corrupt=False, loss_bound=_nothing,
            documented=f"WAL with {cell.synchronous}: the WAL is synced at every commit, so "
                       "a committed transaction is durable across a power loss",
            for_a_201="the user survives a power loss",
        )
    if cell.synchronous == "EXTRA":
        return Promise(
            may_corrupt=False, loss_bound=_nothing,
            documented="DELETE with EXTRA: the directory is synced after the journal is "
                       "unlinked, so a commit is durable when it returns",
            for_a_201="the user survives a power loss",
        )
    if cell.synchronous == "FULL":
        return Promise(
            may_corrupt=False, loss_bound=_last_if_unlink_pending, must_show_loss=True,
            documented="DELETE with FULL: the journal's unlink is not synced (only EXTRA "
                       "syncs the directory), so a power loss right after a commit may bring "
                       "the journal back and roll that one commit back",
            for_a_201="the user survives a power loss, except the newest one while its "
                      "journal's unlink is not yet durable (until the next write syncs the "
                      "directory): that one may roll back",
        )
    return Promise(
        may_corrupt=True, loss_bound=_last_if_unlink_pending, must_show_loss=True,
        documented="DELETE with NORMAL: a very small chance that a power failure at just the "
                   "wrong time corrupts the database on an older filesystem; otherwise as "
                   "FULL",
        for_a_201="as FULL (the newest user may roll back), and a power loss at the wrong "
                  "moment may corrupt the database on a filesystem that tears writes",
    )
