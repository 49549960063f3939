"""The battery's checks. Each starts from a service that answers and has no fault armed
(the `fresh` fixture), applies one fault from outside or through the engine plugin, and
judges what a client saw. A failure says what it measured, what it expected, the cause it
points to and what the fix usually is (`finding`).

Time bounds are behavioural ("answered by the deadline, not after a 5 s busy timeout"),
with margins wide enough for a loaded CI machine; the deadline is the target's `deadline_s`,
or DEFAULT_DEADLINE_S when the service states none.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from sqlite_faults.battery.service import Answer, BatteryService
from sqlite_faults.causes import cause
from sqlite_faults.inspect_db import query
from sqlite_faults.leaks import Resources, settles
from sqlite_faults.ledger import WriteLedger
from sqlite_faults.locks import LockHolder
from sqlite_faults.server import ServerProcess
from sqlite_faults.target import Request, Target
from sqlite_faults.traffic import LoadGenerator

pytestmark = pytest.mark.timeout(180)

DEFAULT_DEADLINE_S = 1.0  # for a service that states none: what a client would wait
GRACE_S = 1.0  # past the deadline, before an answer counts as "not in time"


@contextlib.contextmanager
def started_holder(db_path: Path) -> Iterator[LockHolder]:
    """A lock holder process, started but holding nothing yet; always closed."""
    holder = LockHolder(db_path, "immediate")
    holder.start()
    try:
        yield holder
    finally:
        holder.close()


def finding(measured: str, expected: str, cause_id: str) -> str:
    """A failed check's message, one line each: what was measured, what was expected, the
    cause it points to and its fix, from the catalogue (sqlite_faults/causes.toml), so a
    JUnit report reads as a list of findings."""
    found = cause(cause_id)
    return (f"measured: {measured}\nexpected: {expected}\n"
            f"cause: {found.title} [{found.id}]\nfix: {found.fix}")


def deadline(target: Target) -> float:
    return target.deadline_s or DEFAULT_DEADLINE_S


def _engine_reached(service: BatteryService) -> None:
    engines = asyncio.run(service.control.engines())
    if not engines:
        # A service may build its engine at its first request that needs the database
        # (MLflow's tracking server does): one write, then ask again.
        asyncio.run(service.new_id())
        engines = asyncio.run(service.control.engines())
    if not engines:
        pytest.fail(finding(
            "the engine plugin saw no engine",
            f"an engine built from the URL in ${service.target.database_url_env} "
            f"({service.server.database_url})", "foreign-engine"))


def test_the_engine_is_built_from_the_url_it_is_given(fresh: BatteryService) -> None:
    """The faults inside the process need the service's engine to come from the URL the
    battery hands it; every other check relies on that."""
    _engine_reached(fresh)


def test_wal_is_on(fresh: BatteryService) -> None:
    """SQLite in WAL mode: readers never block the writer and the writer never blocks
    readers. The default rollback journal makes every write lock out every reader."""
    mode = query(fresh.db_path, "PRAGMA journal_mode")
    assert mode == [("wal",)], finding(
        f"journal_mode is {mode[0][0] if mode else '?'}", "wal", "rollback-journal")


BAD_IDS = ["abc", "-1", "0", str(2**70), "1.5", "%20", "' OR 1=1 --", "9" * 400]
_BAD_SHAPES: list[Any] = [None, [], {}, "text", 12]  # whole JSON bodies of the wrong shape


def _bad_values(part: str, rng: random.Random) -> list[Any]:
    """Wrong types and extreme values for one field. A query or form field is text: its
    wrong values are text too (a URL past a few KB is the server's 414/431, not the app's)."""
    if part == "json":
        return [None, 123, 1.5, [], {}, True, "", "x" * 100_000, "\x00", "\U0001F600" * 10,
                rng.getrandbits(70)]
    long = "x" * (4_000 if part == "query" else 100_000)
    return ["", long, "\x00", "\U0001F600" * 10, str(rng.getrandbits(70)), "-1", "1.5"]


def _bad_writes(target: Target, rng: random.Random) -> list[tuple[str, Request]]:
    """Malformed writes, as variants of the target's write template: each field of its JSON
    body, form body and query missing, or of a wrong type or an extreme value. The unique
    field keeps its placeholder, so each request gets a value of its own and a 409 for a
    name taken by an earlier one never hides what this one does."""
    template = target.write.request
    variants: list[tuple[str, Request]] = []
    for part in ("json", "form", "query"):
        fields = getattr(template, part)
        if not isinstance(fields, Mapping):
            continue
        for name in fields:
            without: dict[str, Any] = {part: {k: v for k, v in fields.items() if k != name}}
            variants.append((f"{part} without {name}", replace(template, **without)))
            for value in _bad_values(part, rng):
                changed: dict[str, Any] = {part: {**fields, name: value}}
                variants.append((f"{part} {name}={str(value)[:40]!r}",
                                 replace(template, **changed)))
    return variants


def _bad_contents(target: Target) -> list[tuple[str, bytes]]:
    """Bodies that are not what the content type says (raw bytes in place of the body)."""
    template = target.write.request
    if template.json is not None:
        field = next((k for k, v in dict(template.json).items() if v == "{unique}"), "name") \
            if isinstance(template.json, Mapping) else "name"
        return ([(f"json body {shape!r}", json.dumps(shape).encode()) for shape in _BAD_SHAPES]
                + [("json body not JSON", b"{not json"), ("json body not UTF-8", b"\xff\xfe"),
                   ("json body with a lone surrogate",
                    f'{{"{field}": "\\ud800"}}'.encode())])
    if template.form is not None:
        field = next(iter(template.form), "name")
        return [("form body not UTF-8", b"\xff\xfe=\xff"), ("form body %-garbage", b"%ZZ=%"),
                ("form body with a lone surrogate", f"{field}=%ED%A0%80".encode()),
                ("form body of 100 KB without '='", b"a" * 100_000)]
    return []


def test_bad_input_never_gets_a_500(fresh: BatteryService, fault_rng: random.Random) -> None:
    """Malformed writes and ids get a 4xx saying what is wrong, never a 500 (which leaks a
    stack trace or a driver error, and counts against the error budget), whatever carries
    the data: a JSON body, a form body, the query or the path."""
    target = fresh.target

    async def each(what: str, send: Callable[[httpx.AsyncClient], Awaitable[Answer]]
                   ) -> tuple[str, Answer]:
        # A connection of its own per request: a server that closes the connection after
        # a 500 must not make the next request look unanswered.
        async with fresh.client(timeout_s=10) as client:
            return what, await send(client)

    async def run() -> list[tuple[str, Answer]]:
        seen = []
        for what, variant in _bad_writes(target, fault_rng):
            seen.append(await each(f"write {what}", partial(fresh.write, request=variant)))
        for what, raw in _bad_contents(target):
            request = replace(fresh.write_request("bad"), content=raw)
            seen.append(await each(f"write {what}", partial(fresh.send, request=request)))
        for bad in BAD_IDS:
            seen.append(await each(f"read id {bad[:40]!r}", partial(fresh.read, new_id=bad)))
        return seen

    bad = [f"{what}: {answer}" for what, answer in asyncio.run(run())
           if answer.outcome.status >= 500 or not answer.outcome.answered]
    assert not bad, finding(
        f"{len(bad)} malformed requests got a 5xx or no answer:\n  " + "\n  ".join(bad[:12]),
        "a 4xx saying what is wrong, for each", "bad-input-500")


def test_a_lock_shorter_than_the_deadline_is_waited_out(fresh: BatteryService) -> None:
    """Another process holding the write lock for less than the deadline costs latency,
    not an error: the service waits it out (a busy timeout, or retries)."""
    hold_s = 0.4 * deadline(fresh.target)
    with started_holder(fresh.db_path) as holder:
        holder.acquire(hold_s)

        async def write() -> Answer:
            async with fresh.client() as client:
                return await fresh.write(client, "short-lock")
        answer = asyncio.run(write())
        holder.wait_released()
    assert answer.outcome.ok, finding(
        f"a write during a {hold_s:.1f} s lock held by another process got {answer}",
        "a success, a little later", "lock-not-waited")


def test_a_lock_past_the_deadline_is_answered_in_time(fresh: BatteryService) -> None:
    """A lock held past the deadline must end in a clear 5xx (503/504) at the deadline,
    not a hang until a pool or busy timeout, and not a 500."""
    budget = deadline(fresh.target) + GRACE_S
    with started_holder(fresh.db_path) as holder:
        holder.acquire(budget + 2.0)

        async def writes() -> list[Answer]:
            async with fresh.client(timeout_s=budget + 10) as client:
                return list(await asyncio.gather(*(fresh.write(client, "long-lock")
                                                   for _ in range(4))))
        answers = asyncio.run(writes())
        holder.release()
    late = [a for a in answers if a.seconds > budget]
    unclear = [a for a in answers if a.outcome.status in (0, 500) or a.outcome.ok]
    assert not late and not unclear, finding(
        f"writes during a lock held past the {deadline(fresh.target):.1f} s deadline got "
        f"{', '.join(map(str, answers))}",
        f"a 503/504 for each within {budget:.1f} s", "unbounded-lock-wait")


def test_transient_errors_are_retried_not_turned_into_500s(fresh: BatteryService) -> None:
    """One SQLITE_BUSY on a statement is transient: a retry of the transaction succeeds.
    A client must not see it as a 500."""
    _engine_reached(fresh)
    new_id = asyncio.run(fresh.new_id())

    async def run() -> list[tuple[str, Answer]]:
        seen = []
        async with fresh.client() as client:
            for i in range(3):
                await fresh.control.arm("sql-error", kind="busy", times=1,
                                        match=r"^\s*INSERT\b", seed=i)
                seen.append(("write", await fresh.write(client, "transient")))
                await fresh.control.disarm()
                await fresh.control.arm("sql-error", kind="busy", times=1,
                                        match=r"^\s*SELECT\b(?!\s+1\s*$)", seed=i)
                seen.append(("read", await fresh.read(client, new_id)))
                await fresh.control.disarm()
        return seen

    failed = [f"{what}: {answer}" for what, answer in asyncio.run(run())
              if not answer.outcome.ok]
    assert not failed, finding(
        "one injected SQLITE_BUSY failed these requests: " + "; ".join(failed),
        "a success for each (a retry gets past one lock error)", "no-retry")


def test_the_event_loop_keeps_answering_while_db_calls_are_stuck(
        fresh: BatteryService) -> None:
    """While many reads are stuck inside SQLite, a request that needs no database still
    answers at once: the DB calls run off the event loop, on a bounded set of threads."""
    _engine_reached(fresh)
    probe = fresh.target.loop_probe
    new_id = asyncio.run(fresh.new_id())

    async def run() -> tuple[Answer, Answer, list[Answer]]:
        async with fresh.client(timeout_s=30) as client:
            baseline = await fresh.send(client, probe.render())
            await fresh.control.arm("slow", seconds=2.0, match=r"^\s*SELECT\b(?!\s+1\s*$)")
            # More stuck reads than a small service has DB threads, fewer than a thread pool.
            stuck = [asyncio.create_task(fresh.read(client, new_id)) for _ in range(6)]
            started = time.monotonic()
            # Synchronise on the fault itself: a statement is spinning inside SQLite.
            while not any((f.get("started") or 0) > 0 for f in await fresh.control.faults()):
                if time.monotonic() - started > 10:
                    break
                await asyncio.sleep(0.02)  # polling the control server's counters
            during = await fresh.send(client, probe.render(), timeout=GRACE_S + 4)
            await fresh.control.disarm()
            return baseline, during, list(await asyncio.gather(*stuck))

    baseline, during, _ = asyncio.run(run())
    if not baseline.outcome.ok:
        pytest.skip(f"loop_probe {probe.label} answers {baseline} with no fault; set "
                    "loop_probe in the target file to a request that touches no database")
    assert during.outcome.ok and during.seconds < GRACE_S, finding(
        f"{probe.label} (no database) got {during} while reads were stuck in SQLite "
        f"(no fault: {baseline})", f"a success within {GRACE_S:g} s", "blocking-event-loop")


KILLS = 3
# After a kill, how long the restarted (and ready) service has to acknowledge a write: this
# long, or a few times its first write's duration when that was longer.
COME_BACK_S = 5.0
# A first write slower than this does work later ones do not (creating or migrating a schema
# at the first request that needs it, as MLflow's server does): the check kills inside it
# too, at these fractions of its duration, each time on a new database.
SLOW_FIRST_WRITE_S = 0.1
FIRST_WRITE_FRACTIONS = (0.25, 0.5, 0.75)


async def _acknowledges_again(server: ServerProcess, ledger: WriteLedger,
                              rng: random.Random, within_s: float) -> bool:
    """Writes from two clients until one more is acknowledged (True) or `within_s` pass."""
    before = ledger.counts()["acknowledged"]
    writers = LoadGenerator.writers(ledger, 2, rng, stop_when_gone=True)
    writers.start(server.base_url)
    give_up = time.monotonic() + within_s
    try:
        while ledger.counts()["acknowledged"] <= before:
            if time.monotonic() > give_up:
                return False
            await asyncio.sleep(0.01)
        return True
    finally:
        await writers.stop()


async def _first_write(server: ServerProcess, ledger: WriteLedger,
                       kill_after_s: float | None = None) -> float:
    """The service's first write, alone; killed `kill_after_s` into it when given. Its
    duration (to its answer, or to the kill)."""
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30.0) as client:
        started = time.monotonic()
        write = asyncio.create_task(ledger.send(client, ledger.new_create()))
        if kill_after_s is not None:
            await asyncio.sleep(kill_after_s)
            server.kill()
        await write  # a write cut by the kill is recorded as indeterminate
        return time.monotonic() - started


def _not_back(ledger: WriteLedger, since: int, after: str, within_s: float) -> str:
    answers = Counter(str(c.status or c.detail) for c in ledger.creates[since:])
    return finding(
        f"{after}, the restarted service acknowledged none of {sum(answers.values())} writes "
        f"in {within_s:.0f} s; their answers: {dict(answers)}",
        "a service killed at any moment starts again and serves writes", "crash-unsafe-start")


def _killed_inside_the_first_write(target: Target, work: Path, rng: random.Random,
                                   first_write_s: float, fraction: float,
                                   come_back_s: float) -> str | None:
    """A service on a new database, killed `fraction` into its first write (which took
    `first_write_s` the first time) and restarted: None once it acknowledges a write, the
    finding when it does not within `come_back_s`."""
    server = ServerProcess.for_target(target, work, with_faults=False)
    ledger = WriteLedger(random.Random(rng.random()), target.write, prefix=work.name)
    try:
        server.start()
        asyncio.run(_first_write(server, ledger, kill_after_s=fraction * first_write_s))
        server.start(same_port=True)
        if asyncio.run(_acknowledges_again(server, ledger, random.Random(rng.random()),
                                           come_back_s)):
            return None
    finally:
        server.kill()
    return _not_back(ledger, 1, f"killed {fraction * first_write_s:.2f} s into its first "
                     f"write on a new database (which took {first_write_s:.2f} s the first "
                     f"time)", come_back_s)


def test_nothing_acknowledged_is_lost_across_sigkills(fresh: BatteryService,
                                                      tmp_path: Path,
                                                      fault_rng: random.Random) -> None:
    """Writes under load, SIGKILL at seeded moments, restart: every acknowledged write reads
    back unchanged, nothing is duplicated, the database passes integrity_check, and the
    service serves writes again. A service whose first write is slow (it builds or
    migrates its schema then) is also killed inside that first write, on new databases:
    work done once must survive a kill too."""
    target = fresh.target
    server = ServerProcess.for_target(target, tmp_path / "kills", with_faults=False)
    ledger = WriteLedger(random.Random(fault_rng.random()), target.write, prefix="kill")
    reports, moments = [], []
    try:
        server.start()
        first_write_s = asyncio.run(_first_write(server, ledger))
        assert ledger.creates[0].outcome == "acknowledged", (
            f"the first write, with no fault, was answered {ledger.creates[0].status or ''} "
            f"{ledger.creates[0].detail}: this check cannot measure the service")
        come_back_s = max(COME_BACK_S, 4 * first_write_s)
        for _ in range(KILLS):
            async def cycle() -> None:
                writers = LoadGenerator.writers(ledger, 8, random.Random(fault_rng.random()),
                                                stop_when_gone=True)
                writers.start(server.base_url)
                moments.append(fault_rng.uniform(0.3, 0.8))  # a seeded kill moment
                await asyncio.sleep(moments[-1])
                server.kill()
                await writers.stop()
            asyncio.run(cycle())
            server.start(same_port=True)
            reports.append(asyncio.run(ledger.check(server.base_url, server.db_path)))
        after_kills = len(ledger.creates)
        came_back = asyncio.run(_acknowledges_again(server, ledger,
                                                    random.Random(fault_rng.random()),
                                                    come_back_s))
    finally:
        server.kill()
    if not came_back:
        pytest.fail(_not_back(ledger, after_kills, f"after {KILLS} SIGKILLs under load ("
                              + ", ".join(f"{m:.2f}" for m in moments) + " s into it)",
                              come_back_s))
    if first_write_s > SLOW_FIRST_WRITE_S:
        for i, fraction in enumerate(FIRST_WRITE_FRACTIONS):
            not_back = _killed_inside_the_first_write(
                target, tmp_path / f"first-write-{i}", fault_rng, first_write_s, fraction,
                come_back_s)
            if not_back:
                pytest.fail(not_back)
    acked = sum(c.outcome == "acknowledged" for c in ledger.creates)
    bad = [r for r in reports if r.lost or r.duplicated or r.phantoms or r.integrity_failures]
    assert not bad, finding(
        f"after SIGKILLs under load ({acked} writes acknowledged): "
        + "; ".join(f"lost {r.lost}, duplicated {r.duplicated}, phantoms {r.phantoms}, "
                    f"integrity failures {r.integrity_failures}: {r.problems[:3]}"
                    for r in bad),
        "every acknowledged write reads back unchanged; no duplicate, no phantom row, "
        "integrity_check ok", "acknowledged-before-commit")


def test_threads_and_fds_return_to_the_steady_state_after_failures(
        fresh: BatteryService) -> None:
    """A burst of failed requests (errors from every statement, then a lock past the
    deadline) leaves no threads, file descriptors or sockets behind."""
    _engine_reached(fresh)
    new_id = asyncio.run(fresh.new_id())

    async def burst(with_faults: bool) -> None:
        # 40 requests, 8 at a time: a burst of failures, not an overload (how a service
        # takes a flood is the report's question, not this check's).
        async with fresh.client(timeout_s=10) as client:
            if with_faults:
                await fresh.control.arm("sql-error", kind="io_error", seed=1)
            for _ in range(5):
                await asyncio.gather(*(fresh.write(client, "burst") for _ in range(4)),
                                     *(fresh.read(client, new_id) for _ in range(4)))
            if with_faults:
                await fresh.control.disarm()

    asyncio.run(burst(with_faults=False))  # pools and lazily started threads fill up here
    baseline = Resources.of(fresh.server.pid)
    asyncio.run(burst(with_faults=True))
    with started_holder(fresh.db_path) as holder:
        holder.acquire(deadline(fresh.target) + GRACE_S)

        async def locked() -> None:
            async with fresh.client(timeout_s=10) as client:
                await asyncio.gather(*(fresh.write(client, "burst") for _ in range(8)))
        asyncio.run(locked())
        holder.release()
    try:
        asyncio.run(settles(fresh.server.pid, baseline, timeout_s=15))
    except AssertionError as exc:
        pytest.fail(finding(
            str(exc), f"the steady state within 15 s: {baseline}", "resource-leak"))
