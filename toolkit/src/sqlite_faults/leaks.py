"""Resource leak checks for a process: threads, open file descriptors, sockets.

A fault that leaks a thread, a connection or a file descriptor per failure passes every
latency check and kills the service a week later. Take a baseline in the steady state, run
the burst of failures, then wait for the process to come back to it:

    baseline = Resources.of(server.pid)
    ...a burst of timeouts and errors...
    settled = await settles(server.pid, baseline, timeout_s=10)   # AssertionError if not

Counts are compared with a small allowance (`slack`) because some growth is not a leak: a
connection pool that fills to its size, a thread pool that starts its threads lazily.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class Resources:
    threads: int
    fds: int
    sockets: int

    @classmethod
    def of(cls, pid: int) -> Resources:
        process = psutil.Process(pid)
        with process.oneshot():
            return cls(process.num_threads(), process.num_fds(),
                       len(process.net_connections(kind="inet")))

    def exceeds(self, baseline: Resources, slack: int) -> list[str]:
        """What grew past `baseline` by more than `slack` ("threads 12 > 8 + 2", ...)."""
        return [f"{name} {mine} > {theirs} + {slack}"
                for name, mine, theirs in (("threads", self.threads, baseline.threads),
                                           ("fds", self.fds, baseline.fds),
                                           ("sockets", self.sockets, baseline.sockets))
                if mine > theirs + slack]


async def settles(pid: int, baseline: Resources, timeout_s: float = 10.0,
                  slack: int = 2) -> Resources:
    """Wait until `pid`'s resources are back within `slack` of `baseline`; raises
    AssertionError naming what stayed up. There is no event for "a thread ended", so this
    polls, bounded by `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        now = Resources.of(pid)
        grown = now.exceeds(baseline, slack)
        if not grown:
            return now
        if time.monotonic() > deadline:
            raise AssertionError(
                f"resources did not return to the steady state within {timeout_s} s: "
                + "; ".join(grown))
        await asyncio.sleep(0.05)  # the polling step of a bounded wait
