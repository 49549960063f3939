"""One load level of the overload benchmark: a closed-loop wrk run or an open-loop driver run
against a running server, reduced to the same figures (`Level`), with the seconds the server
kept working after the load stopped.

Both kinds of run go through here so that the table and the targets compare like with like:
answers counted by status class (2xx, 503, 504, other), goodput as 2xx answers a second within
the run, answers later than the deadline + 100 ms, client timeouts, connection errors, the
server's busy seconds after the load (benchmarks/busy.py), and whether the load generator
itself was the bottleneck (`driver_bound`), in which case the row is the instrument's figure,
not the service's.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.busy import CpuWatch
from benchmarks.load import WrkRun, script_args
from benchmarks.openloop_native import driver_command
from benchmarks.servers import Served

CLASSES = ("2xx", "503", "504", "other")
# wrk's client core counts as saturated (so wrk may have been the bottleneck) above this.
WRK_BOUND_CPU_SHARE = 0.9


@dataclass(frozen=True)
class RunConfig:
    """What every level of one benchmark run shares."""

    wrk: str
    scripts: dict[str, Path]  # wrk scripts with the answer-class hook (load.write_scripts)
    duration_s: int
    client_timeout_s: int  # wrk --timeout and the driver's --timeout: late answers still count
    late_after_s: float  # DB_DEADLINE_S + 0.1
    busy_cap_s: float
    client_cpus: int  # how many CPUs the load generator has (for its CPU share)
    max_connections: int = 10_000


@dataclass
class Level:
    service: str
    endpoint: str
    model: str  # "closed" (wrk, `clients`) or "open" (the driver, `multiple` x capacity)
    clients: int | None = None
    multiple: float | None = None
    rate: float | None = None  # open: intended arrivals a second
    duration_s: float = 0.0
    answers: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CLASSES, 0))
    # Per class for the open loop; wrk has only "all" (every answer, any status).
    latency_ms: dict[str, dict[str, float | None]] = field(default_factory=dict)
    goodput_per_s: float = 0.0
    goodput_ratio: float | None = None  # of the service's peak goodput on this endpoint
    refusals_per_s: float = 0.0  # 503s a second
    late: int = 0  # answers later than late_after_s
    late_estimated: bool = False  # wrk: estimated from its corrected latency histogram
    # Requests given up unanswered (the open loop's --timeout). None for wrk: it drops what
    # is unanswered when it stops without counting it, and counts an answer later than its
    # --timeout as a "timeout" (those are in `late` here: they are answers).
    client_timeouts: int | None = 0
    errors: dict[str, int] = field(default_factory=dict)
    # None: still busy at the cap, or idle but no longer answering (answered_after False)
    busy_after_stop_s: float | None = None
    driver_bound: bool = False
    driver_why: str = ""
    client_cpu_share: float = 0.0  # of the load generator's CPUs, over the run
    answered_after: bool = True  # GET /readyz answered within 2 s once idle
    overload: bool = False  # offered more than capacity (set once the peak is known)
    peak_run: bool = False  # one of the closed-loop runs the peak is taken from
    failure: str = ""  # the instrument failed (wrk crashed, the driver printed nothing)
    # Open loop: which driver ran, "c" (benchmarks/openloop.c) or "python"
    # (benchmarks/openloop.py); also in `raw`. "" for wrk.
    driver: str = ""
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        if self.model == "closed":
            return f"c={self.clients}"
        return f"{self.multiple:g}x"


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _settle(level: Level, entry: Served, watch: CpuWatch, end_at: float, cfg: RunConfig,
            cpu_before: float, started: float) -> None:
    """After the load: the busy seconds, the client's CPU share, and a stalled server
    restarted (on the same data) so the next level starts from a running one."""
    level.busy_after_stop_s = watch.wait_idle(end_at, cfg.busy_cap_s)
    watch.stop()
    wall = max(1e-9, end_at - started)
    level.client_cpu_share = round((_children_cpu_s() - cpu_before) / wall / cfg.client_cpus, 3)
    # A few tries: right after a flood, a stray slow answer is not yet a stall.
    level.answered_after = any(entry.server.answers_ready_now() for _ in range(3))
    if not level.answered_after:
        # Idle by its CPU but not answering: stalled, which is worse than any busy time.
        level.raw["cpu_idle_after_s"] = level.busy_after_stop_s
        level.busy_after_stop_s = None
        print(f"  {level.service} did not answer GET /readyz after {level.label}: restarting",
              file=sys.stderr)
        entry.restart()


def closed_level(cfg: RunConfig, entry: Served, service: str, endpoint: str,
                 clients: int) -> Level:
    """wrk with `clients` connections for the run's duration."""
    level = Level(service, endpoint, "closed", clients=clients, duration_s=cfg.duration_s)
    watch = CpuWatch(entry.server.pid).start()
    cpu_before = _children_cpu_s()
    started = time.monotonic()
    try:
        run = WrkRun.start(cfg.wrk, entry.server.base_url, endpoint, concurrency=clients,
                           duration_s=cfg.duration_s, timeout_s=cfg.client_timeout_s,
                           scripts=cfg.scripts,
                           script_args=script_args(endpoint, entry.ids, f"ov-c{clients}"))
        figures = run.result().figures
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        level.failure = f"wrk failed: {str(exc)[:300]}"
        figures = None
    # wrk stops sending at -d; its connections close when it exits right after.
    end_at = started + cfg.duration_s
    _settle(level, entry, watch, end_at, cfg, cpu_before, started)
    if figures is not None:
        _fill_from_wrk(level, figures, cfg)
    return level


def _fill_from_wrk(level: Level, figures: dict[str, Any], cfg: RunConfig) -> None:
    level.raw = {**level.raw, **figures}
    seconds = figures["duration_us"] / 1e6
    level.answers = {name: int(figures[f"answers_{name}"]) for name in CLASSES}
    answered = figures["requests"]

    def ms(key: str) -> float | None:
        return round(figures[key] / 1000, 3) if answered else None

    level.latency_ms = {"all": {"p50_ms": ms("p50_us"), "p99_ms": ms("p99_us"),
                                "max_ms": ms("max_us")}}
    level.goodput_per_s = round(level.answers["2xx"] / seconds, 2)
    level.refusals_per_s = round(level.answers["503"] / seconds, 2)
    # Answers later than --timeout are not in the histogram (wrk's "timeout"); they are late.
    in_histogram = max(0, answered - figures["timeout"])
    level.late = round(figures["late_share"] * in_histogram) + figures["timeout"]
    level.late_estimated = figures["late_share"] > 0
    level.client_timeouts = None
    level.errors = {key: figures[key] for key in ("connect", "read", "write")}
    if level.client_cpu_share >= WRK_BOUND_CPU_SHARE:
        level.driver_bound = True
        level.driver_why = (f"wrk's CPU {level.client_cpu_share:.0%} busy "
                            f"(>= {WRK_BOUND_CPU_SHARE:.0%})")


def open_level(cfg: RunConfig, entry: Served, service: str, endpoint: str, multiple: float,
               capacity: float, seed: int) -> Level:
    """The open-loop driver, in a process of its own, at `multiple` times `capacity` requests a
    second: the C one (benchmarks/openloop.c, built on first use) when a C compiler is present,
    else the Python one (benchmarks/openloop.py); same flags, same summary. `driver` says which
    ran (OPENLOOP_DRIVER=python forces the Python one)."""
    rate = multiple * capacity
    # Before the clocks start: the first call may compile the C driver.
    prefix, driver = driver_command()
    level = Level(service, endpoint, "open", multiple=multiple, rate=round(rate, 2),
                  duration_s=cfg.duration_s, driver=driver)
    level.raw["driver"] = driver
    command = [*prefix, "--url", entry.server.base_url,
               "--rate", f"{rate:.4f}", "--duration", str(cfg.duration_s),
               "--endpoint", endpoint, "--seed", str(seed),
               "--timeout", str(cfg.client_timeout_s), "--late-after", str(cfg.late_after_s),
               "--max-connections", str(cfg.max_connections), "--json"]
    if endpoint == "get_user":
        command += ["--ids", str(entry.ids[0]), str(entry.ids[1])]
    if endpoint == "create_user":
        command += ["--name-prefix", f"ov{seed}-{time.monotonic_ns()}"]
    watch = CpuWatch(entry.server.pid).start()
    cpu_before = _children_cpu_s()
    started = time.monotonic()
    summary = None
    try:
        done = subprocess.run(command, capture_output=True, text=True,
                              timeout=cfg.duration_s + cfg.client_timeout_s + 120)
        if done.returncode == 0 and done.stdout.strip():
            summary = json.loads(done.stdout.strip().splitlines()[-1])
        else:
            level.failure = f"{driver} driver exited {done.returncode}: {done.stderr[-300:]}"
    except subprocess.TimeoutExpired:
        level.failure = f"{driver} driver did not finish in time"
    # The clients stop when the last of them has its answer or gives up; the server's work
    # after that is for nobody. (Work for requests still queued after the last send is work
    # for clients still waiting, not "after the clients stop".)
    end_at = summary["clients_done_at"] if summary else started + cfg.duration_s
    _settle(level, entry, watch, end_at, cfg, cpu_before, started)
    if summary is not None:
        _fill_from_driver(level, summary)
    return level


def _fill_from_driver(level: Level, summary: dict[str, Any]) -> None:
    level.raw = {**level.raw, **summary}
    level.answers = {name: summary["classes"][name]["count"] for name in CLASSES}
    level.latency_ms = {name: {key: summary["classes"][name][key]
                               for key in ("p50_ms", "p99_ms", "max_ms")}
                        for name in CLASSES if summary["classes"][name]["count"]}
    level.goodput_per_s = summary["goodput_per_s"]
    level.refusals_per_s = summary["refusals_per_s"]
    level.late = summary["late_answers"]
    level.client_timeouts = summary["client_timeouts"]
    level.errors = {"connection": summary["connection_errors"],
                    "cap_hits": summary["cap_hits"],
                    "never_sent": summary["timeouts_never_sent"]}
    level.driver_bound = summary["driver_bound"]
    level.driver_why = summary["driver_bound_why"]
    # The driver's own CPU over its sending and waiting, one core.
    level.client_cpu_share = round(summary["driver_cpu_s"] / max(1e-9, summary["driver_wall_s"]),
                                   3)
