"""The scenario matrix: named faults from the fault toolkit, each with what the service is
expected to do for each endpoint while the fault lasts.

Expectations:
- "available": success is possible; judged on p95 latency and error rate.
- "fail-fast": success is not possible for some requests; every request must still be
  answered, failures as 503/504, none later than the deadline plus a grace.
- "outage": the process is gone for part of the window; judged on recovery time and on
  losing nothing acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from faults.libfiu import FiuFault, fiu_available
from faults.locks import LockHolder
from faults.server import ServerProcess
from faults.slowsync import SlowSync
from faults.syscalls import AttachedSyscallFault, SyscallFault

from .load import CREATE, READ, ROOT
from .targets import Target


@dataclass
class FaultContext:
    server: ServerProcess
    target: Target
    rng: random.Random
    window_s: float
    # Started before the load (see Scenario.lock_mode): spawning it in the fault window
    # would itself cost the service CPU just as the fault begins.
    holder: LockHolder | None = None
    slowsync: SlowSync | None = None  # preloaded into the server when a compiler exists

    async def agent(self, method: str, path: str, body: dict[str, Any] | None = None) -> None:
        async with httpx.AsyncClient(base_url=self.server.base_url, timeout=10.0) as client:
            response = await client.request(method, path, json=body)
            response.raise_for_status()


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


ALL_AVAILABLE = {ROOT: "available", CREATE: "available", READ: "available"}


@contextlib.asynccontextmanager
async def sql_errors(ctx: FaultContext, probability: float) -> AsyncIterator[None]:
    await ctx.agent("POST", "/_faults/sql-error", {
        "engine": "any", "kind": "busy", "probability": probability,
        "seed": ctx.rng.randrange(2**31),
    })
    try:
        yield
    finally:
        await ctx.agent("DELETE", "/_faults")


@contextlib.asynccontextmanager
async def slow_reads(ctx: FaultContext) -> AsyncIterator[None]:
    # Reads of users run for 2 s: past the hardened service's 1 s deadline.
    await ctx.agent("POST", "/_faults/slow", {"engine": "reader", "seconds": 2.0,
                                              "match": "FROM users"})
    try:
        yield
    finally:
        await ctx.agent("DELETE", "/_faults")


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
async def syscall_fault(ctx: FaultContext, syscalls: list[str], action: str) -> AsyncIterator[None]:
    paths = ctx.target.write_paths(ctx.server.db_path)
    fault = AttachedSyscallFault(ctx.server.pid, SyscallFault(paths, syscalls, action),
                                 threads=ctx.target.io_threads(ctx.server.pid))
    await asyncio.to_thread(fault.__enter__)
    try:
        yield
    finally:
        await asyncio.to_thread(fault.__exit__, None, None, None)


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
    fault = FiuFault(ctx.server.pid, "posix/io/rw/pwrite", errno.ENOSPC)
    await asyncio.to_thread(fault.__enter__)
    try:
        yield
    finally:
        await asyncio.to_thread(fault.__exit__, None, None, None)


@contextlib.asynccontextmanager
async def sigkill_and_restart(ctx: FaultContext) -> AsyncIterator[None]:
    """SIGKILL at the start of the window, restarted at once: the report's black-hole, moved
    to the process."""
    ctx.server.kill()
    await asyncio.to_thread(ctx.server.start, same_port=True)
    yield


SCENARIOS = [
    Scenario("steady-state", "Steady state (no fault)", None, ALL_AVAILABLE),
    Scenario("transient-errors-low", "Transient DB errors (SQLITE_BUSY) on 5 % of statements",
             lambda ctx: sql_errors(ctx, 0.05), ALL_AVAILABLE),
    Scenario("transient-errors-high", "Transient DB errors (SQLITE_BUSY) on 60 % of statements",
             lambda ctx: sql_errors(ctx, 0.6),
             {ROOT: "available", CREATE: "fail-fast", READ: "fail-fast"}),
    Scenario("write-lock-pulses", "Write lock held by another process for 150-250 ms pulses",
             lock_pulses, ALL_AVAILABLE, lock_mode="immediate"),
    Scenario("lock-past-deadline", "Write lock held by another process past the deadline",
             held_lock, {ROOT: "available", CREATE: "fail-fast", READ: "available"},
             lock_mode="immediate"),
    Scenario("slow-statements", "User reads slowed to 2 s inside SQLite",
             slow_reads, {ROOT: "available", CREATE: "available", READ: "fail-fast"}),
    Scenario("slow-fsync-pulses", "Every sync of the database files delayed by 150-250 ms",
             slow_syncs, ALL_AVAILABLE, needs_compiler=True),
    Scenario("disk-full", "Disk full (ENOSPC) on every write to the database files",
             disk_full, {ROOT: "available", CREATE: "fail-fast", READ: "available"},
             needs_strace=not fiu_available()),
    Scenario("checkpoint-starvation", "A long reader in another process pins a snapshot",
             held_lock, ALL_AVAILABLE, lock_mode="read"),
    Scenario("sigkill-restart", "SIGKILL of the server process, restarted at once",
             sigkill_and_restart, {ROOT: "outage", CREATE: "outage", READ: "outage"}),
]
