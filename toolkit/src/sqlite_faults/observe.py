"""Read what a service says about itself: its Prometheus metrics, as text over HTTP.

Works on any service that exposes /metrics, so the fault suite can judge the naive baseline
with the same code.
"""

from __future__ import annotations

import asyncio
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
