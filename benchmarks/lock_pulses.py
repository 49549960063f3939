"""Write-lock pulses under a mixed load: writers and readers at once (two wrk processes), first
without locks, then with another process taking SQLite's write lock (`BEGIN IMMEDIATE`, held
by sqlite_faults.locks.LockHolder from its own connection) for `pulse_s` every `every_s`.

The second phase is judged against the first: the same load on the same server, so the ratio
of the readers' p99 says what the pulses cost the readers (in WAL they are never blocked by a
writer; only contention for the CPU and the event loop can slow them), and the error count
says whether any writer was refused while it waited out a pulse.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlite_faults.locks import LockHolder
from sqlite_faults.server import ServerProcess

from benchmarks.load import Cell, WrkRun, script_args, to_cell

LEAD_S = 1.0  # load first, so the first pulse meets a steady state
TAIL_S = 0.5  # and the last one ends before the load does


@dataclass
class Phase:
    locks: bool
    duration_s: float
    writers: Cell
    readers: Cell
    pulses: list[list[float]] = field(default_factory=list)  # [began at s, held s]
    answered_after: bool = True

    @property
    def errors(self) -> int:
        return self.writers.errors + self.readers.errors


def pulse_offsets(duration_s: float, every_s: float, pulse_s: float) -> list[float]:
    """When each pulse starts, from the start of the load: every `every_s` after LEAD_S, as
    many as end TAIL_S before the load does."""
    offsets = []
    at = LEAD_S
    while at + pulse_s <= duration_s - TAIL_S:
        offsets.append(at)
        at += every_s
    return offsets


def run_phase(wrk: str, server: ServerProcess, scripts: dict[str, Path], ids: tuple[int, int],
              *, writers: int, readers: int, duration_s: float, timeout_s: float,
              client_cpus: str | None, server_cpus: str, holder: LockHolder | None,
              every_s: float, pulse_s: float) -> Phase:
    common: dict[str, Any] = dict(duration_s=duration_s, timeout_s=timeout_s, scripts=scripts,
                                  cpus=client_cpus)
    tag = "locks" if holder else "nolocks"
    posting = WrkRun.start(wrk, server.base_url, "create_user", concurrency=writers,
                           script_args=script_args("create_user", ids, tag), **common)
    reading = WrkRun.start(wrk, server.base_url, "get_user", concurrency=readers,
                           script_args=script_args("get_user", ids, tag), **common)
    started = time.monotonic()
    pulses: list[list[float]] = []
    for offset in pulse_offsets(duration_s, every_s, pulse_s) if holder else []:
        assert holder is not None
        time.sleep(max(0.0, started + offset - time.monotonic()))  # the schedule's pace
        holder.acquire(pulse_s)  # returns once the lock is held; the child times the hold
        holder.wait_released()
        assert holder.acquired_at is not None and holder.released_at is not None
        pulses.append([round(holder.acquired_at - started, 2),
                       round(holder.released_at - holder.acquired_at, 2)])
    phase = Phase(
        locks=holder is not None, duration_s=duration_s,
        writers=to_cell(posting.result(), "hardened", "create_user", writers,
                        server_cpus=server_cpus),
        readers=to_cell(reading.result(), "hardened", "get_user", readers,
                        server_cpus=server_cpus),
        pulses=pulses,
    )
    phase.answered_after = server.answers_ready_now()
    return phase


def lock_pulse_scenario(wrk: str, server: ServerProcess, scripts: dict[str, Path],
                        ids: tuple[int, int], *, duration_s: float, client_cpus: str | None,
                        server_cpus: str, writers: int = 16, readers: int = 16,
                        every_s: float = 5.0, pulse_s: float = 2.0) -> list[Phase]:
    """The same load twice on `server`: without locks, then with pulses."""
    # A request that waits out a whole pulse must still count as answered, not as late.
    timeout_s = max(duration_s, math.ceil(2 * pulse_s) + 5)
    phases = []
    holder = LockHolder(server.db_path, mode="immediate")
    # Started before the load: a Python process's start costs CPU that would otherwise land
    # on the first pulse.
    holder.start()
    try:
        for with_locks in (False, True):
            phases.append(run_phase(
                wrk, server, scripts, ids, writers=writers, readers=readers,
                duration_s=duration_s, timeout_s=timeout_s, client_cpus=client_cpus,
                server_cpus=server_cpus, holder=holder if with_locks else None,
                every_s=every_s, pulse_s=pulse_s))
    finally:
        holder.close()
    return phases
