"""Runs the scenario matrix against one target: steady state, fault window, recovery, check."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from sqlite_faults.engine_plugin import FaultControl
from sqlite_faults.ledger import LedgerReport, WriteLedger
from sqlite_faults.libfiu import fiu_available, fiu_env, merge_preloads
from sqlite_faults.locks import LockHolder
from sqlite_faults.netproxy import ForwardedRequest, NetworkFaults
from sqlite_faults.observe import MetricsSampler
from sqlite_faults.retry import PLAIN, PROFILES
from sqlite_faults.server import ServerProcess
from sqlite_faults.slowsync import SlowSync, compiler
from sqlite_faults.syscalls import strace_path
from sqlite_faults.target import Target
from sqlite_faults.traffic import (
    ENDPOINTS,
    OPEN,
    LoadGenerator,
    LoadModel,
    LoadSpec,
    Sample,
    measure_capacity,
)
from sqlite_faults.traffic import labels as request_labels

from . import instrument
from .backends import Backend
from .instrument import Calibration, CpuSample, CpuSampler, LoopLag
from .restarts import ServiceGone, restart
from .scenarios import FaultContext, Scenario
from .slo import LaneSamples, Objectives, PhaseStats, Verdict, judge, lanes_verdict


@dataclass(frozen=True)
class Phases:
    steady_s: float = 2.0
    fault_s: float = 4.0
    recovery_s: float = 3.0


# How long the service has to answer its readiness check before a scenario, and after one
# (asked while the last requests drain), before it is restarted as wedged.
READY_TIMEOUT_S = 2.0
# The loop probe experiment: where statements are stuck (a held lock, slowed statements).
LOOP_PROBED = ("lock-past-deadline", "slow-statements")
LOOP_PROBE_EVERY_S = 0.2
LOOP_PROBE_TIMEOUT_S = 3.0
# The write ledger's check after a scenario: no request of it starts after this long, and each
# waits this long for its answer. A service that stopped answering mid-check costs the report
# that, not a timeout per write (the naive baseline once took 533 s over one scenario's check).
# Not a shorter wait: a service goes on with a request its client gave up on, and a check that
# gives up sooner piles more of them on a struggling one (the naive baseline then did not come
# back after its restart).
LEDGER_CHECK_BUDGET_S = 30.0
LEDGER_REQUEST_TIMEOUT_S = 10.0
# The period of the lane gauges' sampling (scenarios that observe lanes).
LANE_SAMPLE_S = 0.1


@dataclass
class ScenarioResult:
    target: str
    scenario: Scenario
    samples: list[Sample] = field(default_factory=list)
    fault_start: float = 0.0
    fault_end: float = 0.0
    ledgers: dict[str, LedgerReport] = field(default_factory=dict)  # profile -> its check
    verdicts: list[Verdict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: str = ""
    labels: dict[str, str] = field(default_factory=dict)  # role -> "METHOD /path"
    lanes: LaneSamples | None = None
    seconds: float = 0.0  # wall time of the scenario, checks included
    # The generator's loop probes (seconds since the start, seconds late): instrument.py.
    loop_lag: list[tuple[float, float]] = field(default_factory=list)
    # Who had the machine's CPUs through the scenario (instrument.CpuSampler).
    cpu: list[CpuSample] = field(default_factory=list)
    # The fault proxy's log of the requests it forwarded, by X-Request-Id: the service's own
    # time (network scenarios are judged by it; every scenario reports it).
    forwarded: dict[str, ForwardedRequest] = field(default_factory=dict)
    # The loop probe experiment (LOOP_PROBED scenarios): the target's loop_probe, a request
    # that touches no database, sent straight to the service one at a time through the fault
    # window; seconds to each answer, None for none within LOOP_PROBE_TIMEOUT_S.
    loop_probe: list[float | None] = field(default_factory=list)

    def instrument(self, endpoint: str | None = None) -> dict[str, dict[str, Any]]:
        """The instrument's own delays per phase (of one endpoint's requests, or all)."""
        loop = LoopLag(self.loop_lag)
        end = max((s.at + s.latency for s in self.samples), default=self.fault_end)
        bounds = {"steady": (0.0, self.fault_start), "fault": (self.fault_start, self.fault_end),
                  "recovery": (self.fault_end, end)}
        return {phase: {**instrument.figures(
                    [s for s in self.samples
                     if s.phase == phase and endpoint in (None, s.endpoint)],
                    loop, start, stop, self.forwarded),
                    **instrument.cpu_figures(self.cpu, start, stop)}
                for phase, (start, stop) in bounds.items()}

    @property
    def ledger(self) -> LedgerReport | None:
        """The plain client's ledger check."""
        return self.ledgers.get(PLAIN)

    @property
    def profiles(self) -> tuple[str, ...]:
        return self.scenario.profiles

    def stats(self, endpoint: str, phase: str, profile: str | None = PLAIN) -> PhaseStats:
        """One endpoint's requests in one phase, of one client profile (None: all)."""
        return PhaseStats.of([s for s in self.samples
                              if s.endpoint == endpoint and s.phase == phase
                              and (profile is None or s.profile == profile)])

    def retried(self, endpoint: str, profile: str) -> int:
        """Requests of the fault window that needed more than one attempt."""
        return sum(s.attempts > 1 for s in self.samples
                   if s.endpoint == endpoint and s.phase == "fault" and s.profile == profile)

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target, "scenario": self.scenario.name,
            "title": self.scenario.title, "skipped": self.skipped, "notes": self.notes,
            "network": self.scenario.network, "seed_row": self.scenario.seed_row,
            "expect": self.scenario.expect, "endpoints": self.labels,
            "profiles": list(self.profiles),
            # The plain client's figures, as before there were profiles.
            "stats": {
                endpoint: {phase: vars(self.stats(endpoint, phase))
                           for phase in ("steady", "fault", "recovery")}
                for endpoint in ENDPOINTS
            },
            "stats_by_profile": {
                profile: {endpoint: {phase: vars(self.stats(endpoint, phase, profile))
                                     for phase in ("steady", "fault", "recovery")}
                          for endpoint in ENDPOINTS}
                for profile in self.profiles
            },
            "ledger": self.ledger.as_dict() if self.ledger else None,
            "ledgers": {profile: led.as_dict() for profile, led in self.ledgers.items()},
            "lanes": self.lanes.as_dict() if self.lanes else None,
            "instrument": self.instrument(),
            "verdicts": [v.as_dict() for v in self.verdicts],
            "loop_probe": self.loop_probe,
        }


@dataclass
class TargetRun:
    """One target's scenarios, with the load it ran under."""

    results: list[ScenarioResult]
    load: LoadModel
    capacity_rps: float
    calibration: Calibration | None = None  # open loop: the instrument alone at its rate
    # Each engine's configuration as the service ran it (diagnostics.py), read at the start.
    diagnostics: list[dict[str, Any]] = field(default_factory=list)


class Progress:
    """One line per step on stderr; rewritten in place on a terminal."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.tty = sys.stderr.isatty()

    def show(self, target: str, scenario: str, step: str) -> None:
        line = f"[{self.done + 1}/{self.total}] {target:<8} {scenario:<24} {step}"
        sys.stderr.write(("\r\033[K" + line) if self.tty else line + "\n")
        sys.stderr.flush()

    def finish(self, target: str, scenario: str, failed: int, verdicts: int,
               seconds: float = 0.0) -> None:
        self.complete(target, scenario, f"done: {verdicts - failed}/{verdicts} SLOs met"
                      + (f" ({seconds:g} s)" if seconds else ""))

    def complete(self, target: str, scenario: str, said: str) -> None:
        """The step's last line, kept; the next step's number from here."""
        self.show(target, scenario, said)
        if self.tty:
            sys.stderr.write("\n")
        self.done += 1


async def run_target(target: Target, scenarios: list[Scenario], objectives: Objectives,
                     rng: random.Random, phases: Phases, spec: LoadSpec, workdir: Path,
                     progress: Progress, backend: Backend | None = None,
                     rate_ceiling: float | None = None,
                     calibrated: Calibration | None = None,
                     change: dict[str, str] | None = None) -> TargetRun:
    """`change`: PRAGMAs applied through the engine plugin before the first scenario (a
    counterfactual run: the same faults without a confirmed cause)."""
    backend = backend or Backend("sqlite")
    database_url = backend.database_url(target.name)
    control = FaultControl.new()
    env = {**target.env, **control.env}
    if database_url is None:
        # Under libfiu's preload and the slow-sync shim when they are there, so disk faults
        # can be switched on and off without slowing the process the rest of the time.
        slowsync = SlowSync(workdir / f"{target.name}-slowsync") if compiler() else None
        env = merge_preloads(
            env,
            fiu_env() if fiu_available() else {},
            slowsync.env(match="users.db") if slowsync else {},
        )
    else:
        # On PostgreSQL the service writes no files: the disk faults those preloads serve
        # are skipped there, so the service runs without them.
        slowsync = None
    server = ServerProcess.for_target(target, workdir / target.name, env=env,
                                      database_url=database_url)
    # What the lock holder and the ledger's check open: the SQLite file, or the URL.
    db = backend.ledger_db(database_url, server.db_path)
    # One ledger per client profile, so a duplicate is charged to the client that caused it.
    ledgers = {profile: WriteLedger(random.Random(rng.random()), target.write,
                                    prefix=f"{target.name}-{profile}")
               for profile in PROFILES}
    server.start()
    await ledgers[PLAIN].seed(server.base_url, 20)  # users to read from the first request on
    # After the first writes: a service may build its engine lazily, at its first request.
    diagnostics = await control.diagnostics()
    if change:
        await control.change(**change)
        diagnostics = await control.diagnostics()  # the evidence that the change took
    # The load goes through the fault proxy; readiness checks and the ledger's checks go
    # straight to the service, so a network fault never decides what the ledger finds.
    network = NetworkFaults(("127.0.0.1", server.port), seed=rng.randrange(2**31))
    results = []
    try:
        # Through the proxy, as the scenarios' load will go: on a small machine the proxy and
        # the load generator share the CPU with the service, and the rate must leave room
        # for all three.
        progress.show(target.name, "capacity", "measuring (closed loop, no think time)")
        capacity = await measure_capacity(target, network.base_url, ledgers[PLAIN],
                                          random.Random(rng.random()))
        model = spec.settle(capacity, rate_ceiling)
        calibration = None
        if model.kind == OPEN and calibrated is not None and model.rate <= calibrated.rate:
            # The same instrument, already shown to carry at least this rate in this run.
            calibration = calibrated
        elif model.kind == OPEN:
            # The instrument alone at this rate, before it judges anything (instrument.py).
            progress.show(target.name, "instrument", "calibrating on the echo service")
            calibration = await instrument.calibrate(
                model.rate, objectives.p95_latency_ms * instrument.INSTRUMENT_SHARE,
                model.timeout_s, rng.randrange(2**31))
            model = dataclasses.replace(model, rate=calibration.rate)
        gone = ""  # set once the service did not come back: nothing more can be measured
        for scenario in scenarios:
            result = ScenarioResult(target.name, scenario, labels=request_labels(target))
            results.append(result)
            result.skipped = scenario.skip_reason(backend.name)
            if not result.skipped and scenario.needs_strace and strace_path() is None:
                result.skipped = "strace is not installed (apt-get install strace)"
            if not result.skipped and scenario.needs_compiler and slowsync is None:
                result.skipped = "no C compiler to build the slow-sync shim (apt-get install gcc)"
            if result.skipped:
                progress.finish(target.name, scenario.name, 0, 0)
                continue
            if gone:
                result.skipped = f"not run: {gone}"
                progress.finish(target.name, scenario.name, 0, 0)
                continue
            scenario_started = time.monotonic()
            try:
                await ensure_answering(server, result)
            except ServiceGone as exc:
                gone = str(exc)
                result.skipped = f"not run: {gone}"
                progress.finish(target.name, scenario.name, 0, 0)
                continue
            try:
                await _run_scenario(target, scenario, server, network, control, db, ledgers,
                                    rng, phases, model, result, progress, slowsync, backend)
            except ServiceGone as exc:  # after the scenario's load: its samples stand
                gone = str(exc)
                result.notes.append(f"{gone}: its writes were not checked, and the remaining "
                                    "scenarios were not run")
            result.verdicts += judge_scenario(result, objectives, target.deadline_s, model)
            if result.lanes is not None:
                result.verdicts.append(lanes_verdict(scenario.name, result.lanes, objectives))
            failed = sum(v.breached for v in result.verdicts)
            result.seconds = round(time.monotonic() - scenario_started, 1)
            progress.finish(target.name, scenario.name, failed, len(result.verdicts),
                            result.seconds)
    finally:
        network.close()
        server.kill()
    return TargetRun(results, model, capacity, calibration, diagnostics)


def judge_scenario(result: ScenarioResult, objectives: Objectives, deadline_s: float | None,
           model: LoadModel) -> list[Verdict]:
    """Every verdict of one scenario: judged on the service's own time where the fault proxy
    logged it, then each breach the instrument's remaining delays could explain marked
    inconclusive (instrument.py)."""
    scenario = result.scenario
    loop = LoopLag(result.loop_lag)
    # Judged on what the service can control: its own time and answers, as the fault proxy
    # logged them (instrument.service_time_view); what is left of the instrument's own
    # delays (a retrying client's requests) is settled below.
    judged = instrument.service_time_view(result.samples, result.forwarded,
                                          network=scenario.network)
    serviced = instrument.service_view(judged, loop, model.timeout_s)
    verdicts: list[Verdict] = []
    for profile in scenario.profiles:
        for endpoint in ENDPOINTS:
            def verdicts_on(samples: list[Sample], endpoint: str = endpoint,
                            profile: str = profile) -> list[Verdict]:
                return judge(scenario.name, endpoint, scenario.expect[endpoint],
                             [s for s in samples
                              if s.endpoint == endpoint and s.profile == profile],
                             result.fault_end, objectives, deadline_s,
                             result.ledgers.get(profile), profile)

            # The client's own figures beside the service's.
            measured = instrument.beside(verdicts_on(judged), verdicts_on(result.samples),
                                         network=scenario.network)
            theirs = verdicts_on(serviced)
            verdicts += instrument.settle(
                measured, theirs, "met once the load generator's own delays are taken out "
                "(see the instrument figures)")
    return verdicts


async def _run_scenario(target: Target, scenario: Scenario, server: ServerProcess,
                        network: NetworkFaults, control: FaultControl, db: Path | str,
                        ledgers: dict[str, WriteLedger], rng: random.Random, phases: Phases,
                        model: LoadModel, result: ScenarioResult, progress: Progress,
                        slowsync: SlowSync | None, backend: Backend) -> None:
    load = LoadGenerator(target, {p: ledgers[p] for p in scenario.profiles},
                         random.Random(rng.random()), model, profiles=scenario.profiles)
    context = FaultContext(server, target, control, random.Random(rng.random()), phases.fault_s,
                           slowsync=slowsync, postgres=backend.postgres, network=network,
                           notes=result.notes)
    if scenario.lock_mode is not None:
        # On PostgreSQL `db` is the URL: the holder takes the matching table lock on users.
        context.holder = LockHolder(db, scenario.lock_mode, acquire_timeout_s=phases.fault_s)
        await asyncio.to_thread(context.holder.start)
    await network.arequests()  # empties the proxy's log: this scenario's requests only
    metrics = target.metrics if scenario.observe_lanes else None
    # The service's DB calls in flight, straight from its metrics (not through the proxy).
    lanes = (MetricsSampler(server.base_url, metrics.request.path, every_s=LANE_SAMPLE_S)
             if metrics is not None else None)
    load.start(network.base_url)
    started = load.started
    with CpuSampler(lambda: server.pid if server.running else None,
                    [os.getpid(), network.pid], started) as cpu:
        if lanes is not None:
            lanes.start()
        try:
            progress.show(target.name, scenario.name, "steady state")
            await asyncio.sleep(phases.steady_s)  # phase lengths are the experiment's design
            result.fault_start = time.monotonic() - started
            progress.show(target.name, scenario.name, "fault window")
            fault = scenario.fault(context) if scenario.fault else contextlib.nullcontext()
            prober = (asyncio.create_task(probe_the_loop(server.base_url, target, result))
                      if scenario.name in LOOP_PROBED else None)
            try:
                await through_the_fault(fault, phases.fault_s, result)
            finally:
                if prober is not None:
                    prober.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await prober
            result.fault_end = time.monotonic() - started
            progress.show(target.name, scenario.name, "recovery")
            await asyncio.sleep(phases.recovery_s)
        finally:
            load.stop_sending()
            # Whether the service still answers, asked while the requests in flight drain: a
            # wedged service makes them wait out the client timeout, and the two waits overlap
            # (the naive baseline spent 2.7 s after each such drain on this question alone).
            answering = asyncio.create_task(server.answers_ready(READY_TIMEOUT_S))
            await load.stop()
            answered = await answering
            if lanes is not None:
                await lanes.stop()
            if context.holder is not None:
                await asyncio.to_thread(context.holder.close)
    if lanes is not None and metrics is not None:
        result.lanes = LaneSamples()
        for at, snapshot in lanes.samples:
            result.lanes.capacity = snapshot.value(metrics.capacity)
            phase = _phase_at(at - started, result.fault_start, result.fault_end)
            result.lanes.busy.setdefault(phase, []).append(snapshot.value(metrics.busy))
    result.cpu = cpu.samples
    result.samples = [
        dataclasses.replace(s, phase=phase_of(s, result.fault_start, result.fault_end))
        for s in load.samples
    ]
    result.loop_lag = load.loop_lag
    result.forwarded = await network.arequests()
    progress.show(target.name, scenario.name, "checking acknowledged writes")
    await ensure_answering(server, result, answered)
    # One profile after the other: each check reads through the service 8 requests at a
    # time, and two side by side (16) wedge a service with the seed's 15 pooled connections
    # (measured: the naive baseline stopped answering and one check took over ten minutes).
    for profile in scenario.profiles:
        result.ledgers[profile] = await ledgers[profile].check(
            server.base_url, db, budget_s=LEDGER_CHECK_BUDGET_S,
            request_timeout_s=LEDGER_REQUEST_TIMEOUT_S)


async def probe_the_loop(base_url: str, target: Target, result: ScenarioResult) -> None:
    """Whether database calls block what serves requests: the DB-free loop_probe, one at a
    time, while statements are stuck (until cancelled at the fault's end). Straight to the
    service: the load generator's probe may itself wait for the database (a readiness check
    that checks out a connection answers slowly when the pool is busy, not the loop)."""
    request = target.loop_probe.render()
    async with httpx.AsyncClient(base_url=base_url, timeout=LOOP_PROBE_TIMEOUT_S) as client:
        while True:
            sent = time.monotonic()
            try:
                await request.send(client)
                result.loop_probe.append(round(time.monotonic() - sent, 3))
            except httpx.HTTPError:
                result.loop_probe.append(None)
            except asyncio.CancelledError:
                # The fault ended with this probe still unanswered: how long it had waited
                # is the figure (a lower bound), or a blocked loop would leave no sample.
                result.loop_probe.append(round(time.monotonic() - sent, 3))
                raise
            await asyncio.sleep(LOOP_PROBE_EVERY_S)


async def through_the_fault(fault: contextlib.AbstractAsyncContextManager[None],
                             window_s: float, result: ScenarioResult) -> None:
    """Hold the fault for the window. If the control server in the service does not answer
    (the process is gone or wedged whole), the window keeps its length and the report says the
    fault was not applied as planned."""
    window_ends = time.monotonic() + window_s
    try:
        async with fault:
            await asyncio.sleep(max(0.0, window_ends - time.monotonic()))
    except httpx.HTTPError as exc:
        result.notes.append(f"the fault control did not answer ({type(exc).__name__}): the "
                            "service was stalled, and the fault was not applied as planned")
        await asyncio.sleep(max(0.0, window_ends - time.monotonic()))
    except ServiceGone as exc:
        # A restart inside the fault (SIGKILL) that did not come back: the load goes on
        # meeting a dead service for the window, and the check after it tries again.
        result.notes.append(f"during the fault window {exc}")
        await asyncio.sleep(max(0.0, window_ends - time.monotonic()))


def _phase_at(at: float, fault_start: float, fault_end: float) -> str:
    """The phase a moment (seconds since the scenario started) falls in."""
    return "steady" if at < fault_start else "fault" if at < fault_end else "recovery"


def phase_of(sample: Sample, fault_start: float, fault_end: float) -> str:
    """A request belongs to the fault window if any part of it overlapped the window: one
    sent just before the fault and answered during it met the fault."""
    if sample.at + sample.latency < fault_start:
        return "steady"
    if sample.at >= fault_end:
        return "recovery"
    return "fault"


async def ensure_answering(server: ServerProcess, result: ScenarioResult,
                            answered_while_draining: bool = True) -> None:
    """A wedged service (e.g. the naive one after a pool-timeout stall) is restarted, so the
    next scenario measures something and the write ledger's check can read through it; the
    restart is noted in the report. One that did not answer its readiness check while the
    scenario's last requests drained is restarted at once; one that did is asked again now
    (it may have wedged since: the naive service answered at the start of a drain and was
    stuck at its end, and the ledger's check then crawled through it for minutes)."""
    if answered_while_draining and await server.answers_ready(READY_TIMEOUT_S):
        return
    result.notes.append(f"the service did not answer its readiness check within "
                        f"{READY_TIMEOUT_S:g} s and was restarted")
    await restart(server, result.notes)
