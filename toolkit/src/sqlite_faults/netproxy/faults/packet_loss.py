"""packet-loss: with `probability` a chunk is "lost". Under TCP a lost segment is
retransmitted, so above TCP a loss is never missing bytes: it is that chunk, and
everything behind it on that connection and direction, held back for one retransmission
timeout (`rto_ms`, 200 by default: Linux's minimum RTO). The model ignores exponential
backoff on repeated loss and the congestion window's shrinking.
"""

from __future__ import annotations

from typing import ClassVar

from .base import Fault, Plan


class PacketLoss(Fault):
    name = "packet-loss"
    summary = ("with `probability` a chunk is lost: TCP retransmits it, so it and all behind it on "
               "its connection wait `rto_ms`; never missing bytes")
    params: ClassVar[dict[str, float | None]] = {"probability": 0.05, "rto_ms": 200}

    def plan(self, now: float) -> Plan:
        lost = self.rng.random() < self.values["probability"]
        return Plan(self.values["rto_ms"] / 1000 if lost else 0.0)
