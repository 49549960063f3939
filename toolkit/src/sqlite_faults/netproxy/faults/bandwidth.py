"""bandwidth: each connection's bytes paced to `kib_per_s` per direction by a token bucket
with a burst of one MSS (1460 bytes): a slow link per client.
"""

from __future__ import annotations

import random
from typing import ClassVar

from .base import Fault, Plan


class Bandwidth(Fault):
    name = "bandwidth"
    summary = ("each connection paced to `kib_per_s` per direction (token bucket, 1 MSS burst)")
    params: ClassVar[dict[str, float | None]] = {"kib_per_s": 4}

    def __init__(self, values: dict[str, float], rng: random.Random, now: float) -> None:
        super().__init__(values, rng, now)
        if values["kib_per_s"] <= 0:
            raise ValueError("bandwidth: kib_per_s must be > 0")

    def plan(self, now: float) -> Plan:
        return Plan(rate=self.values["kib_per_s"] * 1024)
