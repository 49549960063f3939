"""The scenario matrix: named faults from the fault toolkit, each with what the service is
expected to do for each endpoint while the fault lasts.

Expectations:
- "available": success is possible; judged on p95 latency and error rate.
- "fail-fast": success is not possible for some requests; every request must still be
  answered, failures as 503/504, none later than the deadline plus a grace.
- "outage": the process is gone for part of the window; judged on recovery time and on
  losing nothing acknowledged.

The network scenarios (`network=True`) are the seed report's own: faults of a TCP proxy between
the load generator and the service (sqlite_faults/netproxy/), judged by the same objectives.
They and the process faults run with both client profiles (retry.py) side by side.

The same matrix runs on either backend (backends.py). A scenario whose mechanism exists
on one backend only says so (`only_on`, with the reason shown where it is skipped); one whose
mechanism differs keeps its expectations and names the PostgreSQL form in `pg_title`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlite_faults.engine_plugin import FaultControl
from sqlite_faults.inspect_db import query
from sqlite_faults.libfiu import FiuFault, fiu_available
from sqlite_faults.locks import LockHolder
from sqlite_faults.netproxy import NetworkFaults
from sqlite_faults.postgres_server import PostgresServer
from sqlite_faults.retry import PLAIN, PROFILES
from sqlite_faults.server import ServerProcess
from sqlite_faults.slowsync import SlowSync
from sqlite_faults.syscalls import AttachedSyscallFault, SyscallFault, threads_of
from sqlite_faults.target import Target
from sqlite_faults.traffic import CREATE, READ, ROOT

from .restarts import restart


@dataclass
class FaultContext:
    server: ServerProcess
    target: Target
    control: FaultControl  # the engine plugin's control server inside the service
    rng: random.Random
    window_s: float
    # Started before the load (see Scenario.lock_mode): spawning it in the fault window
    # would itself cost the service CPU just as the fault begins.
    holder: LockHolder | None = None
    slowsync: SlowSync | None = None  # preloaded into the server when a compiler exists
    postgres: PostgresServer | None = None  # the database server, on the postgres backend
    # The fault proxy between the load and the service (sqlite_faults/netproxy/).
    network: NetworkFaults | None = None
    notes: list[str] = field(default_factory=list)  # the scenario's notes in the report

    def io_threads(self) -> list[int]:
        """The threads that do the service's database I/O: every thread but the main one for
        a service that keeps its event loop free of I/O (io_threads = "workers"), else all."""
        threads = threads_of(self.server.pid)
        if self.target.io_threads == "workers":
            return [t for t in threads if t != self.server.pid]
        return threads

    def write_paths(self) -> list[Path]:
        """Files a commit writes: the WAL in WAL mode, the journal and database otherwise
        (asked of the database file itself: journal_mode=WAL persists in it)."""
        db_path = self.server.db_path
        wal = query(db_path, "PRAGMA journal_mode") == [("wal",)]
        suffixes = ("-wal",) if wal else ("-journal", "")
        return [db_path.with_name(db_path.name + suffix) for suffix in suffixes]


Fault = Callable[[FaultContext], contextlib.AbstractAsyncContextManager[None]]


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    fault: Fault | None
    expect: dict[str, str]  # endpoint -> "available" | "fail-fast" | "outage"
    needs_strace: bool = False
    needs_compiler: bool = False  # builds the slow-sync shim
    lock_mode: str | None = None  # a LockHolder the fault uses, started ahead
    only_on: str | None = None  # the one backend this fault exists for; None: both
    why_only: str = ""  # shown in the report where the scenario is skipped
    pg_title: str | None = None  # the title on PostgreSQL, where the mechanism differs
    # A fault between client and service (the fault proxy), as in the seed report's own
    # table; the others are injected in the database layer or the process.
    network: bool = False
    # The client profiles whose requests run through it (retry.py): the plain one always;
    # the retrying one too where a retry may cure what the fault does (the network and
    # the process faults).
    profiles: tuple[str, ...] = (PLAIN,)
    # Sample the service's lane gauges (target [metrics]) through the window: does a slow
    # network tie up the database lanes?
    observe_lanes: bool = False
    seed_row: str = ""  # the seed report's scenario this one reproduces, if any

    def skip_reason(self, backend: str) -> str:
        """Why this scenario cannot run on `backend` ("" when it can)."""
        if self.only_on is None or self.only_on == backend:
            return ""
        return self.why_only

    def on(self, backend: str) -> Scenario:
        """This scenario as it runs on `backend` (its title names that backend's mechanism)."""
        if backend == "postgres" and self.pg_title is not None:
            return dataclasses.replace(self, title=self.pg_title)
        return self


ALL_AVAILABLE = {ROOT: "available", CREATE: "available", READ: "available"}


@contextlib.asynccontextmanager
async def sql_errors(ctx: FaultContext, probability: float) -> AsyncIterator[None]:
    async with ctx.control.armed("sql-error", kind="busy", probability=probability,
                                 seed=ctx.rng.randrange(2**31)):
        yield


@contextlib.asynccontextmanager
async def slow_reads(ctx: FaultContext) -> AsyncIterator[None]:
    # Reads of the written table run for 2 s: past the hardened service's 1 s deadline.
    # Only single-table SELECTs (FROM table WHERE ...): a write's INSERT ... RETURNING and
    # its idempotency-key lookup (a JOIN) are part of the write.
    # Without a [database] table in the target: every SELECT but a bare `SELECT 1` probe.
    table = ctx.target.write.table
    match = (rf"(?s)^\s*SELECT\b.*\bFROM {table.table}\s+WHERE\b" if table is not None
             else r"^\s*SELECT\b(?!\s+1\s*$)")
    async with ctx.control.armed("slow", seconds=2.0, match=match):
        yield


@contextlib.asynccontextmanager
async def held_lock(ctx: FaultContext) -> AsyncIterator[None]:
    assert ctx.holder is not None
    await asyncio.to_thread(ctx.holder.acquire)
    try:
        yield
    finally:
        await asyncio.to_thread(ctx.holder.release)


@contextlib.asynccontextmanager
async def lock_pulses(ctx: FaultContext) -> AsyncIterator[None]:
    """The write lock taken for 150-250 ms, again and again: the report's latency pulses."""
    stop = asyncio.Event()

    holder = ctx.holder
    assert holder is not None

    async def pulse() -> None:
        while not stop.is_set():
            await asyncio.to_thread(holder.acquire, ctx.rng.uniform(0.15, 0.25))
            await asyncio.to_thread(holder.wait_released)
            await asyncio.sleep(ctx.rng.uniform(0.1, 0.3))  # the gap between pulses

    task = asyncio.create_task(pulse())
    try:
        yield
    finally:
        stop.set()
        await task


@contextlib.asynccontextmanager
async def _in_a_thread(fault: contextlib.AbstractContextManager[Any]) -> AsyncIterator[None]:
    """Enter and leave a blocking fault (it starts or signals a process) off the event loop,
    which keeps driving the load meanwhile."""
    await asyncio.to_thread(fault.__enter__)
    try:
        yield
    finally:
        await asyncio.to_thread(fault.__exit__, None, None, None)


@contextlib.asynccontextmanager
async def syscall_fault(ctx: FaultContext, syscalls: list[str], action: str) -> AsyncIterator[None]:
    paths = await asyncio.to_thread(ctx.write_paths)
    fault = AttachedSyscallFault(ctx.server.pid, SyscallFault(paths, syscalls, action),
                                 threads=ctx.io_threads())
    async with _in_a_thread(fault):
        yield


@contextlib.asynccontextmanager
async def slow_syncs(ctx: FaultContext) -> AsyncIterator[None]:
    """The report's 150-250 ms latency pulses, moved to the disk: each fsync/fdatasync of a
    database file waits that long for the window."""
    assert ctx.slowsync is not None
    with ctx.slowsync.window(150_000, 250_000):
        yield


@contextlib.asynccontextmanager
async def disk_full(ctx: FaultContext) -> AsyncIterator[None]:
    """Every write to the database files fails with ENOSPC: with libfiu (no cost outside the
    window) when the server runs under it, else with strace attached for the window."""
    if not fiu_available():
        async with syscall_fault(ctx, ["pwrite64", "write"], "error=ENOSPC"):
            yield
        return
    async with _in_a_thread(FiuFault(ctx.server.pid, "posix/io/rw/pwrite", errno.ENOSPC)):
        yield


@contextlib.asynccontextmanager
async def sigkill_and_restart(ctx: FaultContext) -> AsyncIterator[None]:
    """SIGKILL at the start of the window, restarted at once: the report's black-hole, moved
    to the process."""
    await restart(ctx.server, ctx.notes)  # kills it first; ServiceGone if it stays down
    yield


@contextlib.asynccontextmanager
async def postgres_stopped(ctx: FaultContext) -> AsyncIterator[None]:
    """`pg_ctl stop -m immediate` (no shutdown checkpoint: crash recovery at the next start)
    for the whole window, then started again; the service itself is never restarted, so the
    recovery phase measures its pool throwing dead connections away and reconnecting."""
    postgres = ctx.postgres
    assert postgres is not None
    await asyncio.to_thread(postgres.stop, "immediate")
    try:
        yield
    finally:
        # pg_ctl start -w returns once the server accepts connections: the fault ends there.
        await asyncio.to_thread(postgres.start)


@contextlib.asynccontextmanager
async def network_fault(ctx: FaultContext, fault: str, hold_s: float | None = None,
                        **params: float) -> AsyncIterator[None]:
    """A fault of the proxy between the load and the service, for the window (or for the
    first `hold_s` of it: the seed's black-hole lasted 1 s)."""
    assert ctx.network is not None
    if hold_s is None:
        async with ctx.network.during(fault, **params):
            yield
        return
    async with ctx.network.during(fault, **params):
        await asyncio.sleep(hold_s)  # the fault's own length, inside the window
    yield


def _network(name: str, title: str, seed_row: str, fault: str, hold_s: float | None = None,
             observe_lanes: bool = False, **params: float) -> Scenario:
    return Scenario(name, title, lambda ctx: network_fault(ctx, fault, hold_s, **params),
                    ALL_AVAILABLE, network=True, profiles=PROFILES,
                    observe_lanes=observe_lanes, seed_row=seed_row)


# The seed report's network scenarios, row for row, through the fault proxy. Its table
# lists the failing rows; the rest are named in its summary ("latency spikes, jitter,
# bandwidth caps and random HTTP 500 errors").
NETWORK_SCENARIOS = [
    _network("net-latency", "Network latency: +50 ms each way on every packet",
             "latency spikes", "latency", ms=50),
    _network("net-latency-pulses", "Network latency pulses: +150-250 ms for 1 s in every 2 s",
             "Periodic 150-250 ms latency pulses during load", "latency-pulses",
             low_ms=150, high_ms=250, pulse_ms=1000, gap_ms=1000),
    _network("net-jitter", "Network jitter: every packet delayed 0-100 ms",
             "jitter", "jitter", ms=100),
    _network("net-bandwidth", "Bandwidth cap: 4 KiB/s each way per connection",
             "bandwidth caps", "bandwidth", observe_lanes=True, kib_per_s=4),
    _network("net-packet-loss", "5 % packet loss (a lost packet waits a 200 ms retransmission)",
             "5 % packet loss for 4 s", "packet-loss", probability=0.05, rto_ms=200),
    _network("net-blackhole", "Full black-hole for 1 s (nothing forwarded, nothing answered)",
             "Full black-hole for 1 s", "blackhole", hold_s=1.0),
    _network("net-http-500", "Random HTTP 500s on 5 % of requests, from the proxy",
             "random HTTP 500 errors", "http-500", probability=0.05),
]

_FILES_ARE_THE_SERVERS = ("on PostgreSQL the service process writes no database files: the "
                          "server's own processes write and sync them, and this fault is "
                          "injected into the service process")

SCENARIOS = [
    Scenario("steady-state", "Steady state (no fault)", None, ALL_AVAILABLE),
    # The "busy" kind is SQLITE_BUSY on SQLite and a serialization failure (40001)
    # on PostgreSQL: the transient error each backend's classifier retries.
    Scenario("transient-errors-low", "Transient DB errors (SQLITE_BUSY) on 5 % of statements",
             lambda ctx: sql_errors(ctx, 0.05), ALL_AVAILABLE,
             pg_title="Transient DB errors (40001 serialization failure) on 5 % of statements"),
    Scenario("transient-errors-high", "Transient DB errors (SQLITE_BUSY) on 60 % of statements",
             lambda ctx: sql_errors(ctx, 0.6),
             {ROOT: "available", CREATE: "fail-fast", READ: "fail-fast"},
             pg_title="Transient DB errors (40001 serialization failure) on 60 % of "
                      "statements"),
    # LockHolder's "immediate" mode on PostgreSQL: LOCK TABLE users IN EXCLUSIVE MODE, which
    # blocks writers and not readers, as BEGIN IMMEDIATE does in WAL mode.
    Scenario("write-lock-pulses", "Write lock held by another process for 150-250 ms pulses",
             lock_pulses, ALL_AVAILABLE, lock_mode="immediate",
             pg_title="Table lock (EXCLUSIVE) on users held by another session for 150-250 ms "
                      "pulses"),
    Scenario("lock-past-deadline", "Write lock held by another process past the deadline",
             held_lock, {ROOT: "available", CREATE: "fail-fast", READ: "available"},
             lock_mode="immediate",
             pg_title="Table lock (EXCLUSIVE) on users held by another session past the "
                      "deadline"),
    Scenario("slow-statements", "User reads slowed to 2 s inside SQLite",
             slow_reads, {ROOT: "available", CREATE: "available", READ: "fail-fast"},
             pg_title="User reads slowed to 2 s in the server (pg_sleep)"),
    Scenario("slow-fsync-pulses", "Every sync of the database files delayed by 150-250 ms",
             slow_syncs, ALL_AVAILABLE, needs_compiler=True, only_on="sqlite",
             why_only=f"SQLite-only: {_FILES_ARE_THE_SERVERS} (the slow-sync shim is preloaded "
                      "into the service and matches its users.db files)"),
    Scenario("disk-full", "Disk full (ENOSPC) on every write to the database files",
             disk_full, {ROOT: "available", CREATE: "fail-fast", READ: "available"},
             needs_strace=not fiu_available(), only_on="sqlite",
             why_only=f"SQLite-only: {_FILES_ARE_THE_SERVERS} (libfiu fails the service's own "
                      "pwrite calls). A full disk under PostgreSQL fails the server's writes "
                      "instead (SQLSTATE 53100, or a server restart when its WAL cannot be "
                      "written; postgres-immediate-stop covers such an outage)"),
    # On PostgreSQL there is no checkpoint to starve, but the same long reader (REPEATABLE
    # READ, holding its snapshot and an ACCESS SHARE lock on users) holds back VACUUM's
    # horizon; the service must not notice it either way.
    Scenario("checkpoint-starvation", "A long reader in another process pins a snapshot",
             held_lock, ALL_AVAILABLE, lock_mode="read",
             pg_title="A long REPEATABLE READ transaction in another session holds its "
                      "snapshot"),
    Scenario("sigkill-restart", "SIGKILL of the server process, restarted at once",
             sigkill_and_restart, {ROOT: "outage", CREATE: "outage", READ: "outage"},
             profiles=PROFILES),
    # GET / stays 200 (it reports "database": "unavailable" within its own deadline); reads
    # and writes must fail fast while the server is down and work again without a restart of
    # the service.
    Scenario("postgres-immediate-stop",
             "PostgreSQL stopped abruptly (pg_ctl stop -m immediate) for the window, then "
             "restarted", postgres_stopped,
             {ROOT: "available", CREATE: "fail-fast", READ: "fail-fast"}, only_on="postgres",
             why_only="PostgreSQL-only: it stops the database server, and embedded SQLite has "
                      "none (sigkill-restart is the nearest fault)", profiles=PROFILES),
    *NETWORK_SCENARIOS,
]


def matrix(backend: str, wanted: set[str]) -> list[Scenario]:
    """The scenarios to run on `backend` (all of them, or the `wanted` ones), titled for it.

    A scenario that exists only for the other backend stays in the matrix, to be reported
    as skipped with its reason, with one exception: the SQLite run leaves PostgreSQL-only
    scenarios out unless they are asked for by name, so the default report is unchanged.
    """
    chosen = [s for s in SCENARIOS if s.name in wanted] if wanted else [
        s for s in SCENARIOS if not (backend == "sqlite" and s.only_on == "postgres")]
    return [s.on(backend) for s in chosen]
