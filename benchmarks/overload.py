"""Overload: how each service behaves from half its measured capacity to 30 times it.

    .venv/bin/python -m benchmarks.overload                     # everything (long: ~20 min)
    .venv/bin/python -m benchmarks.overload --services hardened --endpoints get_user \\
        --levels-closed 4,64 --levels-open 1,5 --duration 2       # a smoke run
    .venv/bin/python -m benchmarks.overload --out                 # also build/overload/*.md, *.json

Why: a service's throughput at its best says little about what happens past it. Past capacity
a queue builds; a service that admits everything answers late (after its clients gave up),
keeps working for requests nobody waits for, and its goodput (2xx a second) falls. What a
hardened service should do instead is keep its goodput near its peak, refuse the excess at once
(503), never answer after its deadline, and stop working when the load stops.

Per service (`--services`: hardened, tutorial, async) and endpoint (`--endpoints`:
`POST /users/` at the DEFAULT argon2 cost, and `GET /users/{id}` over ids of seeded users):

1. Peak goodput: wrk, closed loop, at a few client counts (GET 4, 16, 64; POST 1, 2, 4, 8):
   the highest 2xx a second is the peak, and the service's capacity for the open loop.
2. Closed-loop levels (`--levels-closed`, default 4,16,64,256,1000 clients), wrk with a long
   --timeout (15 s) so late answers are counted as answers; answers by status class from a
   Lua response hook (benchmarks/load.py).
3. Open-loop levels (`--levels-open`, default 0.5,1,2,5,10,30 x the peak): seeded Poisson
   arrivals from the open-loop driver, latency from each request's intended send time. The
   driver is benchmarks/openloop.c (built on first use; several times the Python one's
   ceiling) when a C compiler is present, else benchmarks/openloop.py; each level records
   which ran.
4. After each level: the seconds until the server's process is idle (benchmarks/busy.py).

The server runs pinned to one core and the load generator on another (benchmarks/servers.py's
CPU split, `auto`); the hardened service is started as deployed, through its own launcher
(`python -m app.serve`, with its limits at the door), unless `--hardened-launch uvicorn`.
Overload levels are those offering more than capacity: closed-loop levels with more clients
than the peak's, open-loop levels of 2x and more. Results: Markdown tables, then the targets
(MET / MISSED / INCONCLUSIVE); `--out` also writes them and a JSON of every figure. The exit
status is 0 whatever was measured: this is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.load import ensure_wrk, write_scripts
from benchmarks.overload_levels import Level, RunConfig, closed_level, open_level
from benchmarks.overload_report import (
    Peak,
    bottleneck_line,
    judge_targets,
    tables_markdown,
    targets_text,
)
from benchmarks.servers import (
    CpuSplit,
    Served,
    Variant,
    affinity,
    plan_cpus,
    seed_users,
    serving,
)

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "build" / "overload"
SERVICES = ("hardened", "tutorial", "async")
ENDPOINTS = ("create_user", "get_user")
PEAK_CLIENTS = {"get_user": (4, 16, 64), "create_user": (1, 2, 4, 8)}
LEVELS_CLOSED = (4, 16, 64, 256, 1000)
LEVELS_OPEN = (0.5, 1, 2, 5, 10, 30)
CLIENT_TIMEOUT_S = 15
OVERLOAD_MULTIPLE = 2  # open-loop levels from this multiple up count as overload
LATE_MARGIN_S = 0.1


def deadline_s() -> float:
    """The hardened service's DB_DEADLINE_S, as its settings read it (the caller's
    environment included); passed to the server explicitly, so the figure is the one used."""
    try:
        from app.settings import Settings

        return Settings().db_deadline_s
    except Exception as exc:  # app/ is another engineer's work in progress: say, and go on
        fallback = float(os.environ.get("DB_DEADLINE_S", "5.0"))
        print(f"app.settings could not be read ({type(exc).__name__}: {exc}); deadline taken "
              f"as {fallback:g} s", file=sys.stderr)
        return fallback


def service_env(service: str, deadline: float) -> dict[str, str]:
    """The default argon2 cost (no PASSWORD_HASH_* lowering, unlike QUICK_ENV) and a quiet log;
    the hardened service's deadline set explicitly."""
    env = {"LOG_LEVEL": "WARNING"}
    if service == "hardened":
        env["DB_DEADLINE_S"] = repr(deadline)
    return env


def level_seed(seed: int, *parts: object) -> int:
    """A seed per open-loop level, the same for the same run seed (str seeds are hashed with
    SHA-512 by random.Random, not with the per-process hash())."""
    return random.Random("-".join(str(p) for p in (seed, *parts))).randrange(2**31)


def measure_endpoint(cfg: RunConfig, entry: Served, service: str, endpoint: str,
                     closed: list[int], multiples: list[float], seed: int
                     ) -> tuple[list[Level], Peak]:
    """Peak first (its runs double as closed-loop levels), then the other closed-loop levels,
    then the open loop at multiples of the peak."""
    runs: dict[int, Level] = {}
    for clients in sorted(set(PEAK_CLIENTS[endpoint]) | set(closed)):
        runs[clients] = closed_level(cfg, entry, service, endpoint, clients)
        runs[clients].peak_run = clients in PEAK_CLIENTS[endpoint]
        _progress(runs[clients])
    peak_level = max((runs[c] for c in PEAK_CLIENTS[endpoint]), key=lambda lv: lv.goodput_per_s)
    peak = Peak(service, endpoint, peak_level.goodput_per_s, peak_level.clients or 0)
    print(f"  {service} {endpoint}: peak {peak.goodput_per_s:.1f}/s at c={peak.clients}",
          file=sys.stderr)
    levels = [runs[c] for c in sorted(runs) if c in closed or runs[c].peak_run]
    for multiple in multiples:
        if peak.goodput_per_s <= 0:
            print(f"  {service} {endpoint}: no 2xx at all: the open loop has no capacity to "
                  "scale, skipped", file=sys.stderr)
            break
        level = open_level(cfg, entry, service, endpoint, multiple, peak.goodput_per_s,
                           level_seed(seed, service, endpoint, multiple))
        _progress(level)
        levels.append(level)
    for level in levels:
        level.goodput_ratio = (round(level.goodput_per_s / peak.goodput_per_s, 3)
                               if peak.goodput_per_s > 0 else None)
        level.overload = (level.clients > peak.clients if level.model == "closed"
                          else (level.multiple or 0) >= OVERLOAD_MULTIPLE)
    return levels, peak


def measure_service(cfg: RunConfig, args: argparse.Namespace, split: CpuSplit, service: str,
                    deadline: float, seed: int
                    ) -> tuple[list[Level], dict[tuple[str, str], Peak]]:
    """One server for all of a service's levels, seeded with `--seed-users` users."""
    levels: list[Level] = []
    peaks: dict[tuple[str, str], Peak] = {}
    deployed = service == "hardened" and args.hardened_launch == "serve"
    with serving(Variant(service), wrapper=split.wrapper, env=service_env(service, deadline),
                 deployed=deployed) as server:
        entry = Served(server)
        started = time.monotonic()
        entry.ids = seed_users(server.base_url, args.seed_users, f"ov{seed}")
        print(f"{service}: {args.seed_users} users seeded in "
              f"{time.monotonic() - started:.1f} s", file=sys.stderr)
        for endpoint in args.endpoints:
            found, peak = measure_endpoint(cfg, entry, service, endpoint, args.levels_closed,
                                           args.levels_open, seed)
            levels += found
            peaks[(service, endpoint)] = peak
    return levels, peaks


def _progress(level: Level) -> None:
    busy = "capped" if level.busy_after_stop_s is None else f"{level.busy_after_stop_s:.2f} s"
    print(f"  {level.service:9} {level.endpoint:11} {level.model:6} {level.label:7} "
          f"goodput {level.goodput_per_s:9.1f}/s  503/s {level.refusals_per_s:8.1f}  "
          f"late {level.late}  timeouts {level.client_timeouts}  busy after {busy}"
          + ("  DRIVER-BOUND" if level.driver_bound else "")
          + (f"  FAILED {level.failure}" if level.failure else ""), file=sys.stderr)


def _floats(text: str) -> list[float]:
    values = [float(part) for part in text.split(",") if part.strip()]
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError("a comma-separated list of positive numbers")
    return values


def _names(allowed: tuple[str, ...]) -> Any:
    def parse(text: str) -> list[str]:
        names = [part.strip() for part in text.split(",") if part.strip()]
        if not names or set(names) - set(allowed):
            raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed)}")
        return list(dict.fromkeys(names))

    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.overload",
                                     description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--services", type=_names(SERVICES), default=list(SERVICES),
                        help="comma-separated: hardened,tutorial,async (default all three)")
    parser.add_argument("--endpoints", type=_names(ENDPOINTS), default=list(ENDPOINTS),
                        help="comma-separated: create_user,get_user (default both)")
    parser.add_argument("--levels-closed", type=_floats, default=list(LEVELS_CLOSED),
                        help="wrk client counts (default 4,16,64,256,1000)")
    parser.add_argument("--levels-open", type=_floats, default=list(LEVELS_OPEN),
                        help="multiples of the peak goodput (default 0.5,1,2,5,10,30)")
    parser.add_argument("--duration", type=int, default=8, help="seconds per level (8)")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the open-loop arrival schedules (default: from the clock)")
    parser.add_argument("--seed-users", type=int, default=50,
                        help="users created before the runs, the ids GET reads (50)")
    parser.add_argument("--busy-cap", type=float, default=30.0,
                        help="longest wait, in seconds, for the server to go idle (30)")
    parser.add_argument("--server-cpus", default="auto",
                        help="as benchmarks/bench.py: auto (default), off, or e.g. 0")
    parser.add_argument("--hardened-launch", choices=("serve", "uvicorn"), default="serve",
                        help="hardened service through python -m app.serve (default: as "
                             "deployed) or bare uvicorn (as benchmarks/bench.py serves it)")
    parser.add_argument("--out", nargs="?", const=str(OUT_DIR), default=None,
                        help=f"write overload.md and overload.json (default folder {OUT_DIR})")
    args = parser.parse_args(argv)
    if args.duration < 1:
        parser.error("--duration: whole seconds, at least 1 (wrk takes whole seconds)")
    args.levels_closed = sorted({int(c) for c in args.levels_closed})
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    seed = args.seed if args.seed is not None else int(time.time()) % 1_000_000
    print(f"seed: {seed} (--seed {seed} repeats the open-loop arrival schedules)", flush=True)
    deadline = deadline_s()
    late_after = round(deadline + LATE_MARGIN_S, 3)
    split = plan_cpus(args.server_cpus)
    wrk = ensure_wrk()
    meta: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m benchmarks.overload", *(argv or sys.argv[1:])]),
        "seed": seed, "db_deadline_s": deadline, "late_after_s": late_after,
        "cpu_split": split.describe(), "python": platform.python_version(),
        "load_average_before": os.getloadavg(),
        "wrk": subprocess.run([wrk, "-v"], capture_output=True, text=True).stdout.split(
            "\n")[0].strip(),
        "hardened_launch": args.hardened_launch, "argon2": "default cost (no PASSWORD_HASH_*)",
    }
    print(f"CPU split: {split.describe()}; deadline {deadline:g} s, late after {late_after:g} s",
          file=sys.stderr)
    levels: list[Level] = []
    peaks: dict[tuple[str, str], Peak] = {}
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="overload-lua-")))
        cfg = RunConfig(wrk, write_scripts(tmp, answer_classes=True, late_after_s=late_after),
                        args.duration, CLIENT_TIMEOUT_S, late_after, args.busy_cap,
                        len(split.client) if split.client else os.cpu_count() or 1)
        # This process and what it starts (wrk, the driver) stay off the server's CPUs.
        stack.enter_context(affinity(split.client))
        for service in args.services:
            try:
                found, service_peaks = measure_service(cfg, args, split, service, deadline,
                                                       seed)
            except Exception as exc:  # a service that cannot be measured is reported, not fatal
                print(f"{service}: not measured: {type(exc).__name__}: {exc}", file=sys.stderr)
                meta.setdefault("not_measured", {})[service] = f"{type(exc).__name__}: {exc}"
                continue
            levels += found
            peaks.update(service_peaks)
    peers = [s for s in args.services if s != "hardened"]
    tables = tables_markdown(levels, peaks, late_after, args.busy_cap)
    verdicts = (judge_targets(levels, peaks, late_after, peers)
                if "hardened" in args.services else [])
    text = "\n".join([tables, bottleneck_line(levels), "",
                      targets_text(verdicts, late_after) if verdicts
                      else "Targets: the hardened service was not measured."])
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "overload.md").write_text(f"Seed {seed}; {split.describe()}.\n\n{text}\n")
        (out / "overload.json").write_text(json.dumps({
            **meta, "peaks": [asdict(p) for p in peaks.values()],
            "levels": [asdict(lv) for lv in levels],
            "targets": [asdict(v) for v in verdicts]}, indent=2))
        print(f"written: {out / 'overload.md'}, {out / 'overload.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
