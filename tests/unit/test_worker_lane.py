"""WorkerLane, CallHandle and await_until. Workers are held on threading.Events, never sleeps."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from app.errors import DeadlineExceeded, LockTimeout, QueueFull
from app.resilience import CallHandle, Deadline, WorkerLane, await_until

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


def test_results_are_returned(lanes: list[WorkerLane]) -> None:
    lane = WorkerLane("reader", 2, 4)
    lanes.append(lane)
    futures = [lane.submit(lambda n=n: n * n) for n in range(5)]
    assert [f.result(timeout=WAIT_S) for f in futures] == [0, 1, 4, 9, 16]


def test_worker_exception_reaches_the_caller(lanes: list[WorkerLane]) -> None:
    lane = WorkerLane("writer", 1, 0)
    lanes.append(lane)
    error = LockTimeout("busy")

    def fail() -> None:
        raise error

    assert lane.submit(fail).exception(timeout=WAIT_S) is error


@pytest.mark.parametrize(("workers", "queue_limit"), [(1, 0), (1, 2), (2, 1), (3, 3)])
def test_queue_full_once_workers_plus_queue_limit_are_pending(
    gate: Gate, lanes: list[WorkerLane], workers: int, queue_limit: int
) -> None:
    lane = WorkerLane("reader", workers, queue_limit)
    lanes.append(lane)
    futures = [lane.submit(gate.work) for _ in range(workers + queue_limit)]
    gate.wait_started(workers)
    assert counters(lane) == (workers + queue_limit, workers, queue_limit)
    with pytest.raises(QueueFull, match=f"{workers + queue_limit} calls pending"):
        lane.submit(gate.work)
    assert lane.pending == workers + queue_limit  # the refused call is not counted
    gate.opened.set()
    assert [f.result(timeout=WAIT_S) for f in futures] == ["released"] * len(futures)
    lane.shutdown(wait=True)  # done-callbacks have run once the workers are joined
    assert counters(lane) == (0, 0, 0)
    assert gate.calls == workers + queue_limit


def test_capacity_is_given_back_when_work_finishes(gate: Gate, lanes: list[WorkerLane]) -> None:
    idle = threading.Event()
    lane = WorkerLane("writer", 1, 0, on_change=lambda ln: idle.set() if ln.pending == 0 else None)
    lanes.append(lane)
    first = lane.submit(gate.work)
    with pytest.raises(QueueFull):
        lane.submit(gate.work)
    gate.opened.set()
    assert first.result(timeout=WAIT_S) == "released"
    assert idle.wait(WAIT_S)
    assert lane.submit(lambda: "again").result(timeout=WAIT_S) == "again"


def test_shutdown_drops_queued_calls_and_lets_the_running_one_finish(
    gate: Gate, lanes: list[WorkerLane]
) -> None:
    """A closing service must not start queued work: its callers are gone or being told the
    service is stopping, and a write started now could commit after shutdown began."""
    lane = WorkerLane("writer", 1, 1)
    lanes.append(lane)
    running = lane.submit(gate.work)
    gate.wait_started(1)
    queued = lane.submit(lambda: "ran after shutdown")
    lane.shutdown(wait=False)
    assert queued.cancelled()
    gate.opened.set()
    assert running.result(timeout=WAIT_S) == "released"
    lane.shutdown(wait=True)
    assert counters(lane) == (0, 0, 0)


def test_lane_threads_are_named_after_their_lane(lanes: list[WorkerLane]) -> None:
    """Thread dumps and profiles (py-spy) show which lane a stuck thread belongs to."""
    lane = WorkerLane("reader", 1, 0)
    lanes.append(lane)
    name = lane.submit(lambda: threading.current_thread().name).result(timeout=WAIT_S)
    assert name.startswith("db-reader")


def test_on_change_sees_every_transition(lanes: list[WorkerLane]) -> None:
    seen: list[tuple[int, int, int]] = []
    lane = WorkerLane("writer", 1, 3, on_change=lambda ln: seen.append(counters(ln)))
    lanes.append(lane)
    assert lane.submit(lambda: 1).result(timeout=WAIT_S) == 1
    lane.shutdown(wait=True)
    # submitted (queued), started (running), finished.
    assert seen == [(1, 0, 1), (1, 1, 0), (0, 0, 0)]


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
    assert await await_until(lane.submit(lambda: 42), handle) == 42
    assert handle.cancelled is False


@pytest.mark.anyio
async def test_await_until_raises_the_workers_error(lanes: list[WorkerLane]) -> None:
    lane = WorkerLane("reader", 1, 0)
    lanes.append(lane)

    def fail() -> None:
        raise LockTimeout("busy")

    with pytest.raises(LockTimeout, match="busy"):
        await await_until(lane.submit(fail), CallHandle(Deadline.after(WAIT_S)))


@pytest.mark.anyio
async def test_await_until_gives_up_at_the_deadline_and_interrupts(
    gate: Gate, lanes: list[WorkerLane]
) -> None:
    lane = WorkerLane("writer", 1, 0)
    lanes.append(lane)
    future = lane.submit(gate.work)
    gate.wait_started(1)
    handle = CallHandle(Deadline.after(0.1))
    interrupts: list[str] = []
    handle.attach(lambda: interrupts.append("interrupt"))
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        await await_until(future, handle)
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
    gate.wait_started(1)
    queued = lane.submit(gate.work)
    handle = CallHandle(Deadline.after(0.1))
    with pytest.raises(DeadlineExceeded):
        await await_until(queued, handle)
    assert queued.cancelled() is True
    assert lane.pending == 1  # the dropped call no longer counts
    gate.opened.set()
    lane.shutdown(wait=True)
    assert gate.calls == 1  # the queued work never ran
