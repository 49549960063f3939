"""The report's instrument (load generator and fault proxy) on a trivial service, where every
figure is the instrument's own: after each network fault is cleared, latency is back within
the recovery objective, as a service that does nothing would have it.

On this code's previous transport (httpcore's pool) it was not: a fault that raised the
connections in use made the generator's per-request cost grow with them, and after the fault
was cleared every request waited behind the generator (recovery p50 1.2-2 s at 270
requests/s, with client timeouts), which the report charged to the service.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator

import pytest
from sqlite_faults.echo import TARGET, EchoServer
from sqlite_faults.ledger import WriteLedger
from sqlite_faults.netproxy import NetworkFaults
from sqlite_faults.report.slo import Objectives, PhaseStats, recovery_time
from sqlite_faults.retry import PLAIN, RETRYING
from sqlite_faults.traffic import OPEN, LoadGenerator, LoadModel, Sample

pytestmark = pytest.mark.timeout(180)

RATE = 400  # requests/s: above where the old transport's cost per request ran away
FAULT_S = 1.5
RECOVERY_S = 2.0
# Every network fault of the report's matrix, with the report's own parameters.
FAULTS: list[tuple[str, dict[str, float]]] = [
    ("latency", {"ms": 50}),
    ("jitter", {"ms": 100}),
    ("latency-pulses", {"low_ms": 150, "high_ms": 250, "pulse_ms": 500, "gap_ms": 500}),
    ("packet-loss", {"probability": 0.05, "rto_ms": 200}),
    ("bandwidth", {"kib_per_s": 4}),
    ("http-500", {"probability": 0.05}),
    ("blackhole", {}),
]


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    with EchoServer() as server:
        yield server


async def _through_each_fault(echo: EchoServer, seed: int
                              ) -> tuple[list[Sample], list[tuple[str, float]]]:
    """Open-loop load through the proxy while each fault is set, then cleared in turn; the
    samples, and each fault's name with the time it was cleared."""
    rng = random.Random(seed)
    ledgers = {p: WriteLedger(random.Random(rng.random()), TARGET.write, prefix=p)
               for p in (PLAIN, RETRYING)}
    generator = LoadGenerator(TARGET, ledgers, random.Random(rng.random()),
                              LoadModel(OPEN, rate=RATE, timeout_s=3.0),
                              profiles=(PLAIN, RETRYING))
    cleared: list[tuple[str, float]] = []
    with NetworkFaults(("127.0.0.1", echo.port), seed=seed) as proxy:
        stop = asyncio.Event()
        started = time.monotonic()
        loading = asyncio.create_task(generator.run(proxy.base_url, stop, started))
        await asyncio.sleep(1.0)  # the steady state: phase lengths are the design
        for name, params in FAULTS:
            async with proxy.during(name, **params):
                await asyncio.sleep(FAULT_S)
            cleared.append((name, time.monotonic() - started))
            await asyncio.sleep(RECOVERY_S)
        stop.set()
        await loading
    return generator.samples, cleared


def test_latency_returns_to_steady_state_after_every_network_fault(
        echo: EchoServer, fault_seed: int) -> None:
    seed = fault_seed  # printed on failure, replayed with --fault-seed
    samples, cleared = asyncio.run(_through_each_fault(echo, seed))
    objectives = Objectives.load()
    steady = PhaseStats.of([s for s in samples if s.at + s.latency < 1.0])
    failures = []
    for name, at in cleared:
        window = [s for s in samples if at <= s.at < at + RECOVERY_S]
        recovered = recovery_time(window, at, objectives)
        stats = PhaseStats.of(window)
        if recovered is None or recovered >= objectives.recovery_s / 2:
            failures.append(f"{name}: recovered after {recovered} s; recovery window n "
                            f"{stats.count}, p50 {stats.p50_ms} ms, p95 {stats.p95_ms} ms, "
                            f"statuses {stats.statuses}")
    assert not failures, (f"seed {seed}; steady p50 {steady.p50_ms} ms, p95 "
                          f"{steady.p95_ms} ms; " + "; ".join(failures))
