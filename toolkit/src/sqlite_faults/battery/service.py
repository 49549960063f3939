"""One service under the battery: its process, its fault control, and a client for it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from sqlite_faults.engine_plugin import FaultControl
from sqlite_faults.outcome import Outcome, outcome_of
from sqlite_faults.server import ServerProcess
from sqlite_faults.target import Target


@dataclass(frozen=True)
class Answer:
    outcome: Outcome
    seconds: float
    body: Any = None

    def __str__(self) -> str:
        what = f"{self.outcome.status} {self.outcome.code}".strip() if self.outcome.answered \
            else f"no answer ({self.outcome.code})"
        return f"{what} after {self.seconds:.2f} s"


class BatteryService:
    def __init__(self, target: Target, work: Path) -> None:
        self.target = target
        self.work = work
        self.control = FaultControl.new()
        self.server = ServerProcess.for_target(target, work / target.name, env=self.control.env)
        self._unique = 0

    @property
    def db_path(self) -> Path:
        return self.server.db_path

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.kill()

    def ensure_answering(self) -> None:
        """Restart a service a check left wedged or dead, so the next check measures it."""
        if self.server.answers_ready_now(timeout_s=2.0):
            return
        self.server.kill()
        self.server.start(same_port=True)

    def unique(self, tag: str = "b") -> str:
        self._unique += 1
        return f"battery-{tag}-{self._unique}-{time.monotonic_ns() % 10**9}"

    async def write(self, client: httpx.AsyncClient, tag: str = "b",
                    body: Any = None) -> Answer:
        """The target's write request (a fresh, valid body unless `body` is given)."""
        request = self.target.write.request
        if body is None:
            unique = self.unique(tag)
            body = self.target.write.body_for(unique, f"pw-{unique}")
        return await self._send(client, request.method, request.path, json=body)

    async def read(self, client: httpx.AsyncClient, new_id: Any) -> Answer:
        read = self.target.read
        return await self._send(client, read.method, self.target.write.read_path(new_id))

    async def get(self, client: httpx.AsyncClient, path: str) -> Answer:
        return await self._send(client, "GET", path)

    async def _send(self, client: httpx.AsyncClient, method: str, path: str,
                    **kwargs: Any) -> Answer:
        started = time.monotonic()
        try:
            response = await client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            return Answer(outcome_of(None, exc), time.monotonic() - started)
        body: Any = None
        with contextlib.suppress(ValueError):
            body = response.json()
        return Answer(outcome_of(response), time.monotonic() - started, body)

    def client(self, timeout_s: float = 30.0) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.server.base_url, timeout=timeout_s,
                                 limits=httpx.Limits(max_connections=200))

    async def new_id(self) -> Any:
        """The id of a fresh write (for reads)."""
        async with self.client() as client:
            answer = await self.write(client, "seed")
        assert answer.outcome.ok, f"the write request itself fails with no fault: {answer}"
        return answer.body[self.target.write.id_field]


def gather(*coros: Any) -> Any:
    async def run() -> Any:
        return await asyncio.gather(*coros)
    return asyncio.run(run())
