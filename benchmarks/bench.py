"""Throughput and latency of the hardened service beside its peers and the naive baseline.

    .venv/bin/python benchmarks/bench.py --targets            # issue 11's targets, MET/MISSED
    .venv/bin/python benchmarks/bench.py                      # the table: hardened and peers
    .venv/bin/python benchmarks/bench.py --stall-probe        # the naive pool-exhaustion stall
    .venv/bin/python benchmarks/bench.py --services naive --concurrency 1,16 --duration 3
    .venv/bin/python benchmarks/bench.py --services hardened --backend sqlite,postgres
    .venv/bin/python benchmarks/bench.py --services hardened --synchronous NORMAL,FULL

Services (`--services`): `hardened` (this repository's service, served through
benchmarks/bench_app.py, which adds the hash-only reference route), two peers written the way
a user would otherwise write the same API, `tutorial` (FastAPI's SQL tutorial pattern) and
`async` (SQLAlchemy's asyncio engine over aiosqlite), both in examples/, and `naive` (the seed
report's baseline, which stalls at 16 clients; not run unless named).

Benchmark mode: each service runs in a real uvicorn process (`sqlite_faults.server.ServerProcess`, a
temporary data folder, argon2 at its cheapest cost). 200 users are created first; then `wrk`
drives, at each concurrency (`--concurrency`, default 1, 16, 64): `GET /healthz` (no
database: the ceiling of the HTTP stack on this machine), then `GET /users/{id}` over the
existing ids, then `POST /users/` with unique names, and for the hardened service
`POST /_bench/hash-only` (the same body and hash as a create, no database). Every figure is
also given as a ratio to `/healthz` of the same server at the same concurrency, because this
machine is shared and its absolute numbers drift from run to run. Services take turns at each
concurrency. Each wrk run stops at `--duration` whether or not its requests were answered, so
a stalled server shows as a collapse in answered requests and as a server that does not
answer `GET /readyz` within 2 s afterwards (`answered after: no`), not as a hung script; a
stalled server is then restarted on the same data folder for the next run.

`--synchronous NORMAL,FULL` adds the hardened service under `SQLITE_SYNCHRONOUS=FULL` as a
variant of its own (`hardened-full`, `/healthz` and `POST /users/`).

Pinning (`--server-cpus`, default `auto`): servers run under `taskset -c` on their CPUs, and
wrk (with the benchmark itself and any lock holder) on the others, so the load generator and
the server do not take each other's CPU time. `auto` gives wrk the last usable CPU and the
servers the rest: on a 2-CPU machine, the server on CPU 0 alone and wrk on CPU 1. `off` shares
every CPU (how the figures before issue 11 were taken). `--pinned-one-core` runs everything
again with the server on a single core, unless the split already gives it one.

`--backend` picks the hardened service's database: `sqlite` (default), `postgres` (a
throwaway PostgreSQL server started for the run, `sqlite_faults.postgres_server.PostgresServer`, a
fresh database per service, on the servers' CPUs), or both, `sqlite,postgres`, which take
turns like services do. The peers and the naive baseline are SQLite-only: they run on the
sqlite backend and are left out of the others.

Targets mode (`--targets`, benchmarks/targets.py): exactly the runs issue 11's targets need,
one line per target with its ratio, threshold and MET/MISSED; exit status 0 only if all are
met.

Stall-probe mode: asyncio + httpx clients (each its own connection, every request under a
client timeout) read users for `--duration` seconds while a monitor asks `GET /healthz`
every 0.1 s; a fresh server per concurrency level. It reports the longest stretch in which
the server answered nothing at all, /healthz included: the event loop itself was blocked.
It runs unpinned: its clients are this process.

Output: a Markdown table on stdout, JSON and Markdown in build/bench/.
wrk comes from Debian's packages: installed with apt-get when missing and running as root.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

# Run as a script, this file's folder is on sys.path and the repository root is not.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sqlite_faults.ledger import WriteLedger
from sqlite_faults.postgres_server import PostgresServer, pg_bin_dir
from sqlite_faults.traffic import LoadGenerator

from benchmarks.load import Cell, LoadConfig, add_ratios, ensure_wrk, write_scripts
from benchmarks.servers import (
    SERVICES,
    SQLITE_ONLY,
    CpuSplit,
    Variant,
    affinity,
    cpu_sets,
    plan_cpus,
    serve_all,
    serving,
)
from benchmarks.tables import cells_markdown
from benchmarks.targets import run_plan, run_targets
from examples.targets import USERS_WRITE

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "build" / "bench"
BACKENDS = ("sqlite", "postgres")
DEFAULT_SERVICES = ["hardened", "tutorial", "async"]
ENDPOINTS = ("healthz", "get_user", "create_user")


def endpoints_of(variant: Variant) -> tuple[str, ...]:
    if variant.service != "hardened":
        return ENDPOINTS
    if variant.synchronous != "NORMAL":
        return ("healthz", "create_user")  # what FULL changes is the commit
    return (*ENDPOINTS, "hash_only")


# ---------------------------------------------------------------------------- benchmark


def run_benchmark(variants: list[Variant], load: LoadConfig, concurrencies: list[int],
                  splits: list[CpuSplit], postgres: PostgresServer | None = None
                  ) -> list[Cell]:
    """Each CPU split in turn: every variant's server, then the runs. `postgres` serves every
    variant on the postgres backend, each with a database of its own."""
    cells: list[Cell] = []
    for number, split in enumerate(splits):
        print(f"CPU set {number + 1}: {split.describe()}", file=sys.stderr)
        cells += run_split(variants, load, concurrencies, split, number, postgres)
    add_ratios(cells)
    return cells


def run_split(variants: list[Variant], load: LoadConfig, concurrencies: list[int],
              split: CpuSplit, number: int, postgres: PostgresServer | None) -> list[Cell]:
    cells: list[Cell] = []
    with serve_all(variants, split, postgres, tag=f"_{number}") as served:
        # Services (and backends) take turns at each concurrency (the idle one waits,
        # unloaded), so a change in the machine's background load mid-run does not favour one
        # of them.
        plan = [(variant, endpoint, concurrency) for concurrency in concurrencies
                for variant in served for endpoint in endpoints_of(variant)]
        cells += run_plan(plan, served, split, load)
    return cells


# ---------------------------------------------------------------------------- stall probe


@dataclass
class ProbeLevel:
    service: str
    concurrency: int
    duration_s: float
    request_timeout_s: float
    ok: int = 0
    other_status: dict[str, int] = field(default_factory=dict)
    timeouts: int = 0
    transport_errors: int = 0
    healthz_asked: int = 0
    healthz_answered: int = 0
    longest_silence_s: float = 0.0  # longest stretch with no answer to anything
    first_silence_at_s: float | None = None  # when that stretch began, from the start
    # Every stretch of more than a second with no answer: [began at (s), length (s)].
    silences_over_1s: list[list[float]] = field(default_factory=list)


async def probe_level(service: str, concurrency: int, duration_s: float,
                      request_timeout_s: float) -> ProbeLevel:
    level = ProbeLevel(service, concurrency, duration_s, request_timeout_s)
    answered_at: list[float] = []  # completion times of every answer, any status
    with serving(Variant(service)) as server:
        # The toolkit's traffic driver: `concurrency` readers, each with its own request in
        # flight (a connection each, through its lean transport: through httpx's pool a
        # client slower than the server offered too little load to reproduce the stall),
        # reading back users seeded through the ledger.
        ledger = WriteLedger(random.Random(concurrency), USERS_WRITE, prefix="probe")
        await ledger.seed(server.base_url, 20)
        readers = LoadGenerator.writers(ledger, 0, random.Random(concurrency),
                                        readers=concurrency, timeout_s=request_timeout_s)
        end = time.monotonic() + duration_s

        def monitor() -> None:
            # On its own thread, so a busy client loop does not delay the health checks.
            with httpx.Client(base_url=server.base_url, timeout=1.0) as health:
                while time.monotonic() < end:
                    level.healthz_asked += 1
                    with contextlib.suppress(httpx.HTTPError):
                        if health.get("/healthz").status_code == 200:
                            level.healthz_answered += 1
                            answered_at.append(time.monotonic())
                    time.sleep(0.1)  # the probe's pace, not synchronisation

        readers.start(server.base_url)
        start = readers.started
        await asyncio.to_thread(monitor)
        await readers.stop()
    for sample in readers.samples:
        if sample.status == 200:
            level.ok += 1
        elif sample.status:
            key = str(sample.status)
            level.other_status[key] = level.other_status.get(key, 0) + 1
        elif sample.code == "ClientTimeout":
            level.timeouts += 1
        else:
            level.transport_errors += 1
        if sample.status:
            answered_at.append(start + sample.answered)

    # Silence inside the measured window only: edges count, late answers do not.
    marks = [start, *sorted(t for t in answered_at if t < end), end]
    gaps = [(b - a, a) for a, b in itertools.pairwise(marks)]
    longest, began = max(gaps)
    level.longest_silence_s = round(longest, 2)
    level.first_silence_at_s = round(began - start, 2)
    level.silences_over_1s = [[round(at - start, 2), round(length, 2)]
                              for length, at in gaps if length > 1.0]
    return level


def probe_markdown(levels: list[ProbeLevel]) -> str:
    lines = [
        "| service | clients | 200s | other statuses | client timeouts | /healthz answered "
        "| longest silence (s) | silence began at (s) |",
        "|---|--:|--:|---|--:|--:|--:|--:|",
    ]
    for lv in levels:
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(lv.other_status.items())) or "-"
        lines.append(
            f"| {lv.service} | {lv.concurrency} | {lv.ok} | {statuses} "
            f"| {lv.timeouts + lv.transport_errors} "
            f"| {lv.healthz_answered}/{lv.healthz_asked} | {lv.longest_silence_s:.2f} "
            f"| {lv.first_silence_at_s:.2f} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------- main


def _ints(text: str) -> list[int]:
    values = [int(part) for part in text.split(",") if part.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("a comma-separated list of positive integers")
    return values


def _choices(allowed: tuple[str, ...] | list[str], upper: bool = False) -> Any:
    def parse(text: str) -> list[str]:
        names = [part.strip() for part in text.split(",") if part.strip()]
        if upper:
            names = [name.upper() for name in names]
        if not names or set(names) - set(allowed):
            raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed)}")
        return list(dict.fromkeys(names))

    return parse


def plan_variants(services: list[str] | None, backends: list[str],
                  synchronous: list[str]) -> list[Variant]:
    """The server processes to measure. The peers and the naive baseline run on SQLite only:
    by default they are left out of other backends; asked for by name with no sqlite backend,
    they are refused. `FULL` adds the hardened service under synchronous=FULL on SQLite."""
    named_sqlite_only = set(services or []) & SQLITE_ONLY
    if named_sqlite_only and "sqlite" not in backends:
        raise SystemExit(f"{', '.join(sorted(named_sqlite_only))}: SQLite-only services: add "
                         "sqlite to --backend, or leave them out of --services")
    variants = []
    for backend in backends:
        for service in services or DEFAULT_SERVICES:
            if service in SQLITE_ONLY and backend != "sqlite":
                continue
            levels = synchronous if service == "hardened" and backend == "sqlite" else ["NORMAL"]
            variants += [Variant(service, backend, level) for level in levels]
    return variants


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=None,
                        help="seconds per run (default 5; stall probe: 8)")
    parser.add_argument("--services", type=_choices(list(SERVICES)), default=None,
                        help="comma-separated: hardened,tutorial,async,naive (default "
                             "hardened,tutorial,async; stall probe: hardened,naive; all but "
                             "hardened run on the sqlite backend only)")
    parser.add_argument("--backend", type=_choices(BACKENDS), default=["sqlite"],
                        help="comma-separated: sqlite,postgres (default sqlite); postgres "
                             "starts a throwaway PostgreSQL server for the run")
    parser.add_argument("--synchronous", type=_choices(("NORMAL", "FULL"), upper=True),
                        default=["NORMAL"],
                        help="comma-separated SQLITE_SYNCHRONOUS levels of the hardened "
                             "service: NORMAL,FULL (default NORMAL); FULL runs as hardened-full")
    parser.add_argument("--concurrency", type=_ints, default=None,
                        help="comma-separated client counts (default 1,16,64; "
                             "stall probe: 4,15,16,64)")
    parser.add_argument("--timeout", type=int, default=None,
                        help="client timeout in seconds (default: the duration; "
                             "stall probe: 2)")
    parser.add_argument("--server-cpus", default="auto",
                        help="CPUs for the servers (taskset -c), wrk on the others: auto "
                             "(default: all but the last usable CPU), off, or e.g. 0 or 0-2")
    parser.add_argument("--pinned-one-core", action="store_true",
                        help="also run with the server on one core (if it has more)")
    parser.add_argument("--stall-probe", action="store_true",
                        help="measure the naive pool-exhaustion stall instead")
    parser.add_argument("--targets", action="store_true",
                        help="run what issue 11's targets need and judge them "
                             "(build/bench/targets.json, targets.md)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="--targets: rounds of the single-server ratio runs, each ratio "
                             "judged by its median over the rounds (default 3)")
    parser.add_argument("--lock-duration", type=int, default=None,
                        help="--targets: seconds of each lock-pulse phase (default 3x "
                             "--duration, at least 5: a 2 s pulse every 5 s)")
    args = parser.parse_args(argv)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["benchmarks/bench.py", *(argv or sys.argv[1:])]),
        "cpus": os.cpu_count(),
        "usable_cpus": sorted(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": os.getloadavg(),
    }

    if args.stall_probe:
        if args.backend != ["sqlite"]:
            # The probe is about the naive baseline's pool stall, which is SQLite-only.
            parser.error("--stall-probe runs on the sqlite backend only")
        services = args.services or ["hardened", "naive"]
        concurrencies = args.concurrency or [4, 15, 16, 64]
        duration = args.duration or 8
        timeout = args.timeout or 2
        levels = [
            asyncio.run(probe_level(service, c, duration, timeout))
            for service in services for c in concurrencies
        ]
        table = probe_markdown(levels)
        (OUT_DIR / "stall.json").write_text(json.dumps(
            {**meta, "levels": [asdict(lv) for lv in levels]}, indent=2))
        (OUT_DIR / "stall.md").write_text(table + "\n")
        print(table)
        return 0

    if args.targets and (args.services or args.concurrency or args.backend != ["sqlite"]
                         or args.synchronous != ["NORMAL"]):
        parser.error("--targets runs a fixed plan: only --duration, --timeout, "
                     "--lock-duration and --server-cpus apply")
    variants = plan_variants(args.services, args.backend, args.synchronous)
    if "postgres" in args.backend and pg_bin_dir() is None:
        sys.exit("--backend postgres starts its own throwaway PostgreSQL server and needs "
                 "initdb and pg_ctl: apt-get install postgresql")
    wrk = ensure_wrk()
    meta["wrk"] = subprocess.run([wrk, "-v"], capture_output=True, text=True).stdout.split(
        "\n")[0].strip()
    split = plan_cpus(args.server_cpus)
    duration = args.duration or 5
    # A response slower than --timeout is left out of wrk's percentiles: by default none is,
    # since no response can take longer than the run.
    timeout = args.timeout or duration
    meta.update(duration_s=duration, timeout_s=timeout)
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-lua-"))
        load = LoadConfig(wrk, duration, timeout, write_scripts(Path(tmp)))
        postgres = None
        if "postgres" in args.backend:
            with affinity(split.server):  # its processes inherit the servers' CPUs
                postgres = stack.enter_context(PostgresServer())
            meta["postgres"] = postgres.psql("SHOW server_version").strip()
        # This process, and what it starts besides the servers (wrk, lock holders), stays
        # off the servers' CPUs.
        stack.enter_context(affinity(split.client))
        if args.targets:
            lock_duration = args.lock_duration or max(5, 3 * duration)
            meta["lock_duration_s"] = lock_duration
            meta["rounds"] = args.rounds
            return run_targets(split, load, lock_duration, meta, OUT_DIR, args.rounds)
        splits = cpu_sets(split) if args.pinned_one_core else [split]
        meta["cpu_sets"] = [s.describe() for s in splits]
        cells = run_benchmark(variants, load, args.concurrency or [1, 16, 64], splits,
                              postgres)
    table = cells_markdown(cells)
    (OUT_DIR / "bench.json").write_text(json.dumps(
        {**meta, "cells": [asdict(c) for c in cells]}, indent=2))
    (OUT_DIR / "bench.md").write_text(
        f"CPU sets: {'; '.join(meta['cpu_sets'])}.\n\n{table}\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
