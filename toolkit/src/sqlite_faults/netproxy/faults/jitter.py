"""jitter: every chunk delayed U(0, `ms`), order kept.
"""

from __future__ import annotations

from typing import ClassVar

from .base import Fault, Plan


class Jitter(Fault):
    name = "jitter"
    summary = ("every chunk delayed U(0, `ms`), byte order kept")
    params: ClassVar[dict[str, float | None]] = {"ms": 100}

    def plan(self, now: float) -> Plan:
        return Plan(self.rng.uniform(0, self.values["ms"]) / 1000)
