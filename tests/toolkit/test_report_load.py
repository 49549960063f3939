"""The report's load driver: open loop counts a stall in full, closed loop hides it; the
retrying client resends the same write with the same key and honours Retry-After."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import httpx
import pytest
from sqlite_faults.ledger import WriteLedger
from sqlite_faults.outcome import Outcome
from sqlite_faults.retry import PLAIN, RETRYING, RetryPolicy
from sqlite_faults.target import load_target
from sqlite_faults.traffic import (
    CLOSED,
    CREATE,
    OPEN,
    READ,
    ROOT,
    LoadGenerator,
    LoadModel,
    LoadSpec,
)

HARDENED = Path(__file__).resolve().parents[2] / "examples" / "targets" / "hardened.toml"
ROOT_ONLY = {ROOT: 1.0, CREATE: 0.0, READ: 0.0}


def generator(handler: object, model: LoadModel, profiles: tuple[str, ...] = (PLAIN,),
              mix: dict[str, float] | None = None, seed: int = 1) -> LoadGenerator:
    target = load_target(HARDENED)
    ledgers = {p: WriteLedger(random.Random(seed), target.write, prefix=p) for p in profiles}
    return LoadGenerator(target, ledgers, random.Random(seed), model, profiles=profiles,
                         mix=mix or ROOT_ONLY,
                         transport=httpx.MockTransport(handler))  # type: ignore[arg-type]


async def run_for(load: LoadGenerator, seconds: float) -> None:
    stop = asyncio.Event()
    started = time.monotonic()
    task = asyncio.create_task(load.run("http://service", stop, started))
    await asyncio.sleep(seconds)  # the length of the load run under test
    stop.set()
    await task


def stalling_handler(stall_from: float, stall_s: float):  # type: ignore[no-untyped-def]
    """Answers at once, except that the whole process stops for `stall_s` once, `stall_from`
    seconds in (time.sleep on the event loop: nothing runs, the load generator included)."""
    state = {"started": None, "stalled": False}

    async def handler(request: httpx.Request) -> httpx.Response:
        now = time.monotonic()
        state["started"] = state["started"] or now
        if not state["stalled"] and now - state["started"] >= stall_from:
            state["stalled"] = True
            time.sleep(stall_s)  # the stall: blocks the loop, as a stuck service would
        return httpx.Response(200, json={"ok": True})
    return handler


@pytest.mark.timeout(30)
async def test_open_loop_counts_a_stall_in_full_from_the_intended_send_times() -> None:
    load = generator(stalling_handler(0.3, 0.6), LoadModel(OPEN, rate=100))
    await run_for(load, 1.5)
    # ~60 requests were due during the 0.6 s stall; each waited for it, measured from when
    # it was due (a driver that timed from the actual send would see them all fast).
    slow = [s for s in load.samples if s.latency >= 0.2]
    assert len(slow) >= 25, sorted(s.latency for s in load.samples)[-10:]
    assert max(s.latency for s in load.samples) >= 0.5


@pytest.mark.timeout(30)
async def test_closed_loop_lets_the_same_stall_contribute_one_sample_per_client() -> None:
    load = generator(stalling_handler(0.3, 0.6), LoadModel(CLOSED, clients=2, think_s=0.01))
    await run_for(load, 1.5)
    slow = [s for s in load.samples if s.latency >= 0.2]
    assert 1 <= len(slow) <= 2, slow
    assert len(load.samples) > 50


@pytest.mark.timeout(30)
async def test_the_open_loop_schedule_is_seeded() -> None:
    async def ok(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={})

    mix = {ROOT: 0.5, CREATE: 0.0, READ: 0.5}
    runs = []
    for _ in range(2):
        load = generator(ok, LoadModel(OPEN, rate=200), mix=mix, seed=5)
        await run_for(load, 0.4)
        runs.append(sorted((round(s.at, 6), s.endpoint) for s in load.samples)[:40])
    # Arrival offsets and the request mix are drawn from the seed, not from the clock.
    assert runs[0] == runs[1]
    assert len(runs[0]) == 40


@pytest.mark.timeout(30)
async def test_the_retrying_client_resends_a_write_with_the_same_key_after_a_503() -> None:
    seen: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Idempotency-Key"])
        if len(seen) == 1:
            return httpx.Response(503, headers={"Retry-After": "0.2"},
                                  json={"error": {"code": "storage_busy"}})
        return httpx.Response(201, json={"id": 7, "name": "x"})

    load = generator(handler, LoadModel(OPEN, rate=2), profiles=(RETRYING,),
                     mix={ROOT: 0.0, CREATE: 1.0, READ: 0.0})
    await run_for(load, 0.9)
    first = load.samples[0]
    assert first.ok and first.attempts == 2 and first.profile == RETRYING
    assert seen[0] == seen[1], "a retried write must carry the first attempt's key"
    assert first.latency >= 0.2, "Retry-After: 0.2 was not honoured"
    assert load.ledgers[RETRYING].creates[0].outcome == "acknowledged"


@pytest.mark.timeout(30)
async def test_the_plain_client_does_not_retry() -> None:
    calls = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(503, json={"error": {"code": "storage_busy"}})

    load = generator(handler, LoadModel(OPEN, rate=5), profiles=(PLAIN,))
    await run_for(load, 0.6)
    assert calls == len(load.samples) and all(s.attempts == 1 for s in load.samples)


@pytest.mark.parametrize(("outcome", "is_write", "keyed", "retry"), [
    (Outcome(0, "ReadTimeout"), False, False, True),   # a read: any failure
    (Outcome(0, "ReadTimeout"), True, True, True),     # a keyed write: replayed, not redone
    (Outcome(0, "ReadTimeout"), True, False, False),   # unkeyed: it may have committed
    (Outcome(0, "ConnectError"), True, False, True),   # never sent
    (Outcome(503, "overloaded"), True, False, True),   # never started, says the service
    (Outcome(500, "http-500"), True, False, False),
    (Outcome(500, "http-500"), True, True, True),
    (Outcome(400, "validation_error"), False, False, False),  # retrying cannot cure it
    (Outcome(201, ""), True, True, False),
])
def test_only_retries_that_cannot_write_twice(outcome: Outcome, is_write: bool, keyed: bool,
                                              retry: bool) -> None:
    assert RetryPolicy().should_retry(outcome, 1, is_write, keyed) is retry


def test_attempts_and_the_time_budget_are_bounded() -> None:
    policy = RetryPolicy(max_attempts=3, budget_s=5.0)
    timeout = Outcome(0, "ReadTimeout")
    assert policy.should_retry(timeout, 2, False, False)
    assert not policy.should_retry(timeout, 3, False, False)
    assert not policy.should_retry(timeout, 1, False, False, elapsed_s=5.0)


def test_backoff_is_full_jitter_under_a_growing_cap_and_honours_retry_after() -> None:
    policy = RetryPolicy(base_s=0.1, cap_s=1.0, retry_after_cap_s=2.0)
    rng = random.Random(3)
    waits = [policy.backoff_s(1, None, rng) for _ in range(200)]
    assert 0 <= min(waits) < 0.01 and 0.09 < max(waits) <= 0.1
    assert max(policy.backoff_s(8, None, rng) for _ in range(200)) <= 1.0
    assert policy.backoff_s(1, "1", rng) >= 1.0
    assert policy.backoff_s(1, "30", rng) == 2.0  # capped
    assert policy.backoff_s(1, "Wed, 21 Oct 2015 07:28:00 GMT", rng) <= 0.1


def test_the_default_rate_is_a_fraction_of_capacity_and_a_baseline_never_exceeds_it() -> None:
    spec = LoadSpec(OPEN, rate=None, capacity_fraction=0.5)
    assert spec.settle(400.0, None).rate == 200.0
    assert spec.settle(1000.0, 200.0).rate == 200.0  # a baseline: no more than the first
    assert spec.settle(100.0, 200.0).rate == 50.0  # ... nor more than half its own
    assert LoadSpec(OPEN, rate=80.0).settle(1000.0, 20.0).rate == 80.0  # asked for: as given
