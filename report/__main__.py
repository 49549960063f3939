"""The main job: judge the service against database-layer faults, and print the report.

    python -m report                 the hardened service on the scenario matrix
    python -m report --compare       the naive baseline too, side by side, in the same run
    python -m report --backend postgres
                                     the hardened service on PostgreSQL: a throwaway server
                                     is started for the run, a fresh database per service

On PostgreSQL the scenarios whose fault only exists for SQLite's files (slow-fsync-pulses,
disk-full) are reported as skipped with the reason, and postgres-immediate-stop (the server
stopped abruptly and restarted) joins the matrix. The naive baseline is SQLite-only (it is the
service as the seed report describes it, on SQLite's defaults), so --compare needs the sqlite
backend: with --backend postgres it is refused rather than silently judged on another
database.

Writes report.md, report.json and report.png to build/report/ (or --out) and prints the
Markdown report. Exit status 0 when the hardened service meets every SLO, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path

from .backends import BACKENDS, BackendUnavailable, open_backend
from .render import markdown, write_chart, write_json
from .runner import Phases, Progress, ScenarioResult, run_target
from .scenarios import SCENARIOS, matrix
from .slo import DEFAULT_OBJECTIVES, Objectives
from .targets import TARGETS

ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m report", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compare", action="store_true",
                        help="also run the naive baseline and show both side by side")
    parser.add_argument("--backend", choices=BACKENDS, default="sqlite",
                        help="the hardened service's database (postgres: a throwaway server "
                             "for the run); default sqlite")
    parser.add_argument("--seed", type=int, default=None, help="replay a run (printed)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients")
    parser.add_argument("--phases", default="2,4,3",
                        help="seconds of steady state, fault window and recovery")
    parser.add_argument("--scenarios", default="",
                        help="comma-separated scenario names (default: all)")
    parser.add_argument("--objectives", type=Path, default=DEFAULT_OBJECTIVES)
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "report")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    steady, fault, recovery = (float(x) for x in args.phases.split(","))
    phases = Phases(steady, fault, recovery)
    wanted = set(filter(None, args.scenarios.split(",")))
    unknown = wanted - {s.name for s in SCENARIOS}
    if unknown:
        print(f"unknown scenarios: {', '.join(sorted(unknown))}; known: "
              f"{', '.join(s.name for s in SCENARIOS)}", file=sys.stderr)
        return 2
    if args.compare and args.backend != "sqlite":
        print("--compare runs the naive baseline, which is SQLite-only (examples/naive_service "
              "is the service on SQLite's defaults, as the seed report describes it); use "
              "--compare with --backend sqlite, or --backend postgres without --compare",
              file=sys.stderr)
        return 2
    scenarios = matrix(args.backend, wanted)
    objectives = Objectives.load(args.objectives)
    targets = [TARGETS["hardened"]] + ([TARGETS["naive"]] if args.compare else [])
    print(f"seed {seed} (replay with --seed {seed}), backend {args.backend}", file=sys.stderr)

    started = time.monotonic()
    progress = Progress(len(scenarios) * len(targets))
    by_target: dict[str, list[ScenarioResult]] = {}
    rng = random.Random(seed)
    try:
        with (tempfile.TemporaryDirectory(prefix="resilience-report-") as workdir,
              open_backend(args.backend) as backend):
            for target in targets:
                by_target[target.name] = asyncio.run(run_target(
                    target, scenarios, objectives, random.Random(rng.random()), phases,
                    args.clients, Path(workdir), progress, backend))
    except BackendUnavailable as exc:
        print(exc, file=sys.stderr)
        return 2

    meta = {"seed": seed, "backend": args.backend, "database": backend.label,
            "clients": args.clients, "phases": args.phases,
            "objectives_file": str(args.objectives.relative_to(ROOT)
                                   if args.objectives.is_relative_to(ROOT) else args.objectives),
            "seconds": round(time.monotonic() - started, 1)}
    args.out.mkdir(parents=True, exist_ok=True)
    report = markdown(by_target, objectives, meta)
    (args.out / "report.md").write_text(report)
    write_json(args.out / "report.json", by_target, objectives, meta)
    write_chart(args.out / "report.png", by_target)
    print(report)
    print(f"written to {args.out}/report.md, report.json and report.png "
          f"({meta['seconds']} s)", file=sys.stderr)
    hardened_ok = all(v.passed for r in by_target["hardened"] for v in r.verdicts)
    return 0 if hardened_ok else 1


if __name__ == "__main__":
    sys.exit(main())
