"""The one traffic driver: a seeded mix of a target's three requests (its probe, its write,
its read), open- or closed-loop, paced or not, with a plain and a retrying client profile,
recording every request and its answer as a `Sample`. The report, the battery, the
durability suites and the benchmark's Python probe all send their traffic through it (wrk
stays the benchmark's instrument for raw throughput).

    generator = LoadGenerator(target, {PLAIN: ledger}, random.Random(seed),
                              LoadModel(CLOSED, clients=3, think_s=0.0), mix={CREATE: 1.0})
    generator.start(server.base_url)      # in the background, on the running event loop
    ...                                   # the experiment
    await generator.stop()                # no new request; those in flight are answered
    generator.select(CREATE, after=moment)  # samples by time.monotonic() moments

Two load models (docs/faults.md, "Open and closed loop"):

- open (the default): requests are sent at a target arrival rate, on a schedule drawn from a
  seeded Poisson process (exponential gaps), whatever the service is doing. Latency is
  measured from the moment the schedule meant the request to be sent, as wrk2 and k6's
  constant-arrival-rate executor do: a stall that holds requests back is counted in full,
  instead of being hidden by clients that stopped sending (coordinated omission).
- closed: `clients` clients, each sending its next request only after its last was answered
  (and a short random think time); latency from the actual send. A stall slows the clients
  down, so it contributes only a few samples: kept for comparison and for services too slow
  for any useful rate. Paced: a closed loop whose think time is drawn between `think_min_s`
  and `think_s`, so each client sends at about a known rate (a steady trickle of writes).

Writes go through the write ledger (each with its own idempotency key when the service takes
one), so whatever a write was finally told can be checked against the database; reads pick an
acknowledged write. Each attempt's client timeout is bounded (`timeout_s`): a service that
stops answering costs a request that long, not its 30 s pool timeout. The retrying profile
(retry.py) sends the same request again, with the same key, after the failures a retry can
cure; its latency is the whole exchange, from the first intended send to the last answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import math
import random
import resource
import time
from dataclasses import dataclass

import httpx

from sqlite_faults.http11 import Http11Transport
from sqlite_faults.ledger import Create, WriteLedger
from sqlite_faults.outcome import Outcome, outcome_of
from sqlite_faults.target import Sendable, Target

from .retry import PLAIN, RETRYING, RetryPolicy

# The three roles a target's requests play; a report labels them with the target's own
# method and path (Target.labels).
ROOT = "probe"
CREATE = "write"
READ = "read"
ENDPOINTS = (ROOT, CREATE, READ)
DEFAULT_MIX = {ROOT: 0.2, CREATE: 0.3, READ: 0.5}

OPEN = "open"
CLOSED = "closed"
# Open loop: requests in flight at once, one connection each. Enough that the schedule never
# waits for one (every request of a `timeout_s` stall still in flight), within what the
# process may open: a request that waits for a free connection waits for the instrument,
# not the service (its `waited` says how long, and a window where that mattered is judged
# inconclusive).
MIN_IN_FLIGHT = 64
# Descriptors kept back from the in-flight budget: the process's own files, the proxy's
# control pipes, the ledger's checks.
RESERVED_FILES = 128
# The generator's own event loop is probed this often: how late a timer fires is how late
# every answer is read.
LOOP_PROBE_S = 0.02
REQUEST_ID_HEADER = "X-Request-Id"
# The id of the attempt being sent, per task: the client's request hook stamps it.
_attempt_id: contextvars.ContextVar[str] = contextvars.ContextVar("attempt_id", default="")


async def _stamp_request_id(request: httpx.Request) -> None:
    if attempt := _attempt_id.get():
        request.headers[REQUEST_ID_HEADER] = attempt


@dataclass(frozen=True)
class Sample:
    endpoint: str
    phase: str  # steady, fault or recovery (set by the runner from the fault window)
    at: float  # seconds since the scenario started: the intended send time (open loop)
    latency: float  # seconds, from `at` to the final answer
    status: int  # 0 when no HTTP answer came (timeout, refused, reset)
    code: str  # the JSON error code, the exception name, or "" on success
    profile: str = PLAIN
    attempts: int = 1
    # Seconds between the intended and the actual send: the generator's own lateness (a
    # starved machine), which latency from the intended time would charge to the service.
    lag: float = 0.0
    # Seconds the request waited for a free connection of the generator's (all in flight).
    waited: float = 0.0
    # The last attempt's X-Request-Id, by which the fault proxy logs the service's own time.
    request_id: str = ""
    # True once `latency` and `status` are the service's own, from the fault proxy's log
    # (report/instrument.py, service_time_view): nothing of the instrument's is left in them.
    at_service: bool = False

    @property
    def answered(self) -> float:
        """Seconds since the scenario started at which the answer (or its lack) was known."""
        return self.at + self.latency

    @property
    def instrument_s(self) -> float:
        """The part of `latency` the instrument itself is known to have added."""
        return self.lag + self.waited

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


@dataclass(frozen=True)
class LoadModel:
    kind: str  # OPEN or CLOSED
    rate: float = 0.0  # requests per second (open loop)
    clients: int = 16  # concurrent clients (closed loop)
    timeout_s: float = 3.0  # per attempt
    think_s: float = 0.04  # closed loop: up to this long between a client's requests
    think_min_s: float = 0.0  # closed loop: at least this long (paced clients)

    def in_flight_limit(self) -> int:
        """Connections the generator may hold at once (one request each)."""
        if self.kind == CLOSED:
            return self.clients * 2
        wanted = max(MIN_IN_FLIGHT, math.ceil(self.rate * self.timeout_s * 1.2))
        return max(MIN_IN_FLIGHT, min(wanted, open_files_budget()))

    def describe(self) -> str:
        if self.kind == OPEN:
            return (f"open loop: {self.rate:.0f} requests/s on a seeded Poisson schedule, "
                    f"latency from the intended send time, {self.timeout_s:g} s client timeout")
        return (f"closed loop: {self.clients} clients, each waiting for its answer (think time "
                f"{self.think_min_s * 1000:.0f}-{self.think_s * 1000:.0f} ms), latency from "
                f"the actual send, "
                f"{self.timeout_s:g} s client timeout")


@dataclass(frozen=True)
class LoadSpec:
    """The load model asked for; the open-loop rate is settled per target (`settle`)."""

    kind: str = OPEN
    rate: float | None = None  # requests/s; None: a fraction of the measured capacity
    capacity_fraction: float = 0.5
    clients: int = 16  # closed loop
    timeout_s: float = 3.0

    def settle(self, capacity: float, ceiling: float | None) -> LoadModel:
        """The model for one target: an explicit rate as given; otherwise the fraction of
        this target's capacity, no higher than `ceiling` (the first target's rate, so a
        baseline is never loaded harder than the service it is compared with)."""
        rate = self.rate
        if rate is None:
            rate = max(1.0, self.capacity_fraction * capacity)
            if ceiling is not None:
                rate = min(rate, ceiling)
        return LoadModel(self.kind, rate=rate, clients=self.clients, timeout_s=self.timeout_s)


def open_files_budget() -> int:
    """Connections this process may hold: its open-files limit, raised to the hard limit
    (children started later, such as the fault proxy, inherit it), less a reserve. Each
    connection costs the fault proxy two descriptors to this process's one, so half."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(0, (soft - RESERVED_FILES) // 2)


def labels(target: Target) -> dict[str, str]:
    """Role -> the target's own request, e.g. {"write": "POST /users/", ...}."""
    return {ROOT: target.probe_request.label, CREATE: target.write.request.label,
            READ: target.read.label}


# No answer because nothing listens any more: a closed-loop client told to stop when the
# service goes away (`stop_when_gone`) ends at the first of these.
GONE = frozenset({"ConnectError", "RemoteProtocolError", "ReadError"})


class LoadGenerator:
    def __init__(self, target: Target, ledgers: dict[str, WriteLedger], rng: random.Random,
                 model: LoadModel, profiles: tuple[str, ...] = (PLAIN,),
                 mix: dict[str, float] | None = None,
                 policy: RetryPolicy | None = None,
                 transport: httpx.AsyncBaseTransport | None = None,
                 stop_when_gone: bool = False,
                 crews: dict[str, int] | None = None) -> None:
        self.target = target
        self.ledgers = ledgers  # profile -> its own ledger, so duplicates are attributed
        self.rng = rng
        self.model = model
        self.profiles = profiles
        self.mix = mix or DEFAULT_MIX
        self.policy = policy or RetryPolicy()
        self.transport = transport  # None: real connections (an ASGI transport in tests)
        # A killed service ends the closed loop's clients instead of having them spin on
        # refused connections until stopped (the durability suites kill it on purpose).
        self.stop_when_gone = stop_when_gone
        # Closed loop: clients dedicated to one request each (request -> clients) instead of
        # `model.clients` each drawing from the mix (three writers and one reader, say).
        self.crews = crews
        self.samples: list[Sample] = []
        self.started = 0.0  # time.monotonic() the samples' `at` counts from
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # (when, seconds late) of the generator's loop, every LOOP_PROBE_S while it runs
        self.loop_lag: list[tuple[float, float]] = []
        self._slots = asyncio.Semaphore(MIN_IN_FLIGHT)
        self._attempts = itertools.count(1)

    @classmethod
    def writers(cls, ledger: WriteLedger, clients: int, rng: random.Random, *,
                readers: int = 0, timeout_s: float = 10.0,
                think_s: tuple[float, float] = (0.0, 0.0),
                stop_when_gone: bool = False) -> LoadGenerator:
        """`clients` closed-loop clients sending the ledger's write and `readers` reading
        back what it acknowledged, each waiting for its answer (then a think time drawn from
        `think_s`): the durability suites' load, whose every write the ledger checks after
        the fault."""
        target = Target(name="writes", app=None, write=ledger.contract)
        crews = {CREATE: clients, READ: readers}
        return cls(target, {PLAIN: ledger}, rng,
                   LoadModel(CLOSED, clients=clients + readers, timeout_s=timeout_s,
                             think_min_s=think_s[0], think_s=think_s[1]),
                   stop_when_gone=stop_when_gone, crews=crews)

    def start(self, base_url: str) -> None:
        """Load in the background from now until `stop` (or `stop_sending`). A generator
        runs once: its samples' times count from its start."""
        if self._task is not None:
            raise RuntimeError("this generator has run already: start a new one")
        self.started = time.monotonic()
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self.run(base_url, self._stop, self.started))

    def stop_sending(self) -> None:
        """No new request from now on; those in flight still end in a sample."""
        self._stop.set()

    async def stop(self) -> None:
        """Stop sending and wait for every request in flight to be answered or time out (a
        generator never started has nothing to stop)."""
        self._stop.set()
        if self._task is not None:
            await self._task

    def select(self, endpoint: str, after: float = 0.0,
               before: float = float("inf")) -> list[Sample]:
        """Samples of `endpoint` sent at or after `after` and answered before `before`, both
        time.monotonic() moments."""
        return [s for s in self.samples if s.endpoint == endpoint
                and self.started + s.at >= after and self.started + s.answered <= before]

    async def run(self, base_url: str, stop: asyncio.Event, started: float) -> None:
        """Load until `stop` is set (a restarted server comes back on the same port)."""
        self.started = started
        # Requests wait for a slot here (the transport opens a connection per request in
        # flight and queues nothing), so the wait for one is measured (`waited`).
        self._slots = asyncio.Semaphore(self.model.in_flight_limit())
        # The lean transport (http11.py): httpcore's pool costs time per pooled connection on
        # every request, and made the generator the bottleneck once a fault raised the
        # connections in use.
        transport = self.transport or Http11Transport()
        probe = asyncio.create_task(self._probe_loop(stop, started))
        async with httpx.AsyncClient(base_url=base_url, timeout=self.model.timeout_s,
                                     transport=transport,
                                     event_hooks={"request": [_stamp_request_id]}) as client:
            if self.model.kind == OPEN:
                await self._open_loop(client, stop, started)
            else:
                mixes = ([{endpoint: 1.0} for endpoint, n in self.crews.items()
                          for _ in range(n)] if self.crews
                         else [self.mix] * self.model.clients)
                await asyncio.gather(*(
                    self._closed_client(client, stop, started, random.Random(self.rng.random()),
                                        mix)
                    for mix in mixes))
        await probe

    async def _probe_loop(self, stop: asyncio.Event, started: float) -> None:
        """How late the generator's own timers fire: a loop busy with its own work reads every
        answer that late, and charges it to the service unless the report knows."""
        while not stop.is_set():
            asked = time.monotonic()
            await asyncio.sleep(LOOP_PROBE_S)  # the probe's period
            now = time.monotonic()
            self.loop_lag.append((now - started, max(0.0, now - asked - LOOP_PROBE_S)))

    async def _open_loop(self, client: httpx.AsyncClient, stop: asyncio.Event,
                         started: float) -> None:
        endpoints, weights = zip(*self.mix.items(), strict=True)
        in_flight: set[asyncio.Task[Sample]] = set()
        intended = started  # the schedule's offsets are exactly the seeded gaps
        while not stop.is_set():
            intended += self.rng.expovariate(self.model.rate)
            delay = intended - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)  # the schedule itself: the next arrival is due
            endpoint = self.rng.choices(endpoints, weights)[0]
            profile = self.rng.choice(self.profiles)
            task = asyncio.create_task(self._exchange(
                client, endpoint, profile, intended, started, random.Random(self.rng.random())))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        await asyncio.gather(*in_flight)

    async def _closed_client(self, client: httpx.AsyncClient, stop: asyncio.Event,
                             started: float, rng: random.Random,
                             mix: dict[str, float]) -> None:
        endpoints, weights = zip(*mix.items(), strict=True)
        while not stop.is_set():
            endpoint = rng.choices(endpoints, weights)[0]
            profile = rng.choice(self.profiles)
            sample = await self._exchange(client, endpoint, profile, time.monotonic(), started,
                                          rng)
            if self.stop_when_gone and sample.code in GONE:
                return
            # Think time, part of the load model (paced clients draw it from a range).
            await asyncio.sleep(rng.uniform(self.model.think_min_s, self.model.think_s))

    async def _exchange(self, client: httpx.AsyncClient, endpoint: str, profile: str,
                        intended: float, started: float, rng: random.Random) -> Sample:
        """One logical request: one attempt (plain), or as many as the policy allows."""
        ledger = self.ledgers[profile]
        create = ledger.new_create() if endpoint == CREATE else None
        request = self._request(endpoint, rng)
        keyed = bool(self.target.write.idempotency_header)
        lag = time.monotonic() - intended
        waited = 0.0
        attempt = 0
        while True:
            attempt += 1
            request_id = f"{next(self._attempts)}"
            _attempt_id.set(request_id)
            # The client timeout bounds the whole attempt: httpx's own applies to each of
            # connect, pool wait, write and read in turn, which lets one attempt run to a
            # multiple of it.
            waiting_since, slot_at = time.monotonic(), None
            try:
                async with asyncio.timeout(self.model.timeout_s):
                    async with self._slots:
                        slot_at = time.monotonic()
                        if create is not None:
                            response = await ledger.send(client, create)
                            outcome = _write_outcome(create)
                        else:
                            response, outcome = await _send(client, request)
            except TimeoutError:
                response, outcome = None, Outcome(0, "ClientTimeout")
                if create is not None:  # it may have committed
                    create.outcome, create.status, create.detail = ("indeterminate", None,
                                                                    "ClientTimeout")
            finally:
                waited += (slot_at or time.monotonic()) - waiting_since
            retry_after = response.headers.get("Retry-After") if response is not None else None
            if profile != RETRYING or not self.policy.should_retry(
                    outcome, attempt, create is not None, keyed, time.monotonic() - intended):
                break
            await asyncio.sleep(self.policy.backoff_s(attempt, retry_after, rng))
        sample = Sample(endpoint, "steady", intended - started, time.monotonic() - intended,
                        outcome.status, outcome.code, profile, attempt, lag, waited, request_id)
        self.samples.append(sample)
        return sample

    def _request(self, endpoint: str, rng: random.Random) -> Sendable | None:
        """The read or probe to send (None for a create: the ledger sends those)."""
        if endpoint == READ:
            acked = [c.new_id for ledger in self.ledgers.values() for c in ledger.creates[-200:]
                     if c.outcome == "acknowledged"]
            return self.target.write.read_request(rng.choice(acked) if acked else 1)
        if endpoint == ROOT:
            return self.target.probe_request.render()
        return None


async def _send(client: httpx.AsyncClient,
                request: Sendable | None) -> tuple[httpx.Response | None, Outcome]:
    assert request is not None
    try:
        response = await request.send(client)
    except httpx.HTTPError as exc:
        return None, outcome_of(None, exc)
    return response, outcome_of(response)


def _write_outcome(create: Create) -> Outcome:
    if create.outcome == "acknowledged":
        return Outcome(create.status or 200, "")
    return Outcome(create.status or 0, create.detail)


async def measure_capacity(target: Target, base_url: str, ledger: WriteLedger,
                           rng: random.Random, seconds: float = 2.0, clients: int = 8) -> float:
    """Answered-with-success requests per second of the mix, closed loop without think time:
    what the service sustains on this machine, measured before the scenarios (not through
    the fault proxy) so the open-loop rate can be set below saturation."""
    generator = LoadGenerator(target, {PLAIN: ledger}, rng,
                              LoadModel(CLOSED, clients=clients, think_s=0.0))
    generator.start(base_url)
    await asyncio.sleep(seconds)  # the measurement's length
    await generator.stop()
    elapsed = time.monotonic() - generator.started
    return sum(s.ok for s in generator.samples) / elapsed
