"""PostgreSQL itself stopped abruptly (`pg_ctl stop -m immediate`: no shutdown checkpoint,
crash recovery at the next start) and restarted under load. While it is down every request
gets a clear 503/504 within its deadline, never a hang or a 500; once it is back the service
serves again without a restart of its own (pool pre-ping replaces dead connections); nothing
acknowledged is lost and every indeterminate create resolves through its key."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

import httpx
import pytest
from sqlite_faults.ledger import WriteLedger
from sqlite_faults.postgres_server import PostgresServer
from sqlite_faults.server import ServerProcess
from sqlite_faults.summary import DurabilitySummary, Plan
from sqlite_faults.traffic import LoadGenerator

from examples.targets import USERS_WRITE

pytestmark = pytest.mark.postgres_only

DEADLINE_S = 1.0
CLIENTS = 4


async def answers_while_down(base_url: str, samples: int = 6) -> list[tuple[int, float]]:
    async with httpx.AsyncClient(base_url=base_url, timeout=10.0) as client:
        out = []
        for i in range(samples):
            started = time.monotonic()
            response = await client.post("/users/", json={"name": f"down-{i}-{started}",
                                                          "password": "long enough"})
            out.append((response.status_code, time.monotonic() - started))
        return out


async def test_postgres_stopped_abruptly_under_load_then_restarted(
    servers: Callable[..., ServerProcess], postgres_server: PostgresServer,
    plan: Callable[[int], Plan], rng: random.Random, durability_summary: DurabilitySummary,
) -> None:
    scenario = durability_summary.scenario("postgres-immediate-stop")
    server = servers(db_deadline_s=DEADLINE_S, readyz_deadline_s=0.5)
    server.start()
    ledger = WriteLedger(random.Random(rng.random()), USERS_WRITE, prefix="pgstop")
    steps = plan(2)
    for cycle in steps.cycles(scenario):
        writers = LoadGenerator.writers(ledger, CLIENTS, random.Random(rng.random()),
                                        stop_when_gone=True)
        writers.start(server.base_url)
        await asyncio.sleep(rng.uniform(0.2, 0.6))  # when the stop lands: the fault schedule
        await asyncio.to_thread(postgres_server.stop, "immediate")

        for status, seconds in await answers_while_down(server.base_url):
            assert status in (503, 504), status
            assert seconds < DEADLINE_S + 0.5

        await asyncio.to_thread(postgres_server.start)
        scenario.ready_seconds.append(await server.wait_answering(30.0))
        await writers.stop()
        assert server.running, "the service must ride out the database restart"
        report = await ledger.check(server.base_url, server.database_url)
        scenario.add_report(report)
        assert report.ok, f"cycle {cycle}: {report.problems}"
    assert scenario.acknowledged > 0
