"""The matrix: for each journal mode and synchronous level, record runs of the service's
writes, cut the power at many moments, check every crash state against the setting's
promise, and measure what the setting costs.

Everything random follows from one seed per cell (runs, checkpoint moments, crash points,
crash states), so `python -m sqlite_faults.powerloss --cells WAL/FULL --seed S` replays a cell, and
a contradiction names the seed, the run, the crash point and the state.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .checker import Checker, Verdict
from .contract import Cell, Promise, promise
from .model import Create, Disk
from .points import CrashPoint, choose
from .service import CrashService
from .states import Kind, materialise
from .throughput import commits_per_second
from .workload import Trace, run_workload, workload_sqlite_version

KEEP_VIOLATIONS = 20


@dataclass(frozen=True)
class Budget:
    mode: str
    min_states: int  # per cell; runs are added until it is reached
    commits: int  # per run
    early_users: int
    points_per_run: int
    random_states: int  # per crash point, beside SYNCED and ALL
    checkpoint_chance: float  # per commit: the service's timer firing between two creates
    throughput_s: float


BUDGETS = {
    # About 10 s for the whole matrix on an idle 2-core machine.
    "quick": Budget("quick", min_states=480, commits=24, early_users=40, points_per_run=40,
                    random_states=2, checkpoint_chance=0.2, throughput_s=0.4),
    # 8 cells x 1,500 = 12,000 crash states at least.
    "nightly": Budget("nightly", min_states=1500, commits=48, early_users=60,
                      points_per_run=120, random_states=4, checkpoint_chance=0.15,
                      throughput_s=3.0),
}


@dataclass(frozen=True)
class Violation:
    """A crash state in which SQLite did not do what its documentation promises."""

    cell: str
    seed: int
    run: int
    event: int
    point: str
    state: str
    acked: int
    started: int
    detail: str

    def __str__(self) -> str:
        return (f"{self.cell} seed {self.seed}, run {self.run}, cut {self.point} "
                f"(event {self.event}; {self.acked} acknowledged, {self.started} begun), "
                f"state {self.state}: {self.detail}")


@dataclass
class CellResult:
    cell: Cell
    seed: int
    sqlite_version: str
    runs: int = 0
    crash_points: int = 0
    states: int = 0
    states_by_kind: Counter[str] = field(default_factory=Counter)
    integrity_failures: int = 0  # cannot open, or integrity_check not ok
    not_prefix: int = 0  # opened fine, but the surviving rows are not a prefix of commits
    lost: Counter[int] = field(default_factory=Counter)  # acked commits lost -> states
    acknowledged: int = 0  # commits acknowledged over all runs
    violations: list[Violation] = field(default_factory=list)
    violation_count: int = 0
    damage_examples: list[str] = field(default_factory=list)  # allowed damage, for notes
    commits_per_s: float = 0.0
    seconds: float = 0.0
    workload_sqlite: str = ""  # APSW's SQLite, which ran the simulated workload
    sector_size: int = 0  # as the VFS reported it for the database file
    powersafe_overwrite: bool = False

    @property
    def lost_max(self) -> int:
        return max(self.lost, default=0)

    @property
    def held(self) -> bool:
        return self.violation_count == 0

    def lost_distribution(self) -> str:
        """States per number of acked commits lost, in buckets 0, 1, 2-3, 4-7, 8-15..."""
        buckets: Counter[int] = Counter()
        for lost, states in self.lost.items():
            buckets[lost.bit_length()] += states
        return ", ".join(f"{_bucket(b)}: {states}" for b, states in sorted(buckets.items()))


def run_cell(services: Sequence[CrashService], cell: Cell, seed: int, budget: Budget,
             work: Path, disk_dir: Path, *, drop_syncs: bool = False,
             keep: Path | None = None) -> CellResult:
    """Runs take the service's variants in turn (as configured first). `work`: scratch
    space for simulated files (a tmpfs is best); `disk_dir`: a folder on the real disk for the
    throughput figure, which is measured with the first variant; `keep`: where to copy the
    files of each contradicting crash state, to open them by hand."""
    started = time.monotonic()
    service = services[0]
    result = CellResult(cell, seed, service.sqlite_version,
                        workload_sqlite=workload_sqlite_version())
    rng = random.Random(seed)
    checker = Checker(service, work / "check")
    label = cell.name + (" (broken VFS)" if drop_syncs else "")
    while result.states < budget.min_states:
        trace = run_workload(
            services[result.runs % len(services)], cell.journal_mode, cell.synchronous,
            commits=budget.commits, early_users=budget.early_users,
            checkpoint_chance=budget.checkpoint_chance, rng=rng, folder=work / "run",
            drop_syncs=drop_syncs)
        result.acknowledged += trace.commits
        db_file = next(e for e in trace.events if isinstance(e, Create))
        result.sector_size = db_file.sector_size
        result.powersafe_overwrite = db_file.powersafe_overwrite
        points = choose(trace.events, budget.points_per_run, rng)
        _cut_and_check(result, label, trace, points, checker, budget, keep)
        result.runs += 1
        result.crash_points += len(points)
    if not drop_syncs:
        result.commits_per_s = commits_per_second(
            service, cell.journal_mode, cell.synchronous, disk_dir, budget.throughput_s)
    result.seconds = time.monotonic() - started
    return result


def _cut_and_check(result: CellResult, label: str, trace: Trace, points: list[CrashPoint],
                   checker: Checker, budget: Budget, keep: Path | None) -> None:
    """Replay the run's events once, stopping at each crash point to build and check its
    states."""
    run = result.runs
    rules = promise(result.cell)
    disk = Disk()
    position = 0
    kinds = [Kind.SYNCED, Kind.ALL] + [
        Kind.SUBSET if n % 2 == 0 else Kind.SECTORS for n in range(budget.random_states)]
    for point in points:
        while position < point.index:
            disk.apply(trace.events[position])
            position += 1
        bound = rules.loss_bound(disk) if rules.loss_bound else None
        for n, kind in enumerate(kinds):
            # A state's own seed: replaying one state needs nothing that came before it.
            files = materialise(disk, kind, random.Random(f"{result.seed}:{run}:{point.index}:{n}"))
            verdict = checker.check(files, early_users=trace.early_users, started=disk.started)
            result.states += 1
            result.states_by_kind[kind.value] += 1
            state = f"{kind.value}#{n}"
            detail = _judge(result, rules, verdict, disk.acked, bound, f"{point.label}, {state}")
            if detail is None:
                continue
            result.violation_count += 1
            if len(result.violations) < KEEP_VIOLATIONS:
                result.violations.append(Violation(label, result.seed, run, point.index,
                                                   point.label, state, disk.acked,
                                                   disk.started, detail))
                if keep is not None:
                    _keep(files, keep / f"run{run}-event{point.index}-{kind.value}{n}")


def _judge(result: CellResult, rules: Promise, verdict: Verdict, acked: int,
           bound: int | None, where: str) -> str | None:
    """Count the state; say how it breaks the promise, if it does."""
    if not verdict.intact:
        if verdict.corrupt:
            result.integrity_failures += 1
        else:
            result.not_prefix += 1
        if not rules.may_corrupt:
            return f"damaged: {verdict.problem}"
        if len(result.damage_examples) < 3:
            result.damage_examples.append(f"{where}: {verdict.problem}")
        return None
    lost = verdict.lost(acked)
    result.lost[lost] += 1
    if bound is not None and lost > bound:
        return (f"{lost} acknowledged commit(s) lost (commits {verdict.survivors + 1}..{acked} "
                f"gone), the documentation allows {bound} here")
    return None


def _keep(files: dict[str, bytes], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (folder / name).write_bytes(content)


def _bucket(bits: int) -> str:
    low, high = (0, 0) if bits == 0 else (1 << (bits - 1), (1 << bits) - 1)
    return str(low) if low == high else f"{low}-{high}"


def harness_gap(result: CellResult) -> str | None:
    """Why this run proves less than it should, if it does: a setting documented to lose
    acknowledged commits that never lost one in the simulation means the simulation could
    not tell it from a safer setting (too few states, or a model that syncs too much)."""
    if promise(result.cell).must_show_loss and result.lost_max == 0:
        return (f"{result.cell.name} seed {result.seed}: the documentation says this setting "
                f"can lose an acknowledged commit, but none of {result.states} crash states "
                "did; the simulation cannot tell it from a safer setting")
    return None


def run_matrix(services: Sequence[CrashService], cells: tuple[Cell, ...], seed: int,
               budget: Budget, work: Path, disk_dir: Path,
               keep: Path | None = None) -> list[CellResult]:
    """Every cell with the same seed: the cells differ by their setting, not their luck."""
    return [run_cell(services, cell, seed, budget, work / _slug(cell), disk_dir,
                     keep=keep / _slug(cell) if keep else None) for cell in cells]


def _slug(cell: Cell) -> str:
    return cell.name.replace("/", "-")
