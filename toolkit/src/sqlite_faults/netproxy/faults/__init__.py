"""The proxy's fault models, one module each, and the one way to make one from a command."""

from __future__ import annotations

import random
from typing import Any

from .bandwidth import Bandwidth
from .base import Fault, Plan
from .blackhole import Blackhole
from .http_500 import INJECTED_500, INJECTED_BODY, Http500
from .jitter import Jitter
from .latency import Latency
from .latency_pulses import LatencyPulses
from .packet_loss import PacketLoss

FAULT_TYPES: dict[str, type[Fault]] = {cls.name: cls for cls in (
    Latency, LatencyPulses, Jitter, Bandwidth, PacketLoss, Blackhole, Http500)}
# name -> what it does, in a line
FAULTS: dict[str, str] = {name: cls.summary for name, cls in FAULT_TYPES.items()}


def make_fault(name: Any, given: dict[str, Any], rng: random.Random, now: float) -> Fault:
    """The fault `name` with `given` parameters checked against its own: a mistake is named
    (ValueError) rather than silently ignored, since a misspelt knob would leave a scenario
    measuring the default."""
    cls = FAULT_TYPES.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"unknown fault {name!r} (known: {', '.join(FAULTS)})")
    unknown = sorted(set(given) - set(cls.params))
    if unknown:
        takes = ", ".join(cls.params) or "no parameters"
        raise ValueError(f"{cls.name}: unknown parameter(s) {unknown} (takes: {takes})")
    values: dict[str, float] = {}
    for key, default in cls.params.items():
        value = given.get(key, default)
        if value is None:
            raise ValueError(f"{cls.name}: parameter {key!r} is required")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{cls.name}: {key} must be a number, got {value!r}")
        if value < 0 or (key == "probability" and value > 1):
            raise ValueError(f"{cls.name}: {key} out of range: {value!r}")
        values[key] = float(value)
    return cls(values, rng, now)


__all__ = ["FAULTS", "FAULT_TYPES", "INJECTED_500", "INJECTED_BODY", "Fault", "Plan",
           "make_fault"]
