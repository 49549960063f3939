"""Salted password hashes (argon2id via argon2-cffi), computed off the event loop, under the
request's deadline: a hash still queued when its deadline passes (or its client goes) is never
computed, so a burst of creates leaves no hashing behind for clients who have stopped waiting."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import TypeVar

from argon2 import PasswordHasher as Argon2Hasher
from argon2.exceptions import InvalidHashError, VerificationError

from .errors import DeadlineExceeded
from .resilience import CallHandle, Deadline, WorkerLane, await_until
from .settings import Settings

T = TypeVar("T")
_NO_DEADLINE = Deadline(float("inf"))


class PasswordHasher:
    """Hashes and verifies passwords on its own worker threads, `hash_concurrency` of
    them: each hash holds a CPU and `password_hash_memory_kib` of memory for its whole
    duration. The threads are started here and live as long as the hasher, so a burst of
    creates leaves no extra threads behind (AnyIO's pool would keep up to 40 idle ones)."""

    def __init__(self, settings: Settings) -> None:
        self._argon2 = Argon2Hasher(
            time_cost=settings.password_hash_time_cost,
            memory_cost=settings.password_hash_memory_kib,
            parallelism=settings.password_hash_parallelism,
        )
        # As many may wait as requests can be in flight at once (uvicorn's limit).
        self._lane = WorkerLane("hash", settings.hash_concurrency,
                                settings.http_limit_concurrency, skip_late=True,
                                thread_prefix="password-hash")
        self._calibrate()

    def _calibrate(self) -> None:
        """A first measure of a hash's time, before any request has measured one, so
        admission (app/admission.py) is right from the first burst."""
        began = time.thread_time()
        self._argon2.hash("calibration")
        self._lane.assume_call_seconds(time.thread_time() - began)

    @property
    def lane(self) -> WorkerLane:
        return self._lane

    @property
    def slots(self) -> int:
        return self._lane.workers

    @property
    def running(self) -> int:
        return self._lane.running

    @property
    def waiting(self) -> int:
        return self._lane.queued

    async def hash(self, password: str, deadline: Deadline | None = None) -> str:
        return await self._run(partial(self._hash, password), deadline)

    async def verify(self, password_hash: str, password: str,
                     deadline: Deadline | None = None) -> bool:
        return await self._run(partial(self._verify, password_hash, password), deadline)

    async def _run(self, work: Callable[[], T], deadline: Deadline | None) -> T:
        deadline = deadline or _NO_DEADLINE
        if deadline.expired:  # spent already (a backlog before the handler): do not queue
            raise DeadlineExceeded("the request outlived its deadline before hashing")
        return await await_until(self._lane.submit(work, CallHandle(deadline)))

    def close(self) -> None:
        self._lane.shutdown(wait=True)

    def _hash(self, password: str) -> str:
        return self._argon2.hash(password)

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._argon2.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False
