"""WorkerLane (batches included), CallHandle and await_until. Workers are held on
threading.Events, never sleeps."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from app.errors import DeadlineExceeded, LockTimeout, QueueFull
from app.resilience import CallHandle, Deadline, LaneCall, WorkerLane, await_until, run_each

pytestmark = pytest.mark.unit

WAIT_S = 10.0  # upper bound on any Event wait: a broken lane fails the test, never hangs it


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Gate:
    """Work that blocks until the test opens the gate; counts how many calls started."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.started = threading.Semaphore(0)
        self.calls = 0

    def work(self) -> str:
        self.calls += 1
        self.started.release()
        assert self.opened.wait(WAIT_S), "the test never opened the gate"
        return "released"

    def wait_started(self, count: int) -> None:
        for _ in range(count):
            assert self.started.acquire(timeout=WAIT_S), "a worker never started"

    async def started_on(self, count: int) -> None:
        """Wait off the event loop: a lane wakes its workers from the loop (once per loop
        iteration), so a test blocking the loop would hold back the very start it waits for."""
        await asyncio.to_thread(self.wait_started, count)


@pytest.fixture
def gate() -> Iterator[Gate]:
    gate = Gate()
    yield gate
    gate.opened.set()  # free the workers even when the test failed


@pytest.fixture
def lanes(gate: Gate) -> Iterator[list[WorkerLane]]:
    """Lanes the test appends here are shut down afterwards, the gate opened first."""
    created: list[WorkerLane] = []
    yield created
    gate.opened.set()
    for lane in created:
        lane.shutdown(wait=True)


def counters(lane: WorkerLane) -> tuple[int, int, int]:
    return lane.pending, lane.running, lane.queued


@pytest.mark.anyio
async def test_results_are_returned(lanes: list[WorkerLane]) -> None:
    lane = WorkerLane("reader", 2, 4)
    lanes.append(lane)
    calls = [lane.submit(lambda n=n: n * n) for n in range(5)]
    assert [await await_until(c) for c in calls] == [0, 1, 4, 9, 16]


@pytest.mark.anyio
async def test_worker_exception_reaches_the_caller(lanes: list[WorkerLane]) -> None:
    lane = WorkerLane("writer", 1, 0)
    lanes.append(lane)
    error = LockTimeout("busy")

    def fail() -> None:
        raise error

    with pytest.raises(LockTimeout) as raised:
        await await_until(lane.submit(fail))
    assert raised.value is error


@pytest.mark.anyio
@pytest.mark.parametrize(("workers", "queue_limit"), [(1, 0), (1, 2), (2, 1), (3, 3)])
async def test_queue_full_once_workers_plus_queue_limit_are_pending(
    gate: Gate, lanes: list[WorkerLane], workers: int, queue_limit: int
) -> None:
    lane = WorkerLane("reader", workers, queue_limit)
    lanes.append(lane)
    calls = [lane.submit(gate.work) for _ in range(workers + queue_limit)]
    await gate.started_on(workers)
    assert counters(lane) == (workers + queue_limit, workers, queue_limit)
    with pytest.raises(QueueFull, match=f"{workers + queue_limit} calls pending"):
        lane.submit(gate.work)
    assert lane.pending == workers + queue_limit  # the refused call is not counted
    gate.opened.set()
    assert [await await_until(c) for c in calls] == ["released"] * len(calls)
    lane.shutdown(wait=True)
    assert counters(lane) == (0, 0, 0)
    assert gate.calls == workers + queue_limit


@pytest.mark.anyio
async def test_capacity_is_given_back_when_work_finishes(
    gate: Gate, lanes: list[WorkerLane]
) -> None:
    idle = threading.Event()
    lane = WorkerLane("writer", 1, 0, on_change=lambda ln: idle.set() if ln.pending == 0 else None)
    lanes.append(lane)
    first = lane.submit(gate.work)
    with pytest.raises(QueueFull):
        lane.submit(gate.work)
    gate.opened.set()
    assert await await_until(first) == "released"
    assert idle.wait(WAIT_S)
    assert await await_until(lane.submit(lambda: "again")) == "again"


@pytest.mark.anyio
async def test_shutdown_drops_queued_calls_and_lets_the_running_one_finish(
    gate: Gate, lanes: list[WorkerLane]
) -> None:
    """A closing service must not start queued work: its callers are gone or being told the
    service is stopping, and a write started now could commit after shutdown began."""
    lane = WorkerLane("writer", 1, 1)
    lanes.append(lane)
    running = lane.submit(gate.work)
    await gate.started_on(1)
    queued = lane.submit(lambda: "ran after shutdown")
    lane.shutdown(wait=False)
    assert queued.future.cancelled()
    with pytest.raises(QueueFull, match="shut down"):
        lane.submit(gate.work)
    gate.opened.set()
    assert await await_until(running) == "released"
    lane.shutdown(wait=True)
    assert counters(lane) == (0, 0, 0)


@pytest.mark.anyio
async def test_lane_threads_are_named_after_their_lane(lanes: list[WorkerLane]) -> None:
    """Thread dumps and profiles (py-spy) show which lane a stuck thread belongs to."""
    lane = WorkerLane("reader", 1, 0)
    lanes.append(lane)
    name = await await_until(lane.submit(lambda: threading.current_thread().name))
    assert str(name).startswith("db-reader")


@pytest.mark.anyio
async def test_on_change_sees_every_transition(lanes: list[WorkerLane]) -> None:
    seen: list[tuple[int, int, int]] = []
    lane = WorkerLane("writer", 1, 3, on_change=lambda ln: seen.append(counters(ln)))
    lanes.append(lane)
    assert await await_until(lane.submit(lambda: 1)) == 1
    lane.shutdown(wait=True)
    # submitted (queued), started (running), finished.
    assert seen == [(1, 0, 1), (1, 1, 0), (0, 0, 0)]


class Batches:
    """A batch runner that records each batch's size and can hold the first call of a batch."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.sizes: list[int] = []
        self.settled_by: list[int] = []

    def run(self, _worker: int, calls: list[LaneCall]) -> None:
        self.sizes.append(len(calls))
        for call in calls:
            if call.start():
                call.resolve(call.fn())


@pytest.mark.anyio
async def test_a_worker_takes_every_waiting_call_in_one_batch(
    gate: Gate, lanes: list[WorkerLane]
) -> None:
    """Three calls queued behind a busy worker reach the runner together, and their callers'
    futures are settled by one callback into the event loop."""
    batches = Batches(gate)
    lane = WorkerLane("writer", 1, 8, batch_limit=8, run_batch=batches.run)
    lanes.append(lane)
    first = lane.submit(gate.work)
    await gate.started_on(1)
    queued = [lane.submit(lambda n=n: n) for n in range(3)]
    loop = asyncio.get_running_loop()
    callbacks: list[object] = []
    original = loop.call_soon_threadsafe

    def counting(callback: Any, *args: Any, **kwargs: Any) -> Any:
        callbacks.append(callback)
        return original(callback, *args, **kwargs)

    loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
    try:
        gate.opened.set()
        assert await await_until(first) == "released"
        assert [await await_until(c) for c in queued] == [0, 1, 2]
    finally:
        loop.call_soon_threadsafe = original  # type: ignore[method-assign]
    assert batches.sizes == [1, 3]
    assert len(callbacks) == 2  # one per batch, not one per call


@pytest.mark.anyio
async def test_batch_limit_bounds_a_batch(gate: Gate, lanes: list[WorkerLane]) -> None:
    batches = Batches(gate)
    lane = WorkerLane("reader", 1, 8, batch_limit=2, run_batch=batches.run)
    lanes.append(lane)
    first = lane.submit(gate.work)
    await gate.started_on(1)
    queued = [lane.submit(lambda n=n: n) for n in range(5)]
    gate.opened.set()
    await await_until(first)
    assert [await await_until(c) for c in queued] == list(range(5))
    assert batches.sizes == [1, 2, 2, 1]


@pytest.mark.anyio
async def test_a_call_withdrawn_from_a_taken_batch_never_runs_and_frees_its_capacity(
    gate: Gate, lanes: list[WorkerLane]
) -> None:
    """A call already taken into a worker's batch, behind a slow one, reaches its deadline:
    it is answered then, counts no more, and its work is skipped when the batch gets to it."""
    batches = Batches(gate)
    lane = WorkerLane("writer", 1, 2, batch_limit=8, run_batch=batches.run)
    lanes.append(lane)
    second = Gate()
    blocker = lane.submit(gate.work)
    await gate.started_on(1)
    slow = lane.submit(second.work)
    late = lane.submit(gate.work, CallHandle(Deadline.after(0.1)))
    try:
        gate.opened.set()  # the blocker ends; the next batch holds `slow` and `late`
        await await_until(blocker)
        await second.started_on(1)  # `slow` runs, `late` waits behind it in the same batch
        assert batches.sizes == [1, 2]
        with pytest.raises(DeadlineExceeded):
            await await_until(late)
        assert lane.pending == 1  # only `slow` counts now
    finally:
        second.opened.set()
    assert await await_until(slow) == "released"
    lane.shutdown(wait=True)
    assert (gate.calls, second.calls) == (1, 1)  # `late` never ran


def test_cancel_calls_the_attached_interrupt() -> None:
    handle = CallHandle(Deadline.after(60))
    interrupts: list[str] = []
    handle.attach(lambda: interrupts.append("interrupt"))
    assert interrupts == []
    handle.cancel()
    assert handle.cancelled is True
    assert interrupts == ["interrupt"]


def test_attach_after_cancel_needs_no_interrupt_the_flag_refuses_the_work() -> None:
    handle = CallHandle(Deadline.after(60))
    handle.cancel()
    interrupts: list[str] = []
    handle.attach(lambda: interrupts.append("interrupt"))
    assert interrupts == []  # nothing runs yet; an interrupt now would only linger
    with pytest.raises(DeadlineExceeded):
        handle.raise_if_cancelled()


def test_detach_waits_for_an_interrupt_in_flight() -> None:
    """A cancel racing the end of its attempt: once `detach` returns, the interrupt has been
    sent and no other can start, so none can reach the connection's next call."""
    handle = CallHandle(Deadline.after(60))
    sending, release = threading.Event(), threading.Event()
    sent: list[str] = []

    def slow_interrupt() -> None:  # an interrupt call that is slow to return
        sending.set()
        assert release.wait(WAIT_S)
        sent.append("interrupt")

    handle.attach(slow_interrupt)
    canceller = threading.Thread(target=handle.cancel)
    canceller.start()
    assert sending.wait(WAIT_S)
    detached = threading.Event()
    detacher = threading.Thread(target=lambda: (handle.detach(), detached.set()))
    detacher.start()
    assert not detached.wait(0.05), "detach returned while an interrupt was being sent"
    release.set()
    assert detached.wait(WAIT_S)
    assert sent == ["interrupt"]
    canceller.join(WAIT_S)
    detacher.join(WAIT_S)


def test_cancel_after_detach_interrupts_nothing() -> None:
    handle = CallHandle(Deadline.after(60))
    interrupts: list[str] = []
    handle.attach(lambda: interrupts.append("interrupt"))
    handle.detach()
    handle.cancel()
    assert interrupts == []
    assert handle.cancelled is True


def test_raise_if_cancelled() -> None:
    live = CallHandle(Deadline.after(60))
    live.raise_if_cancelled()  # neither cancelled nor late: no error
    live.cancel()
    with pytest.raises(DeadlineExceeded):
        live.raise_if_cancelled()
    late = CallHandle(Deadline(time.monotonic() - 1.0))
    assert late.cancelled is False
    with pytest.raises(DeadlineExceeded):
        late.raise_if_cancelled()


@pytest.mark.anyio
async def test_await_until_returns_the_result_before_the_deadline(
    lanes: list[WorkerLane],
) -> None:
    lane = WorkerLane("reader", 1, 0)
    lanes.append(lane)
    handle = CallHandle(Deadline.after(WAIT_S))
    assert await await_until(lane.submit(lambda: 42, handle)) == 42
    assert handle.cancelled is False


@pytest.mark.anyio
async def test_await_until_raises_the_workers_error(lanes: list[WorkerLane]) -> None:
    lane = WorkerLane("reader", 1, 0)
    lanes.append(lane)

    def fail() -> None:
        raise LockTimeout("busy")

    with pytest.raises(LockTimeout, match="busy"):
        await await_until(lane.submit(fail, CallHandle(Deadline.after(WAIT_S))))


@pytest.mark.anyio
async def test_await_until_gives_up_at_the_deadline_and_interrupts(
    gate: Gate, lanes: list[WorkerLane]
) -> None:
    lane = WorkerLane("writer", 1, 0)
    lanes.append(lane)
    handle = CallHandle(Deadline.after(0.1))
    call = lane.submit(gate.work, handle)
    await gate.started_on(1)
    interrupts: list[str] = []
    handle.attach(lambda: interrupts.append("interrupt"))
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        await await_until(call)
    assert time.monotonic() - started < WAIT_S / 2  # at the deadline, not when the worker ends
    assert handle.cancelled is True
    assert interrupts == ["interrupt"]
    assert lane.running == 1  # abandoned work still holds its worker until it really ends
    gate.opened.set()
    lane.shutdown(wait=True)
    assert counters(lane) == (0, 0, 0)


@pytest.mark.anyio
async def test_queued_call_is_dropped_at_its_deadline(gate: Gate, lanes: list[WorkerLane]) -> None:
    lane = WorkerLane("writer", 1, 1)
    lanes.append(lane)
    lane.submit(gate.work)
    await gate.started_on(1)
    handle = CallHandle(Deadline.after(0.1))
    queued = lane.submit(gate.work, handle)
    with pytest.raises(DeadlineExceeded):
        await await_until(queued)
    assert handle.cancelled is True
    assert lane.pending == 1  # the dropped call no longer counts
    gate.opened.set()
    lane.shutdown(wait=True)
    assert gate.calls == 1  # the queued work never ran


def test_a_groups_lock_wait_is_paid_once_per_batch_in_the_expected_wait() -> None:
    # Writes grouped 64 at a time: one batch of 3 waited 200 ms for another process's lock,
    # then the queue behind it ran in big, quick batches. Sixty calls ahead are one batch:
    # the wait expected is one batch's fixed cost plus sixty small per-call costs, not sixty
    # times the 67 ms a call of the slow batch seemed to cost.
    lane = WorkerLane("writer", workers=1, queue_limit=1024, batch_limit=64)
    try:
        for size, seconds in [(2, 0.004), (40, 0.02), (3, 0.2), (50, 0.025), (10, 0.008),
                              (30, 0.015)]:
            lane.batch_cost.add(size, seconds)
        fixed, per_call = lane.batch_cost.line()
        assert 0 < fixed < 0.1 and 0 <= per_call < 0.01
        assert lane.wait_for(60) < 0.15
        assert lane.wait_for(200) > lane.wait_for(60)  # more batches ahead, more to wait
    finally:
        lane.shutdown()


def test_a_lane_without_groups_expects_each_call_to_cost_its_measured_time() -> None:
    lane = WorkerLane("readers", workers=4, queue_limit=64)
    try:
        for _ in range(20):
            lane.batch_cost.add(1, 0.5)  # every read is slowed to 500 ms
        assert lane.wait_for(40) == pytest.approx(40 * 0.5 / 4)
        assert lane.wait_for(0) == 0.0
    finally:
        lane.shutdown()


def test_cpu_bound_calls_share_the_cpus_not_the_workers() -> None:
    lane = WorkerLane("hash", workers=4, queue_limit=64)
    try:
        lane.assume_call_seconds(0.05)
        cpus = min(4, len(os.sched_getaffinity(0)))
        assert lane.wait_for(8) == pytest.approx(max(8 * 0.05 / 4, 8 * 0.05 / cpus))
    finally:
        lane.shutdown()


async def test_a_lock_wait_counts_while_it_lasts_not_as_the_cost_of_the_calls() -> None:
    """A one-call batch waits 100 ms or more for another process's lock. While it waits, the
    expected wait of the calls behind it includes that wait (as long again as it has lasted);
    afterwards the lane's cost per call is the calls' own, not the lock's: measured before,
    such a batch made each call look 21.6 ms long, and 60 creates queued behind a lock pulse
    were refused as 1.3 s of work."""
    entered, release = threading.Event(), threading.Event()
    lane: WorkerLane

    def run(worker: int, calls: list[LaneCall]) -> None:
        if not entered.is_set():
            with lane.waiting_for_lock(worker):
                entered.set()
                assert release.wait(WAIT_S), "the test never released the lock"
        run_each(worker, calls)

    lane = WorkerLane("writer", workers=1, queue_limit=64, batch_limit=64, run_batch=run)
    try:
        first = lane.submit(lambda: "first")
        assert await asyncio.to_thread(entered.wait, WAIT_S)
        await asyncio.sleep(0.1)  # how long the lock is held
        ahead = lane.lock_wait_ahead()
        assert ahead >= 0.1
        assert lane.wait_for(1) >= ahead
        release.set()
        assert await await_until(first) == "first"
        assert lane.lock_wait_ahead() == 0.0
        fixed, per_call = lane.batch_cost.line()
        assert fixed + per_call < 0.05, (fixed, per_call)
    finally:
        release.set()
        lane.shutdown()
