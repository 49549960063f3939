"""Read what a service says about itself: its Prometheus metrics, as text over HTTP.

Works on any service that exposes /metrics, so the fault suite can judge the naive baseline
with the same code.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families


class MetricsSnapshot:
    """One scrape of /metrics; `value(name, **labels)` sums the matching samples (0 if none)."""

    def __init__(self, text: str) -> None:
        self.samples = [
            sample
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        ]

    def value(self, name: str, **labels: str) -> float:
        return sum(
            sample.value
            for sample in self.samples
            if sample.name == name
            and all(sample.labels.get(key) == want for key, want in labels.items())
        )


async def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 10.0) -> float:
    """Poll `condition` on the event loop until it holds; returns the seconds waited. Fails
    at the bound, naming `what` did not happen (for states with no event to wait on)."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        await asyncio.sleep(0.005)  # the polling step of a bounded wait
    return time.monotonic() - started


async def scrape(base_url: str, path: str = "/metrics", timeout_s: float = 5.0) -> MetricsSnapshot:
    """One scrape of a running service's Prometheus metrics."""
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout_s) as client:
        response = await client.get(path)
        response.raise_for_status()
        return MetricsSnapshot(response.text)


class MetricsSampler:
    """Scrapes a service's metrics every `every_s` in the background until stopped: what an
    operator's dashboard would have shown, each snapshot beside the time.monotonic() moment
    it was taken. A scrape that fails (the service stalled or gone) is skipped: the gap in
    `samples` is itself what a dashboard shows then."""

    def __init__(self, base_url: str, path: str = "/metrics", every_s: float = 0.1,
                 timeout_s: float = 1.0) -> None:
        self.base_url = base_url
        self.path = path
        self.every_s = every_s
        self.timeout_s = timeout_s
        self.samples: list[tuple[float, MetricsSnapshot]] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stop.set()
        assert self._task is not None, "stop() before start()"
        await self._task

    async def _run(self) -> None:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=self.timeout_s) as client:
            while not self._stop.is_set():
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    response = await client.get(self.path)
                    response.raise_for_status()
                    self.samples.append((time.monotonic(), MetricsSnapshot(response.text)))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.every_s)  # the period
