"""Overload: every request answered by its deadline, and no work for clients who have gone.

Against a real server process (app.serve, as deployed) on raw sockets, where the door's
admission runs (it lives in the HTTP protocol), and against the lanes themselves:

- a hash queued past its deadline is never computed (the lane's own check, even when the
  event loop is too busy to withdraw it in time);
- a request whose client disconnected while it was queued is never started;
- the time before the handler (here: a head that trickles in) counts against the deadline;
- a refusal is sent before the body is read, and the connection stays usable;
- under a burst many times what the service can serve, every answer is a 201, a 503 with
  Retry-After or a 504, each within the deadline, and the service is idle soon after.

The password hash is the fault's instrument: its cost (PASSWORD_HASH_TIME_COST) sets how
long one takes, and with PASSWORD_HASH_CONCURRENCY=1 a single create occupies the lane.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlite_faults.observe import scrape
from sqlite_faults.server import ServerProcess

from app.errors import ClientGone, DeadlineExceeded
from app.passwords import PasswordHasher
from app.resilience import CallHandle, Deadline, WorkerLane, await_until
from app.settings import Settings

pytestmark = pytest.mark.sqlite_only("the door and the hash lane are the same on both backends")

SERVE = [sys.executable, "-m", "app.serve"]
LATE_S = 1.5  # how late an answer may be on a loaded 2-core CI machine
# One hash at this cost takes a few hundred ms here: long enough to queue behind.
SLOW_HASH_COST = "40"


def _server(folder: Path, ready_path: str = "/readyz", **env: str) -> ServerProcess:
    server = ServerProcess(folder, launcher=SERVE, ready_path=ready_path,
                           env={"LOG_LEVEL": "WARNING", **env})
    server.start()
    return server


@pytest.fixture
def slow_hash_server(tmp_path: Path) -> Iterator[ServerProcess]:
    server = _server(tmp_path, PASSWORD_HASH_TIME_COST=SLOW_HASH_COST,
                     PASSWORD_HASH_CONCURRENCY="1", DB_DEADLINE_S="20",
                     ADMISSION_MAX_WAIT_S="20")
    yield server
    server.kill()


async def _open(server: ServerProcess) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", server.port)


def _post(name: str, body_bytes: bytes | None = None) -> tuple[bytes, bytes]:
    body = body_bytes or b'{"name": "%s", "password": "overload password"}' % name.encode()
    head = (b"POST /users/ HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n" % len(body))
    return head, body


async def _response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in
               (line.split(":", 1) for line in lines[1:] if ":" in line)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(lines[0].split(" ", 2)[1]), headers, body


async def _request(server: ServerProcess, head: bytes, body: bytes = b""
                   ) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await _open(server)
    try:
        writer.write(head + body)
        return await _response(reader)
    finally:
        writer.close()


async def _hash_gauges_reach(server: ServerProcess, running: int, waiting: int,
                             timeout_s: float) -> bool:
    """Polls the server's own hash-lane gauges until they read `running` and `waiting` (a
    process's state has no event to wait on from outside)."""
    give_up = time.monotonic() + timeout_s
    while time.monotonic() < give_up:
        snap = await scrape(server.base_url)
        if (snap.value("password_hash_running"), snap.value("password_hash_waiting")) == (
                running, waiting):
            return True
        await asyncio.sleep(0.02)
    return False


# -- the hash lane -----------------------------------------------------------------------

@pytest.mark.timeout(30)
async def test_a_hash_queued_past_its_deadline_is_never_computed() -> None:
    hasher = PasswordHasher(Settings(password_hash_concurrency=1,
                                     password_hash_time_cost=1, password_hash_memory_kib=8))
    hashed: list[str] = []
    real_hash = hasher._hash

    def recording_hash(password: str) -> str:
        hashed.append(password)
        return real_hash(password)

    hasher._hash = recording_hash  # type: ignore[method-assign]
    release, busy = threading.Event(), threading.Event()
    blocker = hasher.lane.submit(lambda: (busy.set(), release.wait(20)))
    try:
        assert await asyncio.to_thread(busy.wait, 10)
        late = asyncio.ensure_future(hasher.hash("too late", Deadline.after(0.2)))
        done, _ = await asyncio.wait({late}, timeout=5)
        assert late in done, "the hash waited past its deadline"
        with pytest.raises(DeadlineExceeded):
            late.result()
    finally:
        release.set()
        await await_until(blocker)
    assert await asyncio.to_thread(hasher.lane.wait_idle, 10)
    assert hashed == []
    hasher.close()


@pytest.mark.timeout(30)
async def test_a_late_call_is_skipped_by_the_worker_when_the_loop_is_too_busy_to_withdraw_it(
) -> None:
    """The event loop's timer withdraws a call at its deadline, but a loop stuck on other
    work fires it late; the hash lane's worker itself must not start a call already past
    its deadline."""
    hasher = PasswordHasher(Settings(password_hash_concurrency=1,
                                     password_hash_time_cost=1, password_hash_memory_kib=8))
    lane = hasher.lane
    release, busy = threading.Event(), threading.Event()
    ran: list[int] = []
    blocker = lane.submit(lambda: (busy.set(), release.wait(20)))
    assert await asyncio.to_thread(busy.wait, 10)
    late = lane.submit(lambda: ran.append(1), CallHandle(Deadline.after(0.05)))
    time.sleep(0.2)  # the fault: the event loop is blocked past the call's deadline
    release.set()
    assert lane.wait_idle(10)  # still on the loop: no timer of it can run meanwhile
    assert ran == []
    await await_until(blocker)
    with pytest.raises(DeadlineExceeded):
        await await_until(late)
    hasher.close()


@pytest.mark.timeout(30)
async def test_a_queued_call_whose_client_went_away_is_never_started() -> None:
    lane = WorkerLane("hash", 1, 8, thread_prefix="test-gone")
    release, busy = threading.Event(), threading.Event()
    ran: list[int] = []
    blocker = lane.submit(lambda: (busy.set(), release.wait(20)))
    assert await asyncio.to_thread(busy.wait, 10)
    gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    handle = CallHandle(Deadline(time.monotonic() + 20, gone))
    queued = asyncio.ensure_future(await_until(lane.submit(lambda: ran.append(1), handle)))
    await asyncio.sleep(0)
    gone.set_result(None)
    with pytest.raises(ClientGone):
        await asyncio.wait_for(queued, 5)
    release.set()
    await await_until(blocker)
    assert await asyncio.to_thread(lane.wait_idle, 10)
    assert ran == []
    lane.shutdown()


# -- the real server ---------------------------------------------------------------------

@pytest.mark.timeout(90)
async def test_a_create_whose_client_disconnected_while_queued_is_never_started(
    slow_hash_server: ServerProcess,
) -> None:
    server = slow_hash_server
    head, body = _post("occupies-the-lane")
    first = asyncio.ensure_future(_request(server, head, body))
    assert await _hash_gauges_reach(server, 1, 0, 20), "the first create never hashed"
    _, writer = await _open(server)
    head, body = _post("left-while-queued")
    writer.write(head + body)
    await writer.drain()
    assert await _hash_gauges_reach(server, 1, 1, 20), "the second create never queued"
    writer.close()  # the client goes away
    status, _, _ = await asyncio.wait_for(first, 30)
    assert status == 201
    assert await _hash_gauges_reach(server, 0, 0, 30)
    # Had its hash run, its write would have followed: the name would be taken.
    status, _, answer = await _request(server, *_post("left-while-queued"))
    assert status == 201, answer


@pytest.mark.timeout(60)
async def test_time_before_the_handler_counts_against_the_deadline(tmp_path: Path) -> None:
    """A head that takes longer than the deadline to arrive leaves no budget for the DB: the
    deadline counts from the request's first byte, not from when the app sees it."""
    server = _server(tmp_path, PASSWORD_HASH_TIME_COST="1", PASSWORD_HASH_MEMORY_KIB="8",
                     DB_DEADLINE_S="1", ADMISSION_MAX_WAIT_S="30")
    try:
        status, _, answer = await _request(server, *_post("reader"))
        assert status == 201, answer
        reader, writer = await _open(server)
        writer.write(b"GET /users/1 HTTP/1.1\r\nhost: t\r\n")
        await writer.drain()
        await asyncio.sleep(1.3)  # the fault: the rest of the head comes after the deadline
        writer.write(b"\r\n")
        status, _, answer = await asyncio.wait_for(_response(reader), 10)
        writer.close()
        assert status == 504, answer
    finally:
        server.kill()


@pytest.fixture
def refusing_server(tmp_path: Path) -> Iterator[ServerProcess]:
    # An admission bound no request can meet: every create (and /readyz) is refused at the
    # door; /healthz, which queues on no lane, is not.
    server = _server(tmp_path, "/healthz", PASSWORD_HASH_TIME_COST="1",
                     PASSWORD_HASH_MEMORY_KIB="8",
                     ADMISSION_MAX_WAIT_S="0.000001", RETRY_AFTER_S="1")
    yield server
    server.kill()


@pytest.mark.timeout(60)
async def test_a_refusal_is_sent_before_the_body_is_read(
    refusing_server: ServerProcess,
) -> None:
    server = refusing_server
    head, body = _post("refused")
    reader, writer = await _open(server)
    writer.write(head)  # the body is withheld: an app that waited for it would never answer
    await writer.drain()
    status, headers, answer = await asyncio.wait_for(_response(reader), 5)
    assert status == 503
    assert headers["retry-after"] == "1"
    assert b'"overloaded"' in answer
    # The connection stays usable: the body is skipped, the next request answered.
    writer.write(body + b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n")
    status, _, answer = await asyncio.wait_for(_response(reader), 5 + LATE_S)
    writer.close()
    assert status == 200, answer


@pytest.mark.timeout(60)
async def test_a_request_behind_a_lone_refusal_on_its_connection_is_not_held(
    tmp_path: Path,
) -> None:
    """A refused connection is held (not read for Retry-After, here 1 s) only while refusals
    come fast. A lone refusal leaves it alone: a pooled client's next request on it, often
    for a route that is admitted, is answered at once. The refusal here is by time: the head
    of a create trickles in past the admission bound."""
    max_wait_s = 2.0  # the hold is Retry-After, at most half of this: 1 s
    server = _server(tmp_path, "/healthz", PASSWORD_HASH_TIME_COST="1",
                     PASSWORD_HASH_MEMORY_KIB="8", ADMISSION_MAX_WAIT_S=str(max_wait_s),
                     RETRY_AFTER_S="1")
    try:
        reader, writer = await _open(server)
        head, body = _post("trickled")
        writer.write(head[:1])  # the request's first byte: its wait counts from here
        await writer.drain()
        await asyncio.sleep(max_wait_s + 0.2)  # how long the rest of the head takes to come
        writer.write(head[1:] + body)
        status, _, _ = await asyncio.wait_for(_response(reader), 5)
        assert status == 503
        started = time.monotonic()
        writer.write(b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n")
        status, _, answer = await asyncio.wait_for(_response(reader), 5)
        waited = time.monotonic() - started
        writer.close()
        assert status == 200, answer
        assert waited < 0.5, f"the next request on the refused connection waited {waited:.2f} s"
    finally:
        server.kill()


@pytest.mark.timeout(60)
async def test_a_refused_request_announcing_a_large_body_closes_the_connection(
    refusing_server: ServerProcess,
) -> None:
    reader, writer = await _open(refusing_server)
    writer.write(b"POST /users/ HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n"
                 b"content-length: 50000000\r\n\r\n")
    status, headers, _ = await asyncio.wait_for(_response(reader), 5)
    assert status == 503
    assert headers.get("connection") == "close"
    assert await asyncio.wait_for(reader.read(1), 5) == b""
    writer.close()


@pytest.mark.timeout(120)
async def test_a_burst_far_past_capacity_is_answered_by_the_deadline(tmp_path: Path) -> None:
    """300 creates at once against one slow hash slot (a few per second): each answer is a
    201, a 503 overloaded with Retry-After, or a 504, and none comes later than the deadline;
    afterwards nothing is left hashing."""
    deadline_s = 3.0
    server = _server(tmp_path, PASSWORD_HASH_TIME_COST=SLOW_HASH_COST,
                     PASSWORD_HASH_CONCURRENCY="1", DB_DEADLINE_S=str(deadline_s))
    try:
        # All connections first, then every request in one go: they reach the server
        # within a turn or two of its event loop, before any handler has queued a hash.
        connections = await asyncio.gather(*(_open(server) for _ in range(300)))
        sent = time.monotonic()
        for i, (_, writer) in enumerate(connections):
            writer.write(b"".join(_post(f"burst-{i}")))

        async def answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], float]:
            status, headers, _ = await _response(reader)
            return status, headers, time.monotonic() - sent

        answers = await asyncio.gather(*(answer(reader) for reader, _ in connections))
        for _, writer in connections:
            writer.close()
        statuses = {status for status, _, _ in answers}
        assert statuses <= {201, 503, 504}, statuses
        assert 201 in statuses and 503 in statuses
        # Refused at the door, not queued to time out: the door counted what it let in.
        counts = [status for status, _, _ in answers]
        assert counts.count(503) > counts.count(504), counts
        assert all(headers.get("retry-after") for status, headers, _ in answers
                   if status == 503)
        slowest = max(elapsed for _, _, elapsed in answers)
        assert slowest < deadline_s + LATE_S, f"an answer took {slowest:.2f} s"
        assert await _hash_gauges_reach(server, 0, 0, 1 + LATE_S)
    finally:
        server.kill()
