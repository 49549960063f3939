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
from sqlite_faults.target import Request, Sendable, Target


@dataclass(frozen=True)
class Answer:
    outcome: Outcome
    seconds: float
    body: Any = None
    new_id: Any = None  # a write's answer: the id it names, if any

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
                    request: Request | None = None) -> Answer:
        """The target's write (or a variant of its template) with fresh values."""
        return await self.send(client, self.write_request(tag, request))

    def write_request(self, tag: str = "b", request: Request | None = None) -> Sendable:
        unique = self.unique(tag)
        return (request or self.target.write.request).render(unique=unique,
                                                             secret=f"pw-{unique}")

    async def read(self, client: httpx.AsyncClient, new_id: Any) -> Answer:
        return await self.send(client, self.target.write.read_request(new_id))

    async def send(self, client: httpx.AsyncClient, request: Sendable,
                   **kwargs: Any) -> Answer:
        started = time.monotonic()
        try:
            response = await request.send(client, **kwargs)
        except httpx.HTTPError as exc:
            return Answer(outcome_of(None, exc), time.monotonic() - started)
        body: Any = None
        with contextlib.suppress(ValueError):
            body = response.json()
        new_id = None
        with contextlib.suppress(ValueError, KeyError, TypeError, IndexError):
            new_id = self.target.write.new_id(response)
        return Answer(outcome_of(response), time.monotonic() - started, body, new_id)

    def client(self, timeout_s: float = 30.0) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.server.base_url, timeout=timeout_s,
                                 limits=httpx.Limits(max_connections=200))

    async def new_id(self) -> Any:
        """The id of a fresh write (for reads)."""
        async with self.client() as client:
            answer = await self.write(client, "seed")
        assert answer.outcome.ok, f"the write request itself fails with no fault: {answer}"
        assert answer.new_id is not None, (
            f"the write succeeded but its answer carries no id where the target says "
            f"({self.target.write.id_header or self.target.write.id_field}): {answer.body!r}")
        return answer.new_id


def gather(*coros: Any) -> Any:
    async def run() -> Any:
        return await asyncio.gather(*coros)
    return asyncio.run(run())
