"""The resilience report: judge a service against database-layer faults, and print it.

    sqlite-faults-report --target service.toml
                            the service a target file describes (sqlite_faults/target.py),
                            on the scenario matrix
    sqlite-faults-report --target service.toml --baseline other.toml
                            a second service too, side by side, in the same run
    sqlite-faults-report --target service.toml --backend postgres
                            on PostgreSQL: a throwaway server is started for the run, a
                            fresh database per service

(`python -m sqlite_faults.report` is the same command.) On PostgreSQL the scenarios whose
fault only exists for SQLite's files (slow-fsync-pulses, disk-full) are reported as skipped
with the reason, and postgres-immediate-stop (the server stopped abruptly and restarted) joins
the matrix.

Writes report.md, report.json and report.png to ./build/report/ (or --out) and prints the
Markdown report; `--junit FILE` writes the verdicts as JUnit XML for CI systems too. Exit
status 0 when the report was produced, whatever it found; 2 for bad usage. A CI gate is
opt-in: `--fail-on breach` exits 1 when the target breached any check, `--fail-on
non-network-breach` when it breached one outside the seed's network scenarios. An
inconclusive check (one the instrument's own delays could explain) is not a breach.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from sqlite_faults.server import ServerNotReady
from sqlite_faults.target import Target, TargetError, load_target
from sqlite_faults.traffic import CLOSED, OPEN, LoadSpec

from .analysis import (
    Evidence,
    Hypothesis,
    analyse,
    counterfactual_scenarios,
    with_counterfactual,
)
from .backends import BACKENDS, Backend, BackendUnavailable, open_backend
from .experiments import BATTERY_EXPERIMENTS, run_checks
from .instrument import Calibration
from .junit import write_junit
from .render import markdown, write_chart, write_json
from .runner import Phases, Progress, ScenarioResult, run_target
from .scenarios import SCENARIOS, Scenario, matrix
from .slo import DEFAULT_OBJECTIVES, Objectives

# What --fail-on can gate on. A report is a measurement: that it found breaches is its result,
# not a failure to produce it, so only an explicit gate turns breaches into exit status 1.
FAIL_ON = ("nothing", "breach", "non-network-breach")


def build_parser(prog: str = "sqlite-faults-report") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", type=Path, default=os.environ.get("SQLITE_FAULTS_TARGET"),
                        help="the target file of the service to judge "
                             "(default: $SQLITE_FAULTS_TARGET)")
    parser.add_argument("--baseline", type=Path, action="append", default=[],
                        help="a target file of a service to judge beside it (repeatable)")
    parser.add_argument("--backend", choices=BACKENDS, default="sqlite",
                        help="the services' database (postgres: a throwaway server "
                             "for the run); default sqlite")
    parser.add_argument("--seed", type=int, default=None, help="replay a run (printed)")
    parser.add_argument("--load", choices=(OPEN, CLOSED), default=OPEN,
                        help="open: requests at a fixed arrival rate, latency from the "
                             "intended send time (default); closed: --clients clients, each "
                             "waiting for its answer")
    parser.add_argument("--rate", type=float, default=None,
                        help="open-loop requests/s for every target (default: "
                             "--capacity-fraction of the first target's measured capacity; a "
                             "baseline gets no more than that, and no more than the same "
                             "fraction of its own)")
    parser.add_argument("--capacity-fraction", type=float, default=0.5,
                        help="the default open-loop rate as a fraction of measured capacity")
    parser.add_argument("--clients", type=int, default=16,
                        help="concurrent clients (closed loop)")
    parser.add_argument("--timeout", type=float, default=3.0,
                        help="the clients' timeout per attempt, in seconds")
    parser.add_argument("--phases", default="1,3,3",
                        help="seconds of steady state, fault window and recovery")
    parser.add_argument("--scenarios", default="",
                        help="comma-separated scenario names (default: all)")
    parser.add_argument("--objectives", type=Path, default=DEFAULT_OBJECTIVES)
    parser.add_argument("--out", type=Path, default=Path("build") / "report")
    parser.add_argument("--experiments", dest="experiments", action="store_true",
                        default=True, help=argparse.SUPPRESS)  # the default; undoes the next
    parser.add_argument("--no-experiments", dest="experiments", action="store_false",
                        help="do not run the battery's checks for the causes no scenario "
                             "stages (bad input, leaks: about 30 s a target)")
    parser.add_argument("--no-counterfactuals", dest="counterfactuals", action="store_false",
                        help="do not run a confirmed cause's scenarios again with its change "
                             "applied through the engine plugin (docs/report.md)")
    parser.add_argument("--junit", type=Path, default=None, metavar="FILE",
                        help="also write the verdicts as JUnit XML to FILE (one test case "
                             "per check: breached = failure, inconclusive = skipped)")
    parser.add_argument(
        "--fail-on", choices=FAIL_ON, default="nothing",
        help="the exit status as a CI gate: 1 when the (first) target breached a check of "
             "any scenario (`breach`) or of a scenario outside the seed's network faults "
             "(`non-network-breach`); by default 0 whenever the report was produced")
    return parser


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


def _timeout_too_short(timeout_s: float, targets: list[Target],
                       objectives: Objectives) -> str:
    """Why the clients' timeout cannot judge these targets ("" when it can). A client that
    gives up before a service's deadline plus the grace records no answer where the service
    was about to give its 504: the generator's timeout would be judged the service's unclean
    failure."""
    for target in targets:
        if target.deadline_s is None:
            continue
        limit_s = target.deadline_s + objectives.deadline_grace_ms / 1000
        if timeout_s <= limit_s:
            return (f"--timeout {timeout_s:g} s is not longer than {target.name}'s deadline "
                    f"({target.deadline_s:g} s) plus the {objectives.deadline_grace_ms:g} ms "
                    f"grace: the clients would give up before the service may answer; use "
                    f"more than {limit_s:g} s")
    return ""


async def _counterfactuals(target: Target, hypotheses: list[Hypothesis],
                           results: list[ScenarioResult], scenarios: list[Scenario],
                           objectives: Objectives, rng: random.Random, phases: Phases,
                           spec: LoadSpec, workdir: Path, progress: Progress, backend: Backend,
                           rate: float, calibrated: Calibration | None) -> list[Hypothesis]:
    """Each confirmed cause with a change the engine plugin can make: its scenarios again, on
    a service of their own with the change applied, at the same rate."""
    checked = []
    for hypothesis in hypotheses:
        names = counterfactual_scenarios(hypothesis, results)
        if not names:
            checked.append(hypothesis)
            continue
        progress.total += len(names)
        try:
            again = await run_target(
                target, [s for s in scenarios if s.name in names], objectives,
                random.Random(rng.random()), phases, spec,
                workdir / f"cf-{hypothesis.cause.id}", progress, backend, rate_ceiling=rate,
                calibrated=calibrated, change=hypothesis.cause.counterfactual["pragmas"])
        except ServerNotReady as exc:
            said = str(exc).splitlines()[0]
            checked.append(replace(hypothesis, verified=f"not verified: the service for the "
                                   f"counterfactual run did not start ({said})"))
            continue
        checked.append(with_counterfactual(hypothesis, results, again.results,
                                           again.diagnostics))
    return checked


def run(args: argparse.Namespace) -> int:
    if args.target is None:
        print("--target FILE is required: a target file describing the service "
              "(see sqlite_faults/target.py)", file=sys.stderr)
        return 2
    try:
        targets: list[Target] = [load_target(p) for p in [args.target, *args.baseline]]
    except TargetError as exc:
        print(f"bad target file: {exc}", file=sys.stderr)
        return 2
    if len({t.name for t in targets}) != len(targets):
        print("each target needs its own name (set name = ... in the target files)",
              file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    steady, fault, recovery = (float(x) for x in args.phases.split(","))
    phases = Phases(steady, fault, recovery)
    wanted = set(filter(None, args.scenarios.split(",")))
    unknown = wanted - {s.name for s in SCENARIOS}
    if unknown:
        print(f"unknown scenarios: {', '.join(sorted(unknown))}; known: "
              f"{', '.join(s.name for s in SCENARIOS)}", file=sys.stderr)
        return 2
    scenarios = matrix(args.backend, wanted)
    objectives = Objectives.load(args.objectives)
    too_short = _timeout_too_short(args.timeout, targets, objectives)
    if too_short:
        print(too_short, file=sys.stderr)
        return 2
    print(f"seed {seed} (replay with --seed {seed}), backend {args.backend}", file=sys.stderr)

    spec = LoadSpec(args.load, args.rate, args.capacity_fraction, args.clients, args.timeout)
    started = time.monotonic()
    # A step per scenario and target, and one per target for the experiments.
    progress = Progress((len(scenarios) + bool(args.experiments)) * len(targets))
    by_target: dict[str, list[ScenarioResult]] = {}
    analyses: dict[str, list[Hypothesis]] = {}
    loads: dict[str, dict[str, Any]] = {}
    ceiling: float | None = None
    calibrated: Calibration | None = None  # the first target's, reused by the baselines
    rng = random.Random(seed)
    starting = targets[0].name
    try:
        with (tempfile.TemporaryDirectory(prefix="resilience-report-") as workdir,
              open_backend(args.backend) as backend):
            for path, target in zip([args.target, *args.baseline], targets, strict=True):
                starting = target.name
                run_ = asyncio.run(run_target(
                    target, scenarios, objectives, random.Random(rng.random()), phases,
                    spec, Path(workdir), progress, backend, rate_ceiling=ceiling,
                    calibrated=calibrated))
                by_target[target.name] = run_.results
                outcomes = {}
                if args.experiments:
                    progress.show(target.name, "experiments", "the battery's checks for "
                                  "the causes no scenario stages")
                    checked_at = time.monotonic()
                    outcomes = {o.check: o for o in run_checks(
                        path, list(BATTERY_EXPERIMENTS.values()),
                        Path(workdir) / f"battery-{target.name}", seed)}
                    failed = sum(o.outcome != "passed" for o in outcomes.values())
                    progress.complete(target.name, "experiments",
                                      f"done: {len(outcomes) - failed}/{len(outcomes)} checks "
                                      f"passed ({time.monotonic() - checked_at:.1f} s)")
                analyses[target.name] = analyse(Evidence(run_.results, run_.diagnostics,
                                                         outcomes))
                loads[target.name] = {"model": run_.load.kind, "rate": round(run_.load.rate, 1),
                                      "clients": run_.load.clients,
                                      "capacity_rps": round(run_.capacity_rps, 1),
                                      "calibration": (run_.calibration.as_dict()
                                                      if run_.calibration else None),
                                      "described": run_.load.describe()}
                ceiling = ceiling if ceiling is not None else run_.load.rate
                calibrated = calibrated or run_.calibration
            if args.counterfactuals:
                for target in targets:
                    analyses[target.name] = asyncio.run(_counterfactuals(
                        target, analyses[target.name], by_target[target.name], scenarios,
                        objectives, rng, phases, spec, Path(workdir), progress, backend,
                        loads[target.name]["rate"], calibrated))
    except BackendUnavailable as exc:
        print(exc, file=sys.stderr)
        return 2
    except ServerNotReady as exc:
        # At a target's first start (a restart inside a scenario is that scenario's
        # finding): the target cannot be judged, so no report is written.
        print(f"{starting}: the service never answered its readiness check, so no report "
              f"was written ({exc})", file=sys.stderr)
        return 2

    meta = {"seed": seed, "backend": args.backend, "database": backend.label,
            "load": args.load, "loads": loads, "clients": args.clients,
            "capacity_fraction": args.capacity_fraction, "phases": args.phases,
            "objectives_file": _shown(args.objectives),
            "seconds": round(time.monotonic() - started, 1)}
    args.out.mkdir(parents=True, exist_ok=True)
    report = markdown(by_target, objectives, meta, analyses)
    (args.out / "report.md").write_text(report)
    write_json(args.out / "report.json", by_target, objectives, meta, analyses)
    write_chart(args.out / "report.png", by_target, objectives)
    if args.junit is not None:
        write_junit(args.junit, by_target, meta["seconds"])
    print(report)
    print(f"written to {args.out}/report.md, report.json and report.png "
          f"({meta['seconds']} s)", file=sys.stderr)
    return 1 if gate_fails(by_target[targets[0].name], args.fail_on) else 0



def gate_fails(results: list[ScenarioResult], fail_on: str) -> bool:
    if fail_on == "nothing":
        return False
    judged = [r for r in results
              if fail_on == "breach" or not r.scenario.network]
    # An inconclusive check is not a breach: the instrument could have decided it.
    return any(v.breached for r in judged for v in r.verdicts)


def _shown(path: Path) -> str:
    """A path as the report prints it: relative to the current folder when inside it."""
    resolved = path.resolve()
    return str(resolved.relative_to(Path.cwd()) if resolved.is_relative_to(Path.cwd())
               else path)


if __name__ == "__main__":
    sys.exit(main())
