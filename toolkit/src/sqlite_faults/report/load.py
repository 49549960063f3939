"""A seeded asyncio load generator that records every request's outcome and latency.

Clients loop over a weighted mix of the target's three requests (sqlite_faults/target.py:
its probe, its write and its read) with a short random think time. Writes go through the
write ledger (each with its own idempotency key when the service takes one), so whatever a
write was told can be checked against the database later; reads pick an acknowledged write.
Client timeouts are bounded: a service that stops answering costs the run `timeout_s`, not
its 30 s pool timeout.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from sqlite_faults.ledger import WriteLedger
from sqlite_faults.outcome import outcome_of
from sqlite_faults.target import Target

# The three roles a target's requests play; a report labels them with the target's own
# method and path (Target.labels).
ROOT = "probe"
CREATE = "write"
READ = "read"
ENDPOINTS = (ROOT, CREATE, READ)
DEFAULT_MIX = {ROOT: 0.2, CREATE: 0.3, READ: 0.5}


@dataclass(frozen=True)
class Sample:
    endpoint: str
    phase: str  # steady, fault or recovery (set by the runner from the fault window)
    at: float  # seconds since the scenario started
    latency: float  # seconds
    status: int  # 0 when no HTTP answer came (timeout, refused, reset)
    code: str  # the JSON error code, the exception name, or "" on success

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def labels(target: Target) -> dict[str, str]:
    """Role -> the target's own request, e.g. {"write": "POST /users/", ...}."""
    return {ROOT: target.probe_request.label, CREATE: target.write.request.label,
            READ: target.read.label}


class LoadGenerator:
    def __init__(self, target: Target, ledger: WriteLedger, rng: random.Random,
                 clients: int = 16,
                 timeout_s: float = 3.0, think_s: float = 0.04,
                 mix: dict[str, float] | None = None) -> None:
        self.target = target
        self.ledger = ledger
        self.rng = rng
        self.clients = clients
        self.timeout_s = timeout_s
        self.think_s = think_s
        self.mix = mix or DEFAULT_MIX
        self.samples: list[Sample] = []

    async def run(self, base_url: str, phase: Callable[[], str], stop: asyncio.Event,
                  started: float) -> None:
        """Load until `stop` is set (a restarted server comes back on the same port)."""
        limits = httpx.Limits(max_connections=self.clients * 2)
        async with httpx.AsyncClient(base_url=base_url, timeout=self.timeout_s,
                                     limits=limits) as client:
            await asyncio.gather(*(
                self._client(client, phase, stop, started, random.Random(self.rng.random()))
                for _ in range(self.clients)
            ))

    async def _client(self, client: httpx.AsyncClient, phase: Callable[[], str],
                      stop: asyncio.Event, started: float, rng: random.Random) -> None:
        endpoints, weights = zip(*self.mix.items(), strict=True)
        while not stop.is_set():
            endpoint = rng.choices(endpoints, weights)[0]
            current_phase = phase()
            t0 = time.monotonic()
            status, code = await self._request(client, endpoint, rng)
            self.samples.append(Sample(endpoint, current_phase, t0 - started,
                                       time.monotonic() - t0, status, code))
            await asyncio.sleep(rng.uniform(0, self.think_s))  # think time, part of the load

    async def _request(self, client: httpx.AsyncClient, endpoint: str,
                       rng: random.Random) -> tuple[int, str]:
        if endpoint == CREATE:
            create = self.ledger.new_create()
            await self.ledger.send(client, create)
            return create.status or 0, create.detail if create.outcome != "acknowledged" else ""
        if endpoint == READ:
            id_field = self.target.write.id_field
            acked = [c.user for c in self.ledger.creates[-200:]
                     if c.outcome == "acknowledged" and c.user]
            new_id = rng.choice(acked)[id_field] if acked else 1
            method, url = self.target.read.method, self.target.write.read_path(new_id)
        else:
            method, url = self.target.probe_request.method, self.target.probe_request.path
        try:
            response = await client.request(method, url)
        except httpx.HTTPError as exc:
            outcome = outcome_of(None, exc)
        else:
            outcome = outcome_of(response)
        return outcome.status, outcome.code
