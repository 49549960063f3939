"""Deadlines, the retry policy and the bounded DB worker lanes.

Nothing here knows SQL or SQLite: the backend (app/sqlite_backend.py) supplies how to bound a
lock wait and how to interrupt a statement; app/db.py puts the pieces together.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception
from tenacity.wait import wait_base

from .errors import DeadlineExceeded, QueueFull, TransientStorageError

T = TypeVar("T")


@dataclass(frozen=True)
class Deadline:
    """An absolute point on the monotonic clock by which a call must be answered."""

    at: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds)

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self.at


class wait_full_jitter(wait_base):
    """Full-jitter exponential backoff (AWS's "full jitter") from an injectable RNG.

    tenacity's own `wait_random_exponential` draws from the global `random` module; taking the
    RNG lets tests and fault schedules reproduce a run from its seed.
    """

    def __init__(self, initial: float, maximum: float, rng: random.Random) -> None:
        self.initial = initial
        self.maximum = maximum
        self.rng = rng

    def __call__(self, retry_state: RetryCallState) -> float:
        ceiling = min(self.maximum, self.initial * 2 ** (retry_state.attempt_number - 1))
        return self.rng.uniform(0, ceiling)


@dataclass
class RetryPolicy:
    """Which errors are retried, how often and how long to wait: one object, built from settings.

    Only `TransientStorageError` is retried, and only whole transactions (the caller passes the
    whole unit of work as the attempt). A retry is not started when its backoff would end past
    the deadline: the call then fails with the transient error, which app/db.py turns into 503.
    """

    max_attempts: int
    backoff_initial_s: float
    backoff_max_s: float
    rng: random.Random = field(default_factory=random.Random)
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    def retrying(
        self, deadline: Deadline, on_retry: Callable[[BaseException], None]
    ) -> AsyncRetrying:
        def stop(state: RetryCallState) -> bool:
            return (
                state.attempt_number >= self.max_attempts
                or deadline.remaining() <= state.upcoming_sleep
            )

        def before_sleep(state: RetryCallState) -> None:
            # Counted here rather than from tenacity's `.statistics`, which is one dict per
            # decorated function and is reset by every concurrent call.
            assert state.outcome is not None
            on_retry(state.outcome.exception())

        return AsyncRetrying(
            retry=retry_if_exception(lambda exc: isinstance(exc, TransientStorageError)),
            stop=stop,
            wait=wait_full_jitter(self.backoff_initial_s, self.backoff_max_s, self.rng),
            sleep=self.sleep,
            before_sleep=before_sleep,
            reraise=True,
        )


class CallHandle:
    """One attempt's link between the event loop (which owns the deadline) and the worker
    thread (which owns the connection).

    At the deadline the loop calls `cancel()`: the flag stops the worker before its next
    statement or its COMMIT, and `interrupt` stops the statement running now. A lock wait is
    not interruptible (SQLite's busy handler ignores interrupts), so the backend bounds it by
    the remaining budget before BEGIN instead.

    The interrupt is sent while holding the handle's lock, and `detach` takes that lock: once
    the worker has detached, no interrupt of this attempt is in flight or can still start, so
    a late cancel never reaches the connection's next call (an interrupt sent a moment after
    the attempt ended would stop whatever statement the connection runs next).
    """

    def __init__(self, deadline: Deadline) -> None:
        self.deadline = deadline
        self._lock = threading.Lock()
        self._cancelled = False
        self._interrupt: Callable[[], None] | None = None

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def attach(self, interrupt: Callable[[], None]) -> None:
        """Register how to stop this attempt's running statement. A cancel that came before
        needs no interrupt: nothing runs yet, and the flag refuses every statement."""
        with self._lock:
            self._interrupt = interrupt

    def detach(self) -> None:
        """Waits for an interrupt being sent; after it, none will be."""
        with self._lock:
            self._interrupt = None

    def mark_cancelled(self) -> None:
        """Only the flag: the worker checks it before its next statement and its COMMIT."""
        with self._lock:
            self._cancelled = True

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            if self._interrupt is not None:
                self._interrupt()

    @property
    def stopping(self) -> bool:
        """Cancelled, or past the deadline (whose cancel the event loop may not have sent
        yet): an interrupt or a server-side timeout then means the deadline, not a defect."""
        return self._cancelled or self.deadline.expired

    def raise_if_cancelled(self) -> None:
        if self.stopping:
            raise DeadlineExceeded("the DB call outlived its deadline")


class WorkerLane:
    """A fixed set of worker threads with a bounded queue in front of them.

    The thread count equals the lane's connection-pool size, so a worker never waits for a
    connection. When `workers + queue_limit` calls are already pending, `submit` raises
    `QueueFull` at once instead of letting the caller wait for a timeout. A call abandoned at
    its deadline still counts until its worker really finishes, so abandoned work cannot pile
    up behind the limit.
    """

    def __init__(
        self,
        name: str,
        workers: int,
        queue_limit: int,
        on_change: Callable[[WorkerLane], None] = lambda lane: None,
    ) -> None:
        self.name = name
        self.workers = workers
        self.capacity = workers + queue_limit
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"db-{name}")
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._pending = 0
        self._running = 0
        self._on_change = on_change

    @property
    def pending(self) -> int:
        """Calls submitted and not yet finished (queued plus running)."""
        return self._pending

    @property
    def running(self) -> int:
        return self._running

    @property
    def queued(self) -> int:
        return self._pending - self._running

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        with self._lock:
            if self._pending >= self.capacity:
                raise QueueFull(f"the {self.name} queue is full ({self.capacity} calls pending)")
            self._pending += 1
        self._on_change(self)
        try:
            future = self._executor.submit(self._run, fn)
        except BaseException:
            self._finished()
            raise
        future.add_done_callback(lambda _: self._finished())
        return future

    def _run(self, fn: Callable[[], T]) -> T:
        with self._lock:
            self._running += 1
        self._on_change(self)
        try:
            return fn()
        finally:
            with self._lock:
                self._running -= 1

    def _finished(self) -> None:
        with self._lock:
            self._pending -= 1
            if self._pending == 0:
                self._idle.notify_all()
        self._on_change(self)

    def wait_idle(self, timeout_s: float) -> bool:
        """Block until no call is pending (abandoned ones included); False on timeout."""
        with self._lock:
            return self._idle.wait_for(lambda: self._pending == 0, timeout=timeout_s)

    def shutdown(self, wait: bool = True) -> None:
        self._executor.shutdown(wait=wait, cancel_futures=True)


async def await_until(future: Future[T], handle: CallHandle,
                      interrupter: Executor | None = None) -> T:
    """Wait for a worker's result until the handle's deadline, never longer.

    On expiry (or if the awaiting task is cancelled) the handle is cancelled: a queued call is
    dropped before it starts, a running one is interrupted, from `interrupter`'s thread when
    one is given (a PostgreSQL cancel is a network round trip that would hold up the event
    loop, and with it every request whose deadline falls at the same moment). The caller
    gets `DeadlineExceeded` at the deadline, not when the worker gets round to stopping.
    """
    try:
        return await asyncio.wait_for(
            asyncio.wrap_future(future), timeout=handle.deadline.remaining()
        )
    except TimeoutError:
        _cancel(handle, interrupter)
        raise DeadlineExceeded("the DB call outlived its deadline") from None
    except asyncio.CancelledError:
        _cancel(handle, interrupter)
        raise


def _cancel(handle: CallHandle, interrupter: Executor | None) -> None:
    if interrupter is None:
        handle.cancel()
        return
    handle.mark_cancelled()  # now: no statement and no COMMIT after this
    interrupter.submit(handle.cancel)

