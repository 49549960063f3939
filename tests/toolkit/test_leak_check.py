"""The leak check goes red on a process that keeps what a burst started, and green once it
lets go. (Measured on this process, inside one event loop: the loop's own descriptors are in
the baseline.)"""

from __future__ import annotations

import asyncio
import os
import threading

import pytest
from sqlite_faults import Resources, settles


def test_threads_left_running_are_named_and_their_end_is_seen() -> None:
    async def main() -> None:
        baseline = Resources.of(os.getpid())
        release = threading.Event()
        threads = [threading.Thread(target=release.wait) for _ in range(5)]
        for thread in threads:
            thread.start()
        try:
            with pytest.raises(AssertionError, match="threads"):
                await settles(os.getpid(), baseline, timeout_s=0.2, slack=2)
        finally:
            release.set()
            for thread in threads:
                thread.join()
        await settles(os.getpid(), baseline, timeout_s=5, slack=2)
    asyncio.run(main())


def test_open_files_left_open_are_named() -> None:
    async def main() -> None:
        baseline = Resources.of(os.getpid())
        files = [open(os.devnull) for _ in range(5)]  # noqa: SIM115 (held open on purpose)
        try:
            with pytest.raises(AssertionError, match="fds"):
                await settles(os.getpid(), baseline, timeout_s=0.2, slack=2)
        finally:
            for f in files:
                f.close()
        await settles(os.getpid(), baseline, timeout_s=5, slack=2)
    asyncio.run(main())
