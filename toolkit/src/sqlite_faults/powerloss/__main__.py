"""python -m sqlite_faults.powerloss: run the power-loss matrix on a service, print it,
optionally write the docs.

    python -m sqlite_faults.powerloss --service MODULE:CALLABLE
        [--mode quick|nightly] [--seed N] [--cells WAL/NORMAL,DELETE/FULL]
        [--write-docs docs/durability.md] [--keep DIR]

CALLABLE returns the service's `CrashService` variants (service.py), the service as
configured first; this repository's is `app.crash_service:crash_services`.

Exit status 1 when SQLite contradicted its documentation in some crash state (each is printed
with its seed, run, cut and state), or when the simulation failed to show a documented loss.
"""

from __future__ import annotations

import argparse
import importlib
import random
import sys
import time
from pathlib import Path

from .contract import CELLS, Cell
from .matrix import BUDGETS, harness_gap, run_cell, run_matrix
from .report import contradictions, section, setup_line, table, write_section
from .scratch import disk_scratch, simulation_scratch
from .service import CrashService
from .throughput import filesystem_of

_BUILD = Path("build") / "power-loss"


def load_services(spec: str) -> tuple[CrashService, ...]:
    """MODULE:CALLABLE -> the variants it returns."""
    module, sep, name = spec.partition(":")
    if not sep or not module or not name:
        raise ValueError(f"--service takes MODULE:CALLABLE, got {spec!r}")
    services = tuple(getattr(importlib.import_module(module), name)())
    if not services:
        raise ValueError(f"{spec} returned no service")
    return services


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sqlite_faults.powerloss",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--service", required=True, metavar="MODULE:CALLABLE",
                        help="what returns the service's CrashService variants")
    parser.add_argument("--mode", choices=sorted(BUDGETS), default="quick")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of every random choice (default: a fresh one, printed)")
    parser.add_argument("--cells", default=",".join(c.name for c in CELLS),
                        help="comma-separated settings, e.g. WAL/NORMAL,DELETE/FULL")
    parser.add_argument("--write-docs", type=Path, default=None, metavar="FILE",
                        help="write (or replace) the generated section in FILE")
    parser.add_argument("--keep", type=Path, default=None, metavar="DIR",
                        help="copy the files of each contradicting crash state into DIR")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 2**31)
    cells = tuple(Cell.parse(name) for name in args.cells.split(","))
    budget = BUDGETS[args.mode]
    print(f"power-loss matrix, {args.mode} mode, seed {seed} "
          f"(replay: python -m sqlite_faults.powerloss --service {args.service} "
          f"--mode {args.mode} --seed {seed})", flush=True)

    started = time.monotonic()
    try:
        services = load_services(args.service)
    except (ValueError, ImportError, AttributeError) as exc:
        parser.error(str(exc))
    _BUILD.mkdir(parents=True, exist_ok=True)
    with simulation_scratch() as work, disk_scratch(_BUILD) as disk:
        filesystem = filesystem_of(disk)
        results = run_matrix(services, cells, seed, budget, work, disk, keep=args.keep)
        broken = run_cell(services, Cell("WAL", "FULL"), seed, budget, work / "broken", disk,
                          drop_syncs=True)
    seconds = time.monotonic() - started

    print(setup_line(results, budget, seed, filesystem, seconds))
    print(table(results))
    print(f"\nbroken VFS (acknowledges syncs, drops them) under WAL/FULL: "
          f"{broken.violation_count} of {broken.states} crash states contradict the "
          f"contract{' (caught)' if broken.violation_count else ' (NOT caught)'}")
    found = contradictions(results)
    gaps = [gap for r in results if (gap := harness_gap(r))]
    for line in found:
        print(f"CONTRADICTION: {line}")
    for gap in gaps:
        print(f"HARNESS GAP: {gap}")
    if args.write_docs is not None:
        command = (f".venv/bin/python -m sqlite_faults.powerloss --service {args.service} "
                   f"--mode {args.mode} --seed {seed} "
                   f"--write-docs {args.write_docs}")
        write_section(args.write_docs,
                      section(results, broken, budget, seed, filesystem, seconds, command))
        print(f"wrote the power-loss section of {args.write_docs}")
    return 1 if found or gaps or not broken.violation_count else 0


if __name__ == "__main__":
    sys.exit(main())
