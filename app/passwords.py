"""Salted password hashes (argon2id via argon2-cffi), computed off the event loop."""

from __future__ import annotations

from functools import partial

from argon2 import PasswordHasher as Argon2Hasher
from argon2.exceptions import InvalidHashError, VerificationError

from .resilience import WorkerLane, await_until
from .settings import Settings


class PasswordHasher:
    """Hashes and verifies passwords on its own worker threads, `password_hash_concurrency` of
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
        self._lane = WorkerLane("hash", settings.password_hash_concurrency,
                                settings.http_limit_concurrency, thread_prefix="password-hash")

    @property
    def slots(self) -> int:
        return self._lane.workers

    @property
    def running(self) -> int:
        return self._lane.running

    @property
    def waiting(self) -> int:
        return self._lane.queued

    async def hash(self, password: str) -> str:
        return await await_until(self._lane.submit(partial(self._hash, password)))

    async def verify(self, password_hash: str, password: str) -> bool:
        return await await_until(
            self._lane.submit(partial(self._verify, password_hash, password)))

    def close(self) -> None:
        self._lane.shutdown(wait=True)

    def _hash(self, password: str) -> str:
        return self._argon2.hash(password)

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._argon2.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False
