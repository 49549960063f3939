"""What the instrument (the load generator and the fault proxy) added to what it measured,
and which verdicts it could therefore have decided.

Every sample's latency runs from the schedule's intended send to the answer being read, so it
holds three delays of the generator's own beside the service's time:

- `lag`: the send itself was late (the generator's loop was busy when it fell due);
- `waited`: the request waited for a free connection (all of the generator's in flight);
- the answer was read late: the generator's loop was busy when it arrived. The generator
  probes its loop every few milliseconds (`LoadGenerator.loop_lag`); the probe nearest the
  answer says how late reading it may have been.

and the fault proxy, which every request crosses, adds its own relaying both ways.

So every check is judged on the service's own time: the proxy logs, per request (by its
`X-Request-Id`), when it forwarded it to the service and when the service answered, with what
status (`service_time_view`). The client's figure is shown beside where it would have judged
otherwise. What cannot be read at the service keeps the client's figure: a retrying client's
request of several attempts (its backoff is part of what it measures) and a request the proxy
has no record of. For those, a breach is the service's only if it survives taking the
generator's delays out: each verdict is judged twice, on the samples as they stand and on the
service's view (each latency less the instrument's delays; a client timeout in which the
instrument took a material share of the client's patience left out, since what the service
would have answered is unknown). A check breached as it stands but met in the service's view
is *inconclusive*: the instrument could have decided it, and the report says so instead of
charging it to the service.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import dataclasses
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psutil

from sqlite_faults.echo import TARGET as ECHO
from sqlite_faults.echo import EchoServer
from sqlite_faults.ledger import WriteLedger
from sqlite_faults.netproxy import ForwardedRequest, NetworkFaults
from sqlite_faults.retry import PLAIN
from sqlite_faults.summary import percentile
from sqlite_faults.traffic import (
    LOOP_PROBE_S,
    OPEN,
    LoadGenerator,
    LoadModel,
    Sample,
    measure_capacity,
)

from .slo import Verdict

# The instrument may add this share of the p95 objective at p95 (calibrated on the echo
# service) for its figures to be the service's.
INSTRUMENT_SHARE = 0.1
# A client timeout is left out of the service's view when the instrument's own delays took
# more than this share of the client's timeout.
TAINTED_TIMEOUT_SHARE = 0.1


class LoopLag:
    """The generator's loop probes: (seconds since the run started, seconds late)."""

    def __init__(self, probes: Sequence[tuple[float, float]]) -> None:
        self.at = [t for t, _ in probes]
        self.late = [late for _, late in probes]

    def around(self, t: float) -> float:
        """How late the loop ran around `t`: the largest probe within one period of it."""
        lo = bisect.bisect_left(self.at, t - LOOP_PROBE_S)
        hi = bisect.bisect_right(self.at, t + 2 * LOOP_PROBE_S)
        return max(self.late[lo:hi], default=0.0)

    def between(self, start: float, end: float) -> list[float]:
        return self.late[bisect.bisect_left(self.at, start):bisect.bisect_left(self.at, end)]


def instrument_delay(sample: Sample, loop: LoopLag) -> float:
    """Seconds of `sample.latency` the instrument is known to have added."""
    if sample.at_service:
        return 0.0
    return sample.instrument_s + loop.around(sample.at + sample.latency)


def service_view(samples: Sequence[Sample], loop: LoopLag, timeout_s: float) -> list[Sample]:
    """The samples as the service's own time would have them (see the module's docstring)."""
    view = []
    for sample in samples:
        delay = min(instrument_delay(sample, loop), sample.latency)
        if sample.code == "ClientTimeout" and delay > TAINTED_TIMEOUT_SHARE * timeout_s:
            continue
        view.append(dataclasses.replace(sample, latency=sample.latency - delay))
    return view


def service_time_view(samples: Sequence[Sample], log: dict[str, ForwardedRequest], *,
                      network: bool) -> list[Sample]:
    """The samples with the service's own time and answer wherever the fault proxy logged
    them (netproxy/proxy.py: from forwarding a request to the service's answer), so no delay of the
    generator's or the proxy's is judged as the service's:

    - a request the service answered counts with its own time and status;
    - one it got and never answered counts as the client saw it (the service held it);
    - in a network scenario's fault window, one that never reached the service (a black hole
      took it, the proxy answered it) is the network's, and left out; elsewhere a request the
      proxy has no record of stays as measured;
    - a retrying client's request of several attempts stays as measured outside a network
      fault (its backoff and earlier attempts are what that profile measures; `settle` judges
      the instrument's delays in it). In a network fault its last attempt is the service's
      share: the earlier ones met the fault.
    """
    view = []
    for sample in samples:
        network_fault = network and sample.phase == "fault"
        forwarded = log.get(sample.request_id) if sample.request_id else None
        if forwarded is None:
            if not network_fault:
                view.append(sample)
            continue
        service_s = forwarded.service_s
        if (service_s is None or forwarded.status is None
                or (sample.attempts > 1 and not network_fault)):
            view.append(sample)
            continue
        same = forwarded.status == sample.status
        view.append(dataclasses.replace(
            sample, latency=service_s, status=forwarded.status, at_service=True,
            code=sample.code if same else ("" if 200 <= forwarded.status < 300
                                           else f"http-{forwarded.status}")))
    return view


def beside(judged: list[Verdict], as_seen: list[Verdict], *, network: bool) -> list[Verdict]:
    """Each verdict on the service's share, with the figure the client saw beside it: in a
    network scenario for every fault-window check whose figure differs (the seed report quotes
    the client's), elsewhere where the client's figure would have judged otherwise. A window
    in which no request reached the service (a black hole took them all) holds nothing of the
    service's to judge: met, and said so."""
    seen = {(v.endpoint, v.profile, v.slo): v for v in as_seen}
    shown = []
    for v in judged:
        if v.slo == "requests (fault)" and not v.passed and network:
            shown.append(dataclasses.replace(
                v, passed=True, observed="0 reached the service", margin="n/a",
                pattern="the network took every request of the window"))
            continue
        client = seen.get((v.endpoint, v.profile, v.slo))
        differs = client is not None and (
            client.passed != v.passed
            or (network and "(fault)" in v.slo and client.observed != v.observed))
        if client is not None and differs:
            v = dataclasses.replace(v, observed=f"{v.observed} at the service; "
                                                f"{client.observed} as the client saw it")
        shown.append(v)
    return shown


def settle(measured: list[Verdict], serviced: list[Verdict], why: str) -> list[Verdict]:
    """The measured verdicts, each breach the service's view meets marked inconclusive."""
    met = {(v.scenario, v.endpoint, v.profile, v.slo) for v in serviced if v.passed}
    return [dataclasses.replace(v, inconclusive=why)
            if not v.passed and (v.scenario, v.endpoint, v.profile, v.slo) in met else v
            for v in measured]


def figures(samples: Sequence[Sample], loop: LoopLag, start: float, end: float,
            forwarded: dict[str, ForwardedRequest] | None = None) -> dict[str, Any]:
    """The instrument's own delays in one window, for the report; with the fault proxy's log,
    the service's own time too (from the proxy forwarding a request to its answer), so a
    breach can be shown to be the service's."""
    delays = [instrument_delay(s, loop) * 1000 for s in samples]
    waited = [s.waited * 1000 for s in samples]
    late = [x * 1000 for x in loop.between(start, end)]
    log = forwarded or {}
    service = [t * 1000 for s in samples
               if (f := log.get(s.request_id)) is not None and (t := f.service_s) is not None]
    return {
        "service_p95_ms": round(percentile(service, 0.95), 1),
        "service_max_ms": round(max(service, default=0.0), 1),
        "requests": len(samples),
        "delay_p95_ms": round(percentile(delays, 0.95), 1),
        "delay_max_ms": round(max(delays, default=0.0), 1),
        "waited_for_connection": sum(w > 1.0 for w in waited),
        "loop_lag_p95_ms": round(percentile(late, 0.95), 1),
        "loop_lag_max_ms": round(max(late, default=0.0), 1),
    }


@dataclass(frozen=True)
class Calibration:
    """The instrument alone, against the echo service through a fault proxy of its own, no
    fault: how fast it can go, and what it adds at the rate the run will use."""

    ceiling_rps: float  # closed loop, the same clients as the capacity measurement
    rate: float  # the open-loop rate checked (after any lowering)
    asked_rate: float  # the rate the run asked for
    p50_ms: float
    p95_ms: float
    loop_lag_p95_ms: float
    budget_ms: float  # what the instrument may add at p95 for its figures to be the service's

    @property
    def carries(self) -> bool:
        return self.p95_ms <= self.budget_ms

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "carries": self.carries}


async def calibrate(rate: float, budget_ms: float, timeout_s: float, seed: int,
                    seconds: float = 1.0, lowerings: int = 3) -> Calibration:
    """Measure the instrument on the echo service (echo.py): its closed-loop ceiling, then
    the open loop at `rate`. While it adds more than `budget_ms` at p95 the rate is lowered
    (by 30 % each time, `lowerings` times at most): the run then uses the rate it can carry,
    and says so, rather than measuring itself."""
    rng = random.Random(seed)
    with EchoServer() as echo, NetworkFaults(("127.0.0.1", echo.port), seed=seed) as proxy:
        ledger = WriteLedger(random.Random(rng.random()), ECHO.write, prefix="calibration")
        ceiling = await measure_capacity(ECHO, proxy.base_url, ledger,
                                         random.Random(rng.random()), seconds=seconds)
        asked = rate
        while True:
            generator = LoadGenerator(ECHO, {PLAIN: ledger}, random.Random(rng.random()),
                                      LoadModel(OPEN, rate=rate, timeout_s=timeout_s))
            stop = asyncio.Event()
            started = time.monotonic()
            task = asyncio.create_task(generator.run(proxy.base_url, stop, started))
            await asyncio.sleep(seconds)  # the measurement's length
            stop.set()
            await task
            latencies = [s.latency * 1000 for s in generator.samples]
            result = Calibration(
                ceiling_rps=round(ceiling, 1), rate=round(rate, 1), asked_rate=round(asked, 1),
                p50_ms=round(percentile(latencies, 0.5), 1),
                p95_ms=round(percentile(latencies, 0.95), 1),
                loop_lag_p95_ms=round(percentile(
                    [late * 1000 for _, late in generator.loop_lag], 0.95), 1),
                budget_ms=budget_ms)
            if result.carries or lowerings == 0:
                return result
            lowerings -= 1
            rate *= 0.7


@dataclass(frozen=True)
class CpuSample:
    at: float  # seconds since the scenario started
    machine: float  # busy share of all the machine's CPUs, 0..1
    service: float  # CPUs the service's process used (1.0 = one core)
    instrument: float  # CPUs the generator's and the proxy's processes used


class CpuSampler:
    """Who had the machine's CPUs, every `every_s` (a thread, so a busy generator loop does
    not stretch the period): the machine as a whole, the service, and the instrument (this
    process and the fault proxy). On a small machine the three share the CPUs, and a window
    in which they were all busy is one in which the service may have waited for a CPU its
    own instrument held."""

    def __init__(self, service_pid: Callable[[], int | None], instrument_pids: Sequence[int],
                 started: float, every_s: float = 0.1) -> None:
        self.samples: list[CpuSample] = []
        self._service_pid = service_pid
        self._instrument = [psutil.Process(pid) for pid in instrument_pids]
        self._service: psutil.Process | None = None
        self._started = started
        self._every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _service_process(self) -> psutil.Process | None:
        pid = self._service_pid()
        if pid is None:
            return None
        if self._service is None or self._service.pid != pid:  # restarted (SIGKILL scenario)
            with contextlib.suppress(psutil.Error):
                self._service = psutil.Process(pid)
                self._service.cpu_percent()
        return self._service

    def _run(self) -> None:
        psutil.cpu_percent()
        for process in self._instrument:
            with contextlib.suppress(psutil.Error):
                process.cpu_percent()
        while not self._stop.wait(self._every_s):  # the sampling period
            service = self._service_process()
            used = 0.0
            with contextlib.suppress(psutil.Error):
                used = service.cpu_percent() / 100 if service is not None else 0.0
            instrument = 0.0
            for process in self._instrument:
                with contextlib.suppress(psutil.Error):
                    instrument += process.cpu_percent() / 100
            self.samples.append(CpuSample(time.monotonic() - self._started,
                                          psutil.cpu_percent() / 100, used, instrument))


# A CPU sample at or above this busy share of the machine counts as saturated.
SATURATED = 0.95


def cpu_figures(samples: Sequence[CpuSample], start: float, end: float) -> dict[str, Any]:
    window = [s for s in samples if start <= s.at < end]
    if not window:
        return {"cpu_samples": 0}
    n = len(window)
    return {
        "cpu_samples": n,
        "machine_busy_mean": round(sum(s.machine for s in window) / n, 3),
        "machine_saturated_share": round(sum(s.machine >= SATURATED for s in window) / n, 3),
        "service_cpus_mean": round(sum(s.service for s in window) / n, 2),
        "instrument_cpus_mean": round(sum(s.instrument for s in window) / n, 2),
    }
