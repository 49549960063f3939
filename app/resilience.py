"""Deadlines, the retry policy and the bounded DB worker lanes.

Nothing here knows SQL or SQLite: the backend (app/sqlite_backend.py) supplies how to bound a
lock wait and how to interrupt a statement; app/db.py puts the pieces together.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception
from tenacity.wait import wait_base

from .errors import ClientGone, DeadlineExceeded, QueueFull, TransientStorageError

T = TypeVar("T")


@dataclass(frozen=True)
class Deadline:
    """An absolute point on the monotonic clock by which a call must be answered, and, for a
    request, the future its connection settles when the client goes away (app/serve.py): work
    still queued for a client who has gone is never started."""

    at: float
    gone: asyncio.Future[None] | None = field(default=None, compare=False)

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


class RetryBudget:
    """Retries stop while most attempts fail: gRPC's retry throttling (gRFC A6, "Throttling
    Retry Attempts and Hedged RPCs"). A token count starts full at `max_tokens`; an attempt
    that fails with a transient error takes one token, one that succeeds gives back
    `token_ratio`; a retry is started only while more than half the tokens are left.

    A retry costs the event loop an attempt's work again (a lane call, an exception, a
    backoff), and when most attempts fail, retrying multiplies the load just as the service
    can least afford it: measured at 800 requests/s with SQLITE_BUSY on 60 % of statements,
    the event loop's thread ran at 0.94 CPUs and answered up to 0.7 s past the deadline. The
    budget keeps retrying while transient errors are occasional: with `token_ratio` r the
    tokens hold up while fewer than r / (1 + r) of attempts fail (a third at the default 0.5,
    against the 15-20 % of write attempts a 5 % statement error rate fails). Read and written
    on the event loop's thread only."""

    def __init__(self, max_tokens: float, token_ratio: float) -> None:
        self.max_tokens = max_tokens
        self.token_ratio = token_ratio
        self.tokens = max_tokens

    def record(self, succeeded: bool) -> None:
        if succeeded:
            self.tokens = min(self.max_tokens, self.tokens + self.token_ratio)
        else:
            self.tokens = max(0.0, self.tokens - 1)

    @property
    def allows_retry(self) -> bool:
        return self.tokens > self.max_tokens / 2


@dataclass
class RetryPolicy:
    """Which errors are retried, how often and how long to wait: one object, built from settings.

    Only `TransientStorageError` is retried, and only whole transactions (the caller passes the
    whole unit of work as the attempt). A retry is not started when its backoff would end past
    the deadline: the call then fails with the transient error, which app/db.py turns into 503.

    The toolkit's retrying client (sqlite_faults/retry.py) has the same backoff (full jitter)
    but another shape on purpose: it decides on HTTP answers (status, Retry-After, whether a
    write may run twice), this one on storage errors under a deadline and a retry budget, built
    on tenacity; and the service does not import the test toolkit.
    """

    max_attempts: int
    backoff_initial_s: float
    backoff_max_s: float
    rng: random.Random = field(default_factory=random.Random)
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    # None: every call may use all its attempts (tests of the attempts themselves).
    budget: RetryBudget | None = None

    def retrying(
        self, deadline: Deadline, on_retry: Callable[[BaseException], None],
        on_denied: Callable[[], None] = lambda: None,
    ) -> AsyncRetrying:
        def stop(state: RetryCallState) -> bool:
            if (state.attempt_number >= self.max_attempts
                    or deadline.remaining() <= state.upcoming_sleep):
                return True
            if self.budget is not None and not self.budget.allows_retry:
                on_denied()
                return True
            return False

        def before_sleep(state: RetryCallState) -> None:
            # Counted here rather than from tenacity's `.statistics`, which is one dict per
            # decorated function and is reset by every concurrent call.
            assert state.outcome is not None
            error = state.outcome.exception()
            assert error is not None  # it runs only after a failed attempt
            on_retry(error)

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

    A write's COMMIT is its commit point, decided under the same lock: the worker commits only
    if `begin_commit` wins against the deadline, and the loop answers 504 only if `expire`
    wins against the commit. Without it a deadline that passed between the worker's last look
    and its COMMIT answered 504 for a write that then committed (measured: one in a report
    run at 800 requests/s, with the write lock held past the deadline): a client told "not
    done" about what was done. After the commit point the client waits for the outcome.
    """

    def __init__(self, deadline: Deadline) -> None:
        self.deadline = deadline
        self._lock = threading.Lock()
        self._cancelled = False
        self._committing = False
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

    def begin_commit(self) -> bool:
        """The worker, just before COMMIT: True when it may commit (from now on the deadline
        no longer answers for this attempt; its outcome will); False when cancelled or past
        the deadline first."""
        with self._lock:
            if self._cancelled or self.deadline.expired:
                return False
            self._committing = True
            return True

    def abandon_commit(self) -> None:
        """The worker will not commit after all (another call of its group was late): the
        deadline answers for this attempt again."""
        with self._lock:
            self._committing = False

    def expire(self) -> bool:
        """The loop, at the deadline: True when it answers 504 (the attempt is cancelled);
        False when the attempt's COMMIT has begun, whose outcome is the answer."""
        with self._lock:
            if self._committing:
                return False
            self._cancelled = True
            return True

    @property
    def stopping(self) -> bool:
        """Cancelled, or past the deadline (whose cancel the event loop may not have sent
        yet): an interrupt or a server-side timeout then means the deadline, not a defect."""
        return self._cancelled or self.deadline.expired

    def raise_if_cancelled(self) -> None:
        if self.stopping:
            raise DeadlineExceeded("the DB call outlived its deadline")


class LaneCall:
    """One call waiting on (or running on) a lane: the work, its handle, and the event-loop
    future its caller awaits. The worker records the outcome; the loop settles the future."""

    __slots__ = ("error", "fn", "future", "handle", "lane", "loop", "result", "state")

    def __init__(self, lane: WorkerLane, fn: Callable[..., object], handle: CallHandle,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.lane = lane
        self.fn = fn
        self.handle = handle
        self.loop = loop
        # Any: the lane runs callables of any result type; await_until gives it back as T.
        self.future: asyncio.Future[Any] = loop.create_future()
        self.state = _QUEUED
        self.result: object = None
        self.error: BaseException | None = None

    def start(self) -> bool:
        """Called by the runner just before the call's work (again before a re-run); False
        when the call was withdrawn meanwhile (its deadline passed while it waited in the
        batch): skip it."""
        return self.lane._start(self)

    def resolve(self, result: object) -> None:
        self.result, self.error = result, None

    def fail(self, error: BaseException) -> None:
        self.error = error


# A call's life: queued in the lane, taken into a worker's batch, running (its work started),
# done; or withdrawn (at its deadline, or at shutdown) while queued or taken, never started.
_QUEUED, _TAKEN, _RUNNING, _DONE, _WITHDRAWN = range(5)


def run_each_with(calls: list[LaneCall], attempt: Callable[[LaneCall], object]) -> None:
    """Run `attempt(call)` for each call of a batch that was not withdrawn, one after another,
    recording its result or its error for the caller."""
    for call in calls:
        if not call.start():
            continue
        try:
            call.resolve(attempt(call))
        except BaseException as exc:  # delivered to the caller, as a future would
            call.fail(exc)


def run_each(_worker: int, calls: list[LaneCall]) -> None:
    """The plain lane policy: each call's function on its own."""
    run_each_with(calls, lambda call: call.fn())


BatchRunner = Callable[[int, list[LaneCall]], None]


class WorkerLane:
    """A fixed set of worker threads with a bounded queue in front of them.

    The thread count equals the lane's connection count, so a worker never waits for a
    connection. When `workers + queue_limit` calls are already pending, `submit` raises
    `QueueFull` at once instead of letting the caller wait for a timeout. A call abandoned at
    its deadline still counts until its worker really finishes, so abandoned work cannot pile
    up behind the limit; a queued one is withdrawn at once and never runs.

    Batching across the thread boundary: a worker that wakes up takes every call waiting (up
    to `batch_limit`) and hands them to `run_batch(worker_index, calls)` together (the writer
    lane commits them in one transaction, app/db.py); their callers' futures are then settled
    by one callback into the event loop, not one per call. `running` counts busy workers; the
    calls of a batch that have not started yet count as queued, and can still be withdrawn.
    """

    def __init__(
        self,
        name: str,
        workers: int,
        queue_limit: int,
        on_change: Callable[[WorkerLane], None] = lambda lane: None,
        *,
        batch_limit: int = 1,
        run_batch: BatchRunner = run_each,
        thread_prefix: str | None = None,
        skip_late: bool = False,
    ) -> None:
        self.name = name
        # Withdraw a call whose deadline passed while it waited, when a worker takes it (the
        # event loop's timer, which withdraws it too, may be behind): for work that checks
        # no deadline of its own, like a password hash. (The DB runners check theirs.)
        self.skip_late = skip_late
        self.workers = workers
        self.capacity = workers + queue_limit
        self.batch_limit = batch_limit
        self._run_batch = run_batch
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._idle = threading.Condition(self._lock)
        self._queue: deque[LaneCall] = deque()
        self._pending = 0
        self._running = 0
        self._sleeping = 0  # workers waiting for work
        # Batches taken and the calls in them (their ratio is the mean batch size).
        self.batches = 0
        self.batched_calls = 0
        # What a batch costs, as moving averages over batches: the admission gate
        # (app/admission.py) turns the calls ahead of a request into an expected wait with
        # them (`wait_for`). Wall time is a line, seconds = fixed + per call x calls, fitted
        # from the moments below: a group's lock wait and commit are paid once per batch,
        # not per call. CPU time (the worker thread's own) is per call.
        self.batch_cost = BatchCost()
        self.call_cpu_seconds = 0.0
        # Lock waits (another process's lock; see `waiting_for_lock`), per worker: when the one
        # under way began, and how long the current batch has waited in all. Written by the
        # worker, read by the event loop's thread (one list item: an atomic read).
        self._lock_wait_began: list[float | None] = [None] * workers
        self._lock_waited_s = [0.0] * workers
        self._cpus = len(os.sched_getaffinity(0))
        self._stopping = False
        # Read and written on the event loop's thread only.
        self._wake_scheduled = False
        self._wake_loop: asyncio.AbstractEventLoop | None = None
        self._on_change = on_change
        # Started now, so the threads are part of the steady state, not ones that appear later.
        self._threads = [
            threading.Thread(target=self._work, args=(i,), daemon=True,
                             name=f"{thread_prefix or 'db-' + name}_{i}")
            for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

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

    def wait_for(self, calls: int) -> float:
        """Seconds the lane takes to run `calls` more calls with all its workers busy. For
        work that waits (I/O, locks): each worker takes its share of the calls in batches of
        at most `batch_limit`, each batch costing the fitted fixed part once and the per-call
        part per call; so a group commit that waited 200 ms for another process's lock
        counts 200 ms once, not once per call it carried. For work that computes: the CPU
        time per call, shared among the CPUs the workers can use (a hash measured alone takes
        the same wall time as its CPU time, but four at once on one core take four times as
        long). The larger of the two."""
        if calls <= 0:
            return 0.0
        fixed, per_call = self.batch_cost.line()
        share = calls / self.workers
        wall = math.ceil(share / self.batch_limit) * fixed + share * per_call
        return (max(wall, calls * self.call_cpu_seconds / min(self.workers, self._cpus))
                + self.lock_wait_ahead())

    def lock_wait_ahead(self) -> float:
        """Seconds the lane's lock waits under way may still last: while every worker waits
        for a lock, as long again as the shortest of those waits has lasted (a lock held this
        long is expected to be held about as long again: nothing else is known of it); 0
        while a worker is free of one."""
        now = time.monotonic()
        waited = []
        for began in self._lock_wait_began:
            if began is None:
                return 0.0
            waited.append(now - began)
        return min(waited)

    @contextlib.contextmanager
    def waiting_for_lock(self, worker: int) -> Iterator[None]:
        """Around a worker's wait for another process's lock. That time is not the batch's
        cost (it is paid once, however many calls the batch carries, and after the lock is
        released the calls queued meanwhile run at their usual cost), so it is left out of the
        fit `wait_for` uses and counted instead while it lasts (`lock_wait_ahead`). Measured
        before: one create that waited 200 ms for a lock pulse, in a lane of one-call batches,
        was taken as 21.6 ms per call, and the 60 creates queued behind it were refused 503 as
        1.3 s of work (the report's write-lock-pulses, 1.5 % of creates)."""
        began = time.monotonic()
        self._lock_wait_began[worker] = began
        try:
            yield
        finally:
            self._lock_wait_began[worker] = None
            self._lock_waited_s[worker] += time.monotonic() - began

    def assume_call_seconds(self, seconds: float) -> None:
        """A first measure of a call's cost (wall and CPU alike), before any call has run:
        the hash lane's start-up calibration (app/passwords.py)."""
        self.batch_cost = BatchCost()
        self.batch_cost.add(1, seconds)
        self.call_cpu_seconds = seconds

    def submit(self, fn: Callable[..., T], handle: CallHandle | None = None) -> LaneCall:
        """Queue `fn` (on the event loop's thread); await `await_until(call)` for its result."""
        call = LaneCall(self, fn, handle or CallHandle(Deadline(math.inf)),
                        asyncio.get_running_loop())
        with self._lock:
            if self._stopping:
                raise QueueFull(f"the {self.name} lane is shut down")
            if self._pending >= self.capacity:
                raise QueueFull(f"the {self.name} queue is full ({self.capacity} calls pending)")
            self._pending += 1
            self._queue.append(call)
        if self._wake_loop is not call.loop:  # a lane used from another event loop
            self._wake_loop, self._wake_scheduled = call.loop, False
        if not self._wake_scheduled:
            # One wake-up per event-loop iteration, not one per call: every call submitted
            # in this iteration (a burst of requests parsed together) is in the queue by the
            # time a worker looks, and the worker wakes as the loop is about to wait for I/O
            # (and so to let go of the GIL), not in the middle of its work.
            self._wake_scheduled = True
            call.loop.call_soon(self._wake_workers)
        self._on_change(self)
        return call

    def _wake_workers(self) -> None:
        self._wake_scheduled = False
        with self._lock:
            self._wake.notify(len(self._queue))

    def withdraw(self, call: LaneCall) -> bool:
        """Take a call out of the lane if its work has not started (it then never runs)."""
        with self._lock:
            if call.state == _QUEUED:
                self._queue.remove(call)
            elif call.state != _TAKEN:
                return False
            call.state = _WITHDRAWN
            self._release(1)
        self._on_change(self)
        return True

    def _start(self, call: LaneCall) -> bool:
        with self._lock:
            if call.state == _TAKEN:
                if self.skip_late and call.handle.stopping:
                    call.state = _WITHDRAWN  # its caller gets its 504 from the loop's timer
                    self._release(1)
                    return False
                call.state = _RUNNING
            return call.state == _RUNNING  # True again for a call its runner runs anew

    def _work(self, worker: int) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._stopping:
                    self._sleeping += 1
                    self._wake.wait()
                    self._sleeping -= 1
                if not self._queue:
                    return
                # A fair share when other workers sleep: a batch runs its calls one after
                # another, so one worker taking everything would leave the others idle
                # behind a slow call.
                share = -(-len(self._queue) // (self._sleeping + 1))
                batch: list[LaneCall] = []
                while self._queue and len(batch) < min(self.batch_limit, share):
                    call = self._queue.popleft()
                    call.state = _TAKEN
                    batch.append(call)
                self._running += 1
                self.batches += 1
                self.batched_calls += len(batch)
            self._on_change(self)
            self._lock_waited_s[worker] = 0.0
            began, began_cpu = time.monotonic(), time.thread_time()
            try:
                self._run_batch(worker, batch)
            except BaseException as exc:  # a runner's defect fails its calls, not the lane
                for call in batch:
                    if call.error is None and call.result is None:
                        call.fail(exc)
            elapsed = max(0.0, time.monotonic() - began - self._lock_waited_s[worker])
            cpu = time.thread_time() - began_cpu
            with self._lock:
                finished = [call for call in batch if call.state != _WITHDRAWN]
                if finished:  # withdrawn calls took no time: they would drag the averages down
                    ran = len(finished)
                    self.batch_cost.add(ran, elapsed)
                    self.call_cpu_seconds += _EWMA_WEIGHT * (cpu / ran - self.call_cpu_seconds)
                for call in finished:
                    call.state = _DONE
                self._running -= 1
                self._release(len(finished))
            self._on_change(self)
            if finished:
                _settle_soon(finished)

    def _release(self, count: int) -> None:
        self._pending -= count
        if self._pending == 0:
            self._idle.notify_all()

    def wait_idle(self, timeout_s: float) -> bool:
        """Block until no call is pending (abandoned ones included); False on timeout."""
        with self._lock:
            return self._idle.wait_for(lambda: self._pending == 0, timeout=timeout_s)

    def shutdown(self, wait: bool = True) -> None:
        """Take no more calls and drop the queued ones (cancelled: a write started now could
        commit after shutdown began); running ones finish."""
        with self._lock:
            self._stopping = True
            dropped = list(self._queue)
            self._queue.clear()
            for call in dropped:
                call.state = _WITHDRAWN
            self._release(len(dropped))
            self._wake.notify_all()
        if dropped:
            self._on_change(self)
        for call in dropped:
            _cancel_future(call)
        if wait:
            for thread in self._threads:
                if thread is not threading.current_thread():
                    thread.join()


# Weight of the newest batch in a lane's moving average of worker time per call: about the
# last ten batches count, so the estimate follows a change of load within a fraction of a
# second at the rates where admission matters.
_EWMA_WEIGHT = 0.1


class BatchCost:
    """Moving averages (weight _EWMA_WEIGHT) of a batch's size n, its seconds t, n*n and n*t:
    enough to fit t = fixed + per_call * n by least squares as batches come."""

    def __init__(self) -> None:
        self.n = self.t = self.nn = self.nt = 0.0
        self.seen = False

    def add(self, n: int, t: float) -> None:
        if not self.seen:  # the first batch is the whole estimate, not a tenth of it
            self.n, self.t, self.nn, self.nt, self.seen = n, t, n * n, n * t, True
            return
        w = _EWMA_WEIGHT
        self.n += w * (n - self.n)
        self.t += w * (t - self.t)
        self.nn += w * (n * n - self.nn)
        self.nt += w * (n * t - self.nt)

    def line(self) -> tuple[float, float]:
        """(fixed, per_call) seconds. Batches all of one size (a lane without grouping) cannot
        tell the two apart: then all of it is per call, as for one call alone."""
        if self.n <= 0:
            return 0.0, 0.0
        mean_per_call = self.t / self.n
        spread = self.nn - self.n * self.n
        if spread < _MIN_BATCH_SPREAD:
            return 0.0, mean_per_call
        per_call = min(max((self.nt - self.n * self.t) / spread, 0.0), mean_per_call)
        return max(self.t - per_call * self.n, 0.0), per_call


# Below this variance of batch sizes the fit is noise: a lane whose batches are nearly all
# the same size is judged per call.
_MIN_BATCH_SPREAD = 0.25


def _settle_soon(batch: list[LaneCall]) -> None:
    """One callback into the event loop for the whole batch."""
    loop = batch[0].loop
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody awaits these
        loop.call_soon_threadsafe(_settle, batch)


def _settle(batch: list[LaneCall]) -> None:
    for call in batch:
        if call.future.done():  # answered already (its deadline passed, or cancelled)
            continue
        if call.error is not None:
            call.future.set_exception(call.error)
        else:
            call.future.set_result(call.result)


def _cancel_future(call: LaneCall) -> None:
    try:
        on_loop = asyncio.get_running_loop() is call.loop
    except RuntimeError:
        on_loop = False
    if on_loop:
        call.future.cancel()
    else:
        with contextlib.suppress(RuntimeError):
            call.loop.call_soon_threadsafe(call.future.cancel)


async def await_until(call: LaneCall, interrupter: Executor | None = None) -> T:
    """Wait for a lane call's result until its handle's deadline, never longer.

    On expiry (or if the awaiting task is cancelled) the handle is cancelled: a queued call is
    withdrawn before it starts, a running one is interrupted, from `interrupter`'s thread when
    one is given (a PostgreSQL cancel is a network round trip that would hold up the event
    loop, and with it every request whose deadline falls at the same moment). The caller
    gets `DeadlineExceeded` at the deadline, not when the worker gets round to stopping.
    """
    remaining = call.handle.deadline.remaining()
    timer = (None if math.isinf(remaining)
             else call.loop.call_later(remaining, _expire, call, interrupter))
    gone = call.handle.deadline.gone

    def on_gone(_: object) -> None:
        _client_gone(call)

    if gone is not None:
        gone.add_done_callback(on_gone)
    try:
        return await call.future  # type: ignore[no-any-return]
    except asyncio.CancelledError:
        _stop(call, interrupter)
        raise
    finally:
        if timer is not None:
            timer.cancel()
        if gone is not None:
            gone.remove_done_callback(on_gone)


def _client_gone(call: LaneCall) -> None:
    """The client disconnected: a call not yet started never starts. One that runs finishes
    (a write may be committing; stopping it would change nothing for a client who is gone)."""
    if not call.future.done() and call.lane.withdraw(call):
        call.handle.mark_cancelled()
        call.future.set_exception(ClientGone("the client disconnected before its work began"))


def _expire(call: LaneCall, interrupter: Executor | None) -> None:
    if call.future.done():
        return
    if not call.handle.expire():  # past its commit point: the outcome is the answer
        return
    call.future.set_exception(DeadlineExceeded("the DB call outlived its deadline"))
    _stop(call, interrupter)


def _stop(call: LaneCall, interrupter: Executor | None) -> None:
    if call.lane.withdraw(call):
        call.handle.mark_cancelled()
        call.future.cancel()
        return
    _cancel(call.handle, interrupter)


def _cancel(handle: CallHandle, interrupter: Executor | None) -> None:
    if interrupter is None:
        handle.cancel()
        return
    handle.mark_cancelled()  # now: no statement and no COMMIT after this
    interrupter.submit(handle.cancel)
