"""The shape every fault model of the proxy shares: what it decides for each chunk read
while it is set, and whether it takes over from forwarding (a black hole swallows, an injected
500 answers in the service's place). One module per fault beside this one, as Toxiproxy keeps
one file per toxic; `faults/__init__.py` lists them."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class Plan:
    """What a fault decided for one chunk when it was read."""

    delay_s: float = 0.0
    rate: float | None = None  # bytes per second, for pacing


class Fault:
    name: ClassVar[str]
    summary: ClassVar[str]  # one line, for FAULTS and `--help`-like listings
    # parameter -> default (None: required)
    params: ClassVar[dict[str, float | None]] = {}
    # While set: nothing is forwarded or answered, and a connection with traffic is condemned.
    swallows: ClassVar[bool] = False

    def __init__(self, values: dict[str, float], rng: random.Random, now: float) -> None:
        self.values = values
        self.rng = rng
        self.started = now

    def plan(self, now: float) -> Plan:
        """The delay (and pacing) of a chunk read at `now`."""
        return Plan()

    def answers_request(self) -> bool:
        """Whether the proxy answers the request starting now itself (never forwarding it)."""
        return False
