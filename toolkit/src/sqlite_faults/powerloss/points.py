"""Where to cut the power in a recorded run.

A crash point is an index into the run's events: the cut comes after `index` events. The
candidates are the moments the contract is about, plus chance:

- right after each acknowledged commit (the service has just answered 201);
- just before and just after each sync (the Nth sync), where the most is unsynced or has
  just become durable;
- just after each write (the Nth write);
- random moments, and the end of the run (after the service's shutdown).

All come after the run's barrier: before it the database did not exist yet.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .model import Ack, Barrier, Create, Event, Sync, Write


@dataclass(frozen=True)
class CrashPoint:
    index: int
    label: str


def candidates(events: tuple[Event, ...]) -> dict[str, list[CrashPoint]]:
    names: dict[int, str] = {}
    barrier = next(i for i, e in enumerate(events) if isinstance(e, Barrier)) + 1
    found: dict[str, list[CrashPoint]] = {"ack": [], "sync": [], "write": []}
    syncs = writes = 0
    for i, event in enumerate(events):
        if isinstance(event, Create):
            names[event.inode] = event.name
        if i < barrier:
            continue
        if isinstance(event, Ack):
            found["ack"].append(CrashPoint(i + 1, f"right after commit {event.commit} was "
                                                  "acknowledged"))
        elif isinstance(event, Sync):
            syncs += 1
            name = names[event.inode]
            found["sync"] += [CrashPoint(i, f"just before sync #{syncs} ({name})"),
                              CrashPoint(i + 1, f"just after sync #{syncs} ({name})")]
        elif isinstance(event, Write):
            writes += 1
            found["write"].append(CrashPoint(
                i + 1, f"after write #{writes} ({names[event.inode]}, "
                       f"{len(event.data)} bytes at {event.offset})"))
    found["random"] = [CrashPoint(index, f"random moment (event {index})")
                       for index in range(barrier, len(events) + 1)]
    found["end"] = [CrashPoint(len(events), "after the service's shutdown")]
    return found


def choose(events: tuple[Event, ...], count: int, rng: random.Random) -> list[CrashPoint]:
    """About `count` crash points, spread over the kinds of moment, in event order."""
    found = candidates(events)
    chosen: dict[int, CrashPoint] = {p.index: p for p in found.pop("end")}
    share = max(1, count // len(found))
    for kind in ("ack", "sync", "write", "random"):  # the first label of an index stays
        points = found[kind]
        for point in rng.sample(points, min(share, len(points))):
            chosen.setdefault(point.index, point)
    return sorted(chosen.values(), key=lambda p: p.index)
