"""latency: a constant `ms` on every chunk in both directions.
"""

from __future__ import annotations

from typing import ClassVar

from .base import Fault, Plan


class Latency(Fault):
    name = "latency"
    summary = ("a constant `ms` added to every chunk, both directions")
    params: ClassVar[dict[str, float | None]] = {"ms": None}

    def plan(self, now: float) -> Plan:
        return Plan(self.values["ms"] / 1000)
