"""RetryPolicy: only transient errors are retried, within attempts and the deadline, with
full-jitter backoff from the injected RNG. Sleeping is recorded, never done."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import pytest

from app.errors import (
    DeadlineExceeded,
    IntegrityViolation,
    LockTimeout,
    QueueFull,
    StorageBug,
    StorageUnavailable,
    TransientStorageError,
)
from app.resilience import Deadline, RetryBudget, RetryPolicy

pytestmark = pytest.mark.unit


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Clock:
    """A `sleep` that records the delays asked for and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.delays.append(seconds)


class Outcome:
    """What a run of `call` did: attempts made, errors raised, errors passed to on_retry."""

    def __init__(self) -> None:
        self.attempts = 0
        self.raised: list[BaseException] = []
        self.retried: list[BaseException] = []


def make_policy(
    clock: Clock, *, attempts: int = 5, initial: float = 0.01, maximum: float = 0.25, seed: int = 7
) -> RetryPolicy:
    return RetryPolicy(attempts, initial, maximum, rng=random.Random(seed), sleep=clock.sleep)


async def call(
    policy: RetryPolicy,
    failures: int,
    error: Callable[[], BaseException],
    outcome: Outcome,
    deadline: Deadline | None = None,
) -> str:
    """Fail the first `failures` attempts with `error()`, then return "done"."""
    async for attempt in policy.retrying(deadline or Deadline.after(3600), outcome.retried.append):
        with attempt:
            outcome.attempts += 1
            if outcome.attempts <= failures:
                exc = error()
                outcome.raised.append(exc)
                raise exc
            return "done"
    raise AssertionError("the retry loop ended without a result or an error")


@pytest.mark.anyio
@pytest.mark.parametrize("success_at", [1, 2, 3, 5])
async def test_transient_error_is_retried_until_success(success_at: int) -> None:
    clock, outcome = Clock(), Outcome()
    result = await call(make_policy(clock), success_at - 1, lambda: LockTimeout("busy"), outcome)
    assert result == "done"
    assert outcome.attempts == success_at
    assert len(clock.delays) == success_at - 1
    assert len(outcome.retried) == success_at - 1


@pytest.mark.anyio
async def test_on_retry_gets_each_failed_attempts_exception() -> None:
    clock, outcome = Clock(), Outcome()
    await call(make_policy(clock), 3, lambda: TransientStorageError("locked"), outcome)
    assert len(outcome.retried) == 3
    assert all(got is sent for got, sent in zip(outcome.retried, outcome.raised, strict=True))


@pytest.mark.anyio
async def test_stops_after_max_attempts_and_reraises_the_last_error() -> None:
    clock, outcome = Clock(), Outcome()
    with pytest.raises(LockTimeout) as caught:
        await call(make_policy(clock, attempts=3), 99, lambda: LockTimeout("busy"), outcome)
    assert outcome.attempts == 3
    assert caught.value is outcome.raised[-1]
    assert len(clock.delays) == 2
    assert outcome.retried == outcome.raised[:2]


@pytest.mark.anyio
@pytest.mark.parametrize(
    "error",
    [
        IntegrityViolation("dup"),
        StorageBug("bug"),
        DeadlineExceeded("late"),
        StorageUnavailable("disk full"),
        QueueFull("full"),
        ValueError("plain"),
    ],
    ids=lambda error: type(error).__name__,
)
async def test_non_transient_errors_are_never_retried(error: BaseException) -> None:
    clock, outcome = Clock(), Outcome()
    with pytest.raises(type(error)) as caught:
        await call(make_policy(clock), 99, lambda: error, outcome)
    assert caught.value is error
    assert outcome.attempts == 1
    assert clock.delays == []
    assert outcome.retried == []


@pytest.mark.anyio
@pytest.mark.parametrize("seed", [0, 1, 42, 2024])
async def test_delays_are_full_jitter_within_the_exponential_ceiling(seed: int) -> None:
    initial, maximum, attempts = 0.01, 0.05, 8
    clock = Clock()
    policy = make_policy(clock, attempts=attempts, initial=initial, maximum=maximum, seed=seed)
    with pytest.raises(LockTimeout):
        await call(policy, 99, lambda: LockTimeout("busy"), Outcome())
    ceilings = [min(maximum, initial * 2 ** (n - 1)) for n in range(1, attempts)]
    assert ceilings[:4] == [0.01, 0.02, 0.04, 0.05]
    assert len(clock.delays) == attempts - 1
    for delay, ceiling in zip(clock.delays, ceilings, strict=True):
        assert 0 <= delay <= ceiling
    rng = random.Random(seed)
    assert clock.delays == [rng.uniform(0, ceiling) for ceiling in ceilings]


@pytest.mark.anyio
async def test_same_seed_gives_the_same_delays() -> None:
    runs: list[list[float]] = []
    for _ in range(2):
        clock = Clock()
        with pytest.raises(LockTimeout):
            await call(make_policy(clock, seed=99), 99, lambda: LockTimeout("busy"), Outcome())
        runs.append(clock.delays)
    assert len(runs[0]) == 4
    assert runs[0] == runs[1]


@pytest.mark.anyio
async def test_deadline_stops_a_retry_whose_backoff_would_outlast_it() -> None:
    clock, outcome = Clock(), Outcome()
    # Seed 0 draws 8.44 s for the first backoff; the deadline is 0.5 s away.
    policy = make_policy(clock, attempts=5, initial=10.0, maximum=10.0, seed=0)
    deadline = Deadline(time.monotonic() + 0.5)
    with pytest.raises(LockTimeout) as caught:
        await call(policy, 99, lambda: LockTimeout("busy"), outcome, deadline)
    assert caught.value is outcome.raised[0]
    assert outcome.attempts == 1
    assert clock.delays == []
    assert outcome.retried == []


@pytest.mark.anyio
async def test_same_backoff_is_taken_when_the_deadline_allows_it() -> None:
    clock, outcome = Clock(), Outcome()
    policy = make_policy(clock, attempts=5, initial=10.0, maximum=10.0, seed=0)
    result = await call(policy, 1, lambda: LockTimeout("busy"), outcome, Deadline.after(3600))
    assert result == "done"
    assert clock.delays == [random.Random(0).uniform(0, 10.0)]
    assert clock.delays[0] > 0.5


@pytest.mark.anyio
async def test_expired_deadline_allows_the_first_attempt_only() -> None:
    clock, outcome = Clock(), Outcome()
    with pytest.raises(LockTimeout):
        await call(make_policy(clock), 99, lambda: LockTimeout("busy"), outcome, Deadline(0.0))
    assert outcome.attempts == 1
    assert clock.delays == []


@pytest.mark.anyio
async def test_expired_deadline_stops_even_a_retry_with_no_backoff() -> None:
    """The boundary: no budget left and a 0 s backoff still means no retry (a retry would
    start past the deadline, for a client that already has its 504)."""
    clock, outcome = Clock(), Outcome()
    policy = make_policy(clock, attempts=5, initial=0.0, maximum=0.0)
    with pytest.raises(LockTimeout):
        await call(policy, 99, lambda: LockTimeout("busy"), outcome, Deadline(0.0))
    assert outcome.attempts == 1
    assert clock.delays == []


def test_the_budget_holds_while_failures_are_occasional_and_drains_when_most_fail() -> None:
    budget = RetryBudget(max_tokens=10, token_ratio=0.5)
    for i in range(300):  # one attempt in five fails: below a third, the budget holds
        budget.record(succeeded=i % 5 != 0)
    assert budget.allows_retry
    for _ in range(6):  # then most fail: six failures take it to half
        budget.record(succeeded=False)
    assert not budget.allows_retry
    for _ in range(4):  # successes give back a half token each
        budget.record(succeeded=True)
    assert budget.allows_retry


@pytest.mark.anyio
async def test_a_drained_budget_stops_retries_and_says_so() -> None:
    clock, outcome = Clock(), Outcome()
    budget = RetryBudget(max_tokens=4, token_ratio=0.5)
    policy = RetryPolicy(5, 0.01, 0.25, rng=random.Random(7), sleep=clock.sleep, budget=budget)
    budget.record(succeeded=False)
    budget.record(succeeded=False)  # 2 of 4 left: no more retries
    denied: list[bool] = []
    with pytest.raises(LockTimeout):
        async for attempt in policy.retrying(Deadline.after(3600), outcome.retried.append,
                                             lambda: denied.append(True)):
            with attempt:
                outcome.attempts += 1
                raise LockTimeout("busy")
    assert outcome.attempts == 1 and clock.delays == [] and denied == [True]
