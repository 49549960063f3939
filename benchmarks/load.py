"""The benchmark's one load driver: wrk, a Lua script per endpoint, one figures line per run.

    scripts = write_scripts(folder)
    run = WrkRun.start(wrk, base_url, "get_user", concurrency=16, duration_s=5, timeout_s=5,
                       scripts=scripts, script_args=["1", "200"], cpus="1")
    figures = run.result()          # wait for it; several runs may overlap

`cpus` runs wrk under `taskset -c CPUS`, so the load generator and a pinned server do not
take each other's CPU time.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlite_faults.server import ServerProcess

from benchmarks.bench_app import HASH_ONLY_PATH

# What Debian's wrk (4.1.0) reports, and what it does not: its text output has no p95
# (`--latency` prints 50/75/90/99), and it counts a "timeout" only for a response that
# arrives later than --timeout (leaving it out of the latency figures); a request still
# unanswered when the run stops is counted nowhere (and a healthy server has one in flight per
# connection at that moment too, so counting them would not tell a stall apart). So every
# script ends with a `done` hook printing the run's figures on one marked line, and the stall
# is judged by asking the server right after the run (`answered_after`). Percentiles are in
# µs, after wrk's own correction for coordinated omission.
_DONE = r"""
threads = {}
function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_no", #threads)
end
function done(summary, latency, requests)
  io.write(string.format(
    "BENCH_JSON {\"requests\":%d,\"duration_us\":%d,\"p50_us\":%.0f,\"p95_us\":%.0f," ..
    "\"p99_us\":%.0f,\"max_us\":%.0f,\"connect\":%d,\"read\":%d,\"write\":%d," ..
    "\"status\":%d,\"timeout\":%d%s}\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(95),
    latency:percentile(99), latency.max, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.status, summary.errors.timeout,
    extra_figures and extra_figures(latency) or ""))
end
"""

# Answers by status class, for the overload benchmark (benchmarks/overload.py), where a fast
# 503 and a 2xx must not be one "request": a `response` hook per thread counts 2xx, 503, 504
# and other statuses in that thread's Lua state; `done` (main state) adds them up through the
# thread objects `setup` kept. Defining `response` makes wrk keep every response's headers and
# body for the hook, a client cost the plain scripts do not pay, so it is opt-in.
#
# wrk has no per-class latency, and `done` sees only its latency histogram, corrected for
# coordinated omission (synthetic samples added below each slow one): so the share of answers
# later than LATE_AFTER_US is found by bisection over latency:percentile(p) (the smallest p
# whose percentile is above it). It is an estimate (the synthetic samples are in it); it is
# exactly 0 when latency.max is not above the limit, and max is always a real answer.
_ANSWER_CLASSES = r"""
answers_2xx, answers_503, answers_504, answers_other = 0, 0, 0, 0
function response(status, headers, body)
  if status >= 200 and status < 300 then answers_2xx = answers_2xx + 1
  elseif status == 503 then answers_503 = answers_503 + 1
  elseif status == 504 then answers_504 = answers_504 + 1
  else answers_other = answers_other + 1 end
end
local late_after_us = LATE_AFTER_US
local function above(latency, p)
  local value = latency:percentile(p)
  return value == 0 or value > late_after_us  -- 0: the rank is past the last sample (max)
end
function late_share(latency)
  if latency.max <= late_after_us then return 0 end
  local low, high = 0, 100  -- above(high) holds; above(low) may not
  for _ = 1, 30 do  -- 100 / 2^30: finer than one answer in 10^9
    local mid = (low + high) / 2
    if above(latency, mid) then high = mid else low = mid end
  end
  return (100 - high) / 100
end
function extra_figures(latency)
  local sums = {0, 0, 0, 0}
  for _, thread in ipairs(threads) do
    sums[1] = sums[1] + thread:get("answers_2xx")
    sums[2] = sums[2] + thread:get("answers_503")
    sums[3] = sums[3] + thread:get("answers_504")
    sums[4] = sums[4] + thread:get("answers_other")
  end
  return string.format(
    ",\"answers_2xx\":%d,\"answers_503\":%d,\"answers_504\":%d,\"answers_other\":%d," ..
    "\"late_after_us\":%d,\"late_share\":%.9f",
    sums[1], sums[2], sums[3], sums[4], late_after_us, late_share(latency))
end
"""

# Unique names without coordination: a prefix per run (script argument), a number per wrk
# thread (handed out by `setup`, which runs in the main Lua state) and a counter per thread.
# POST_PATH is replaced per endpoint: a create and the hash-only reference send the same body.
_POST_UNIQUE_NAMES = _DONE + r"""
local prefix
local counter = 0
function init(args)
  prefix = args[1] .. "-" .. thread_no
  wrk.headers["Content-Type"] = "application/json"
end
function request()
  counter = counter + 1
  local body = string.format('{"name":"%s-%d","password":"benchmark password"}',
                             prefix, counter)
  return wrk.format("POST", "POST_PATH", nil, body)
end
"""

SCRIPTS = {
    # Built per request in Lua like the others (wrk's static path would be cheaper on the
    # client), so every endpoint pays the same client cost and their ratios compare like
    # with like.
    "healthz": _DONE + r"""
local req
function init(args)
  req = wrk.format("GET", "/healthz")
end
function request()
  return req
end
""",
    # Round-robin over ids known to exist, so every answer is a 200 that read a row.
    "get_user": _DONE + r"""
local first, count, n
function init(args)
  first = tonumber(args[1])
  count = tonumber(args[2]) - first + 1
  n = math.random(count)
end
function request()
  n = n + 1
  return wrk.format("GET", "/users/" .. (first + n % count))
end
""",
    "create_user": _POST_UNIQUE_NAMES.replace("POST_PATH", "/users/"),
    # The hash-only reference (hardened service only): a create's body and hash, no database.
    "hash_only": _POST_UNIQUE_NAMES.replace("POST_PATH", HASH_ONLY_PATH),
}
ENDPOINT_PATHS = {"healthz": "/healthz", "get_user": "/users/", "create_user": "/users/",
                  "hash_only": HASH_ONLY_PATH}


def write_scripts(folder: Path, answer_classes: bool = False,
                  late_after_s: float | None = None) -> dict[str, Path]:
    """Every endpoint's script in `folder`. `answer_classes` adds the answers-by-status hook
    and the share of answers later than `late_after_s` (its figures join the BENCH_JSON line:
    answers_2xx, answers_503, answers_504, answers_other, late_after_us, late_share)."""
    paths = {}
    extra = ""
    if answer_classes:
        if late_after_s is None:
            raise ValueError("answer_classes needs late_after_s")
        extra = _ANSWER_CLASSES.replace("LATE_AFTER_US", str(round(late_after_s * 1e6)))
    for name, text in SCRIPTS.items():
        paths[name] = folder / f"{name}.lua"
        paths[name].write_text(extra + text)
    return paths


def script_args(endpoint: str, ids: tuple[int, int], tag: str) -> list[str]:
    """The GET script reads the id range; the POST scripts a name prefix unique to the run."""
    if endpoint == "get_user":
        return [str(ids[0]), str(ids[1])]
    if endpoint in ("create_user", "hash_only"):
        return [f"{tag}-{time.monotonic_ns()}"]
    return []


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk is missing: installing it from Debian's packages (apt-get install wrk)",
              file=sys.stderr)
        # Install first; only a stale package list needs an update, and it costs a download.
        if subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"],
                          stdout=subprocess.DEVNULL).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], check=True)
            subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True,
                           stdout=subprocess.DEVNULL)
        found = shutil.which("wrk")
        if found:
            return found
    sys.exit("wrk is needed: install it with `sudo apt-get install wrk` (Debian/Ubuntu), "
             "then run this script again.")


@dataclass
class WrkFigures:
    figures: dict[str, Any]  # from the script's done hook
    per_sec: float  # wrk's own Requests/sec
    output: str


def _seconds(value: float) -> str:
    """wrk's time arguments take whole numbers only ("9.0s" is a usage error)."""
    if value != int(value) or value < 1:
        raise ValueError(f"wrk needs whole seconds, got {value}")
    return f"{int(value)}s"


class WrkRun:
    """One bounded wrk run in the background; `result()` waits for it and parses it."""

    def __init__(self, proc: subprocess.Popen[str], limit_s: float) -> None:
        self._proc = proc
        self._limit_s = limit_s

    @classmethod
    def start(cls, wrk: str, base_url: str, endpoint: str, *, concurrency: int,
              duration_s: float, timeout_s: float, scripts: dict[str, Path],
              script_args: list[str], cpus: str | None = None) -> WrkRun:
        command = [
            wrk, "-t", str(min(2, concurrency)), "-c", str(concurrency),
            "-d", _seconds(duration_s), "--timeout", _seconds(timeout_s), "--latency",
            "-s", str(scripts[endpoint]), base_url + ENDPOINT_PATHS[endpoint],
            "--", *script_args,
        ]
        if cpus is not None:
            command = ["taskset", "-c", cpus, *command]
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        # wrk stops within 0.1 s of -d (its rate timer checks the stop flag), answered or
        # not; the margin only guards against wrk itself hanging.
        return cls(proc, duration_s + timeout_s + 30)

    def result(self) -> WrkFigures:
        try:
            stdout, stderr = self._proc.communicate(timeout=self._limit_s)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.communicate()
            raise
        marked = re.search(r"^BENCH_JSON (\{.*\})$", stdout, re.MULTILINE)
        per_sec = re.search(r"^Requests/sec:\s+([\d.]+)", stdout, re.MULTILINE)
        if self._proc.returncode != 0 or marked is None or per_sec is None:
            raise RuntimeError(f"wrk failed ({self._proc.returncode}):\n{stdout}\n{stderr}")
        return WrkFigures(json.loads(marked.group(1)), float(per_sec.group(1)), stdout)


@dataclass
class Cell:
    service: str  # a service variant's label: hardened, hardened-full, tutorial, ...
    endpoint: str
    concurrency: int
    backend: str = "sqlite"
    server_cpus: str = "unpinned"  # the CPUs the server was pinned to (taskset -c)
    requests: int = 0
    rps: float = 0.0
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    non_2xx: int = 0
    socket_errors: int = 0  # connect + read + write
    late: int = 0  # answered after more than --timeout (wrk's "timeout"): not in percentiles
    # Did the server answer GET /readyz within 2 s right after the run? A stalled one does not
    # (and is restarted on the same data folder before the next run).
    answered_after: bool = True
    ratios: dict[str, float | None] = field(default_factory=dict)
    wrk_output: str = ""

    @property
    def errors(self) -> int:
        return self.non_2xx + self.socket_errors + self.late


def _ms(us: float, requests: int) -> float | None:
    return round(us / 1000, 3) if requests else None


def to_cell(run: WrkFigures, service: str, endpoint: str, concurrency: int,
            backend: str = "sqlite", server_cpus: str = "unpinned") -> Cell:
    figures = run.figures
    requests = figures["requests"]
    return Cell(
        service, endpoint, concurrency, backend, server_cpus,
        requests=requests,
        rps=run.per_sec,
        p50_ms=_ms(figures["p50_us"], requests),
        p95_ms=_ms(figures["p95_us"], requests),
        p99_ms=_ms(figures["p99_us"], requests),
        max_ms=_ms(figures["max_us"], requests),
        non_2xx=figures["status"],
        socket_errors=figures["connect"] + figures["read"] + figures["write"],
        late=figures["timeout"],
        wrk_output=run.output,
    )


@dataclass(frozen=True)
class LoadConfig:
    """What every wrk run of one benchmark shares."""

    wrk: str
    duration_s: float
    timeout_s: float  # a response slower than this is left out of the percentiles ("late")
    scripts: dict[str, Path]


def measure(load: LoadConfig, server: ServerProcess, service: str, endpoint: str,
            concurrency: int, ids: tuple[int, int], backend: str = "sqlite",
            client_cpus: str | None = None, server_cpus: str = "unpinned") -> Cell:
    """One wrk run against `server`, then whether it still answers."""
    run = WrkRun.start(load.wrk, server.base_url, endpoint, concurrency=concurrency,
                       duration_s=load.duration_s, timeout_s=load.timeout_s,
                       scripts=load.scripts,
                       script_args=script_args(endpoint, ids, f"c{concurrency}"),
                       cpus=client_cpus)
    cell = to_cell(run.result(), service, endpoint, concurrency, backend, server_cpus)
    cell.answered_after = server.answers_ready_now()
    return cell


def add_ratios(cells: list[Cell]) -> None:
    """Each cell against /healthz of the same server at the same concurrency (None where
    that server's /healthz was not measured)."""
    base = {(c.service, c.backend, c.server_cpus, c.concurrency): c
            for c in cells if c.endpoint == "healthz"}

    def ratio(value: float | None, reference: float | None) -> float | None:
        if value is None or not reference:
            return None
        return round(value / reference, 3)

    for cell in cells:
        ref = base.get((cell.service, cell.backend, cell.server_cpus, cell.concurrency))
        cell.ratios = {
            key: ratio(getattr(cell, attr), getattr(ref, attr) if ref else None)
            for key, attr in (("rps", "rps"), ("p50", "p50_ms"), ("p95", "p95_ms"),
                              ("p99", "p99_ms"))
        }
