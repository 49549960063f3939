"""latency-pulses: pulses of `pulse_ms`, each adding one delay drawn U(`low_ms`, `high_ms`)
to every chunk read during it, separated by gaps of `gap_ms` with no extra delay; the
schedule starts with a pulse when the fault is set.
"""

from __future__ import annotations

import random
from typing import ClassVar

from .base import Fault, Plan


class LatencyPulses(Fault):
    name = "latency-pulses"
    summary = ("pulses of `pulse_ms` adding U(`low_ms`, `high_ms`) (one draw per pulse) to every "
               "chunk, then `gap_ms` without; repeated")
    params: ClassVar[dict[str, float | None]] = {
        "low_ms": 150, "high_ms": 250, "pulse_ms": 1000, "gap_ms": 1000}

    def __init__(self, values: dict[str, float], rng: random.Random, now: float) -> None:
        super().__init__(values, rng, now)
        if values["low_ms"] > values["high_ms"]:
            raise ValueError("latency-pulses: low_ms must not exceed high_ms")
        if values["pulse_ms"] <= 0:
            raise ValueError("latency-pulses: pulse_ms must be > 0")
        self._draws: list[float] = []

    def plan(self, now: float) -> Plan:
        pulse, gap = self.values["pulse_ms"] / 1000, self.values["gap_ms"] / 1000
        index, into = divmod(now - self.started, pulse + gap)
        if into >= pulse:
            return Plan()
        # One draw per pulse, in pulse order (also for pulses nobody sent during), so pulse k's
        # delay depends on the seed alone, not on when traffic happened to arrive.
        while len(self._draws) <= int(index):
            self._draws.append(self.rng.uniform(self.values["low_ms"], self.values["high_ms"]))
        return Plan(self._draws[int(index)] / 1000)
