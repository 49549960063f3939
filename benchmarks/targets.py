"""`bench.py --targets`: exactly the runs that issue 11's performance targets need, then one
line per target: what was measured, the threshold, MET or MISSED.

Every target is a ratio (or a count) within one run, because this machine is shared and its
absolute figures drift from run to run:

- `GET /users/{id}` at least 0.5 of the same server's `GET /healthz` (c = 64);
- `POST /users/` at least 0.85 of the hash-only reference (`POST /_bench/hash-only`: the same
  body, argon2 cost and bound on hashes at once, no database; benchmarks/bench_app.py), and
  under `SQLITE_SYNCHRONOUS=FULL` at least 0.8 of itself under NORMAL (c = 64);
- ahead of both peers (examples/tutorial_service, examples/async_service) in req/s for reads
  and for creates at c = 16 and 64, with a p99 no worse, with the server pinned to one core;
- 16 writers and 16 readers, with another process holding the write lock for 2 s every 5 s:
  no errors, and the readers' p99 within 1.5 of the same load without locks;
- the server's threads after all of that as many as before it (psutil; lanes, interrupter and
  hash workers only).

A target whose hardened run had errors (non-2xx, socket errors, late answers) or stalled is
missed whatever its ratio: a fast refusal is not throughput. Services take turns per endpoint
at each concurrency, so the two figures of a ratio were measured within a few runs of each
other. Results: build/bench/targets.json (every run's figures, wrk's raw output included) and
targets.md; the exit status is 0 only if every target was met.
"""

from __future__ import annotations

import json
import statistics
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
from sqlite_faults.server import ServerProcess

from benchmarks.load import Cell, LoadConfig, add_ratios, measure
from benchmarks.lock_pulses import Phase, lock_pulse_scenario
from benchmarks.servers import CpuSplit, Served, Variant, cpu_sets, serve_all
from benchmarks.tables import cells_markdown, fmt, progress_line
from benchmarks.threads import Census, settled_census

CONCURRENCIES = (16, 64)
HEADLINE_C = 64  # the concurrency of the single-server ratios
ENDPOINT_ORDER = ("healthz", "get_user", "create_user", "hash_only")
COMPARED = ("get_user", "create_user")
ENDPOINT_NAMES = {"get_user": "GET /users/{id}", "create_user": "POST /users/"}
HARDENED = Variant("hardened")
HARDENED_FULL = Variant("hardened", synchronous="FULL")
PEERS = (Variant("tutorial"), Variant("async"))

Plan = list[tuple[Variant, str, int]]  # (variant, endpoint, concurrency), in run order


def _ordered(needs: dict[Variant, set[tuple[str, int]]]) -> Plan:
    return [(variant, endpoint, c) for c in CONCURRENCIES for endpoint in ENDPOINT_ORDER
            for variant, wanted in needs.items() if (endpoint, c) in wanted]


def peer_needs() -> dict[Variant, set[tuple[str, int]]]:
    compared = {(endpoint, c) for endpoint in COMPARED for c in CONCURRENCIES}
    return {HARDENED: set(compared), **{peer: set(compared) for peer in PEERS}}


# The single-server ratios' runs, in the order one round takes them: each ratio's two sides
# back to back, so a change in the shared machine's load hits both alike.
HEADLINE_ROUND: Plan = [(HARDENED, "healthz", HEADLINE_C), (HARDENED, "get_user", HEADLINE_C),
                        (HARDENED, "create_user", HEADLINE_C),
                        (HARDENED, "hash_only", HEADLINE_C),
                        (HARDENED_FULL, "create_user", HEADLINE_C)]


def full_plan(rounds: int = 1) -> Plan:
    """Every run of the first CPU set: the peers' comparison plus the single-server ratios,
    whose runs are repeated for `rounds` rounds in all (each ratio is judged by its median)."""
    needs = peer_needs()
    needs[HARDENED] |= {("healthz", HEADLINE_C), ("hash_only", HEADLINE_C)}
    needs[HARDENED_FULL] = {("create_user", HEADLINE_C)}
    return _ordered(needs) + HEADLINE_ROUND * (rounds - 1)


def peer_plan() -> Plan:
    return _ordered(peer_needs())


# ---------------------------------------------------------------------------- running


def pinning_of(server: ServerProcess, split: CpuSplit) -> dict[str, Any]:
    """What the OS says about the server's process: taskset execs the server, so the pid
    ServerProcess holds must be uvicorn itself, on the CPUs it was given."""
    process = psutil.Process(server.pid)
    found = {"pid": server.pid, "command": " ".join(process.cmdline()[:5]),
             "affinity": sorted(process.cpu_affinity() or [])}
    expected = list(split.server) if split.server else None
    found["as_expected"] = ("uvicorn" in found["command"]
                            and (expected is None or found["affinity"] == expected))
    if not found["as_expected"]:
        print(f"warning: server pinning not as planned: {found}, expected CPUs {expected}",
              file=sys.stderr)
    return found


def run_plan(plan: Plan, served: dict[Variant, Served], split: CpuSplit, load: LoadConfig
             ) -> list[Cell]:
    cells = []
    for variant, endpoint, concurrency in plan:
        entry = served[variant]
        cell = measure(load, entry.server, variant.label, endpoint, concurrency, entry.ids,
                       variant.backend, split.client_cpus, split.server_cpus)
        cells.append(cell)
        print(progress_line(cell), file=sys.stderr)
        if not cell.answered_after:
            entry.restart()
    return cells


@dataclass
class Results:
    sets: list[str] = field(default_factory=list)
    pinning: list[dict[str, Any]] = field(default_factory=list)
    cells: list[Cell] = field(default_factory=list)
    lock_phases: list[Phase] = field(default_factory=list)
    threads_before: Census | None = None
    threads_after: Census | None = None
    hardened_restarts: int = 0


def run_targets_plan(split: CpuSplit, load: LoadConfig, lock_duration_s: float,
                     rounds: int = 1) -> Results:
    results = Results()
    for number, cpus in enumerate(cpu_sets(split)):
        first = number == 0
        plan = full_plan(rounds) if first else peer_plan()
        variants = list(dict.fromkeys(variant for variant, _, _ in plan))
        results.sets.append(cpus.describe())
        print(f"CPU set {number + 1}: {cpus.describe()}", file=sys.stderr)
        with serve_all(variants, cpus) as served:
            results.pinning += [{"set": cpus.describe(), "service": variant.label,
                                 **pinning_of(entry.server, cpus)}
                                for variant, entry in served.items()]
            hardened = served[HARDENED]
            if first:
                results.threads_before = settled_census(hardened.server.pid)
            results.cells += run_plan(plan, served, cpus, load)
            if first:
                print("  lock pulses: 16 writers + 16 readers, without then with locks",
                      file=sys.stderr)
                results.lock_phases = lock_pulse_scenario(
                    load.wrk, hardened.server, load.scripts, hardened.ids,
                    duration_s=lock_duration_s, client_cpus=cpus.client_cpus,
                    server_cpus=cpus.server_cpus)
                # A restarted server is a new process: its count says nothing of this load.
                results.hardened_restarts = hardened.restarts
                results.threads_after = settled_census(hardened.server.pid)
    add_ratios(results.cells)
    return results


# ---------------------------------------------------------------------------- judging


@dataclass
class Target:
    name: str
    measured: str
    threshold: str
    met: bool
    value: float | None = None


def _every(cells: list[Cell], label: str, endpoint: str, c: int, cpus: str) -> list[Cell]:
    return [cell for cell in cells if (cell.service, cell.endpoint, cell.concurrency,
                                       cell.server_cpus) == (label, endpoint, c, cpus)]


def _find(cells: list[Cell], label: str, endpoint: str, c: int, cpus: str) -> Cell | None:
    for cell in cells:
        if (cell.service, cell.endpoint, cell.concurrency, cell.server_cpus) == (
                label, endpoint, c, cpus):
            return cell
    return None


def _trouble(cell: Cell | None) -> str | None:
    """Why a hardened run cannot count, if it cannot."""
    if cell is None:
        return "not measured"
    if cell.errors:
        return f"{cell.errors} errors"
    if not cell.answered_after:
        return "stalled"
    return None


def median_ratio_target(name: str, numerators: list[Cell], denominators: list[Cell],
                        at_least: float) -> Target:
    """A ratio over rounds: round i's numerator over round i's denominator, judged by the
    median; every round's runs must be clean."""
    if len(numerators) < 2 or len(numerators) != len(denominators):
        return ratio_target(name, numerators[0] if numerators else None,
                            denominators[0] if denominators else None, at_least)
    rounds = [ratio_target(name, n, d, at_least) for n, d in zip(numerators, denominators,
                                                                 strict=True)]
    values = [t.value for t in rounds]
    if any(v is None for v in values):
        return next(t for t in rounds if t.value is None)
    value = statistics.median(values)  # type: ignore[type-var]
    troubles = [t.measured for t in rounds if "[" in t.measured]
    measured = (f"{value:.2f}x, median of {len(values)} rounds "
                f"({', '.join(f'{v:.2f}' for v in values)})"  # type: ignore[str-format]
                + (f" [{'; '.join(troubles)}]" if troubles else ""))
    return Target(name, measured, f">= {at_least:.2f}x", not troubles and value >= at_least,
                  value)


def ratio_target(name: str, numerator: Cell | None, denominator: Cell | None,
                 at_least: float) -> Target:
    trouble = _trouble(numerator) or (None if denominator else "reference not measured")
    value = (numerator.rps / denominator.rps
             if numerator and denominator and denominator.rps else None)
    measured = ("n/a" if value is None or numerator is None or denominator is None
                else f"{value:.2f}x ({numerator.rps:.0f} / {denominator.rps:.0f} req/s)")
    if trouble:
        measured += f" [{trouble}]"
    met = trouble is None and value is not None and value >= at_least
    return Target(name, measured, f">= {at_least:.2f}x", met, value)


def peer_targets(cells: list[Cell], cpus: str) -> list[Target]:
    targets = []
    for c in CONCURRENCIES:
        for endpoint in COMPARED:
            ours = _find(cells, HARDENED.label, endpoint, c, cpus)
            for peer in PEERS:
                theirs = _find(cells, peer.label, endpoint, c, cpus)
                where = f"{ENDPOINT_NAMES[endpoint]} c={c}, server CPU {cpus}, vs {peer.label}"
                trouble = _trouble(ours) or (None if theirs else "peer not measured")
                note = f" [{trouble}]" if trouble else ""
                if theirs is not None and theirs.errors:
                    note += f" [{peer.label}: {theirs.errors} errors]"
                if theirs is not None and not theirs.answered_after:
                    # No ratio to a peer that answered nothing: ahead by definition.
                    note += f" [{peer.label} stalled]"
                rps = (ours.rps / theirs.rps if ours and theirs and theirs.rps else None)
                targets.append(Target(
                    f"{where}: req/s", f"{fmt(rps, 2)}x" + (
                        f" ({ours.rps:.0f} vs {theirs.rps:.0f})" if ours and theirs else "")
                    + note, "> 1.00x",
                    trouble is None and (rps is None or rps > 1.0) and bool(ours and ours.rps),
                    rps))
                p99 = (ours.p99_ms / theirs.p99_ms
                       if ours and theirs and ours.p99_ms is not None and theirs.p99_ms
                       else None)
                # A peer that answered nothing has no p99 to be worse than.
                peer_silent = theirs is not None and theirs.p99_ms is None
                targets.append(Target(
                    f"{where}: p99", f"{fmt(p99, 2)}x" + (
                        f" ({fmt(ours.p99_ms)} vs {fmt(theirs.p99_ms)} ms)"
                        if ours and theirs else "") + note, "<= 1.00x",
                    trouble is None and ours is not None and ours.p99_ms is not None
                    and (peer_silent or (p99 is not None and p99 <= 1.0)), p99))
    return targets


def lock_targets(phases: list[Phase]) -> list[Target]:
    if len(phases) != 2:
        return [Target("lock pulses", "not run", "run", False)]
    quiet, pulsed = phases
    pulses = len(pulsed.pulses)
    errors = Target(
        "16 writers + 16 readers, 2 s write lock every 5 s: errors",
        f"{pulsed.errors} (writers {pulsed.writers.errors}, readers {pulsed.readers.errors}; "
        f"{pulses} pulses; without locks: {quiet.errors})",
        "= 0", pulsed.errors == 0 and pulses > 0 and pulsed.answered_after, pulsed.errors)
    with_p99, without_p99 = pulsed.readers.p99_ms, quiet.readers.p99_ms
    ratio = with_p99 / without_p99 if with_p99 is not None and without_p99 else None
    p99 = Target(
        "16 writers + 16 readers, 2 s write lock every 5 s: GET p99 with locks / without",
        f"{fmt(ratio, 2)}x ({fmt(with_p99)} / {fmt(without_p99)} ms)", "<= 1.50x",
        ratio is not None and ratio <= 1.5 and pulses > 0, ratio)
    return [errors, p99]


def thread_target(results: Results) -> Target:
    before, after = results.threads_before, results.threads_after
    if before is None or after is None:
        return Target("threads after load = before", "not measured", "equal", False)
    notes = [f"{c.waited_s} s and still changing" for c in (before, after) if not c.settled]
    if results.hardened_restarts:
        notes.append(f"server restarted {results.hardened_restarts}x")
    measured = f"{after.count} after, {before.count} before" + (
        f" [{'; '.join(notes)}]" if notes else "")
    return Target("threads after load = before (psutil)", measured, "equal",
                  after.count == before.count and not notes, after.count - before.count)


def judge(results: Results) -> list[Target]:
    cells = results.cells
    first = results.cells[0].server_cpus if cells else "unpinned"
    c = HEADLINE_C
    def runs(variant: Variant, endpoint: str) -> list[Cell]:
        return _every(cells, variant.label, endpoint, c, first)

    targets = [
        median_ratio_target(f"GET /users/{{id}} / GET /healthz, c={c}",
                            runs(HARDENED, "get_user"), runs(HARDENED, "healthz"), 0.5),
        median_ratio_target(f"POST /users/ / hash-only reference, c={c}",
                            runs(HARDENED, "create_user"), runs(HARDENED, "hash_only"), 0.85),
        median_ratio_target(f"POST /users/ under synchronous=FULL / NORMAL, c={c}",
                            runs(HARDENED_FULL, "create_user"), runs(HARDENED, "create_user"),
                            0.8),
    ]
    for cpus in dict.fromkeys(cell.server_cpus for cell in cells):
        targets += peer_targets(cells, cpus)
    return targets + lock_targets(results.lock_phases) + [thread_target(results)]


# ---------------------------------------------------------------------------- output


def targets_markdown(targets: list[Target]) -> str:
    lines = ["| target | measured | threshold | result |", "|---|---|---|---|"]
    lines += [f"| {t.name} | {t.measured} | {t.threshold} | {'MET' if t.met else '**MISSED**'} |"
              for t in targets]
    return "\n".join(lines)


def lock_markdown(phases: list[Phase]) -> str:
    lines = ["| phase | pulses [began at s, held s] | writers req/s | writers p99 ms "
             "| readers req/s | readers p99 ms | errors | answered after |",
             "|---|---|--:|--:|--:|--:|--:|---|"]
    for p in phases:
        lines.append(
            f"| {'with locks' if p.locks else 'without locks'} | {p.pulses or '-'} "
            f"| {p.writers.rps:.0f} | {fmt(p.writers.p99_ms)} | {p.readers.rps:.0f} "
            f"| {fmt(p.readers.p99_ms)} | {p.errors} | {'yes' if p.answered_after else 'no'} |")
    return "\n".join(lines)


def write_results(results: Results, targets: list[Target], meta: dict[str, Any],
                  out_dir: Path) -> str:
    census = {name: c.as_dict() if c else None for name, c in
              (("before", results.threads_before), ("after", results.threads_after))}
    (out_dir / "targets.json").write_text(json.dumps({
        **meta, "cpu_sets": results.sets, "pinning": results.pinning,
        "targets": [asdict(t) for t in targets], "all_met": all(t.met for t in targets),
        "threads": {**census, "hardened_restarts": results.hardened_restarts},
        "lock_pulses": [asdict(p) for p in results.lock_phases],
        "cells": [asdict(c) for c in results.cells],
    }, indent=2))
    threads = "\n".join(f"- {name}: {c['count']} threads {c['names']}"
                        + ("" if c["settled"] else " (still changing)")
                        for name, c in census.items() if c)
    report = "\n\n".join([
        f"Targets, {meta['when']} (`{meta['command']}`); CPU sets: {'; '.join(results.sets)}.",
        targets_markdown(targets),
        "Lock pulses (hardened, 16 writers + 16 readers):", lock_markdown(results.lock_phases),
        "Threads of the hardened server:\n" + threads,
        "Every run:", cells_markdown(results.cells),
    ])
    (out_dir / "targets.md").write_text(report + "\n")
    return report


def run_targets(split: CpuSplit, load: LoadConfig, lock_duration_s: float,
                meta: dict[str, Any], out_dir: Path, rounds: int = 3) -> int:
    results = run_targets_plan(split, load, lock_duration_s, rounds)
    targets = judge(results)
    write_results(results, targets, meta, out_dir)
    width = max(len(t.name) for t in targets)
    for t in targets:
        print(f"{t.name:{width}}  {t.measured}  (target {t.threshold})  "
              f"{'MET' if t.met else 'MISSED'}")
    met = sum(t.met for t in targets)
    print(f"{met} of {len(targets)} targets met; written to {out_dir / 'targets.json'} and "
          f"{out_dir / 'targets.md'}")
    return 0 if met == len(targets) else 1
