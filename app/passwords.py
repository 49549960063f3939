"""Salted password hashes (argon2id via argon2-cffi), computed off the event loop."""

from __future__ import annotations

import anyio
import anyio.to_thread
from argon2 import PasswordHasher as Argon2Hasher
from argon2.exceptions import InvalidHashError, VerificationError

from .settings import Settings


class PasswordHasher:
    """Hashes and verifies passwords on worker threads, a bounded number at a time: each hash
    holds a CPU and `password_hash_memory_kib` of memory for its whole duration."""

    def __init__(self, settings: Settings) -> None:
        self._argon2 = Argon2Hasher(
            time_cost=settings.password_hash_time_cost,
            memory_cost=settings.password_hash_memory_kib,
            parallelism=settings.password_hash_parallelism,
        )
        self._limiter = anyio.CapacityLimiter(settings.password_hash_concurrency)

    @property
    def slots(self) -> int:
        return int(self._limiter.total_tokens)

    @property
    def running(self) -> int:
        return int(self._limiter.borrowed_tokens)

    @property
    def waiting(self) -> int:
        return self._limiter.statistics().tasks_waiting

    async def hash(self, password: str) -> str:
        return await anyio.to_thread.run_sync(self._argon2.hash, password, limiter=self._limiter)

    async def verify(self, password_hash: str, password: str) -> bool:
        return await anyio.to_thread.run_sync(
            self._verify, password_hash, password, limiter=self._limiter
        )

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._argon2.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False
