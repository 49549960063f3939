"""The threads of a server process, counted once they have settled.

A count taken right after load can catch threads that are still winding down (or a pool that
has just grown), so `settled_census` samples until the count has stayed the same for
`stable_s`, or gives up after `limit_s` and says so. Names come from /proc/PID/task/*/comm
(Linux): Python before 3.14 does not give its threads OS names, so most read "python".
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil


@dataclass
class Census:
    count: int
    names: dict[str, int] = field(default_factory=dict)  # OS thread name -> how many
    settled: bool = True  # False: still changing when the sampling gave up
    waited_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def thread_names(pid: int) -> dict[str, int]:
    names: Counter[str] = Counter()
    for comm in Path(f"/proc/{pid}/task").glob("*/comm"):
        try:
            names[comm.read_text().strip()] += 1
        except OSError:  # the thread ended between the listing and the read
            continue
    return dict(sorted(names.items()))


def settled_census(pid: int, stable_s: float = 1.0, limit_s: float = 15.0,
                   every_s: float = 0.1) -> Census:
    process = psutil.Process(pid)
    started = time.monotonic()
    count = process.num_threads()
    unchanged_since = started
    while True:
        settled = time.monotonic() - unchanged_since >= stable_s
        if settled or time.monotonic() - started >= limit_s:
            break
        time.sleep(every_s)  # sampling a count: there is no event to wait on
        latest = process.num_threads()
        if latest != count:
            count, unchanged_since = latest, time.monotonic()
    return Census(count, thread_names(pid), settled=settled,
                  waited_s=round(time.monotonic() - started, 2))
