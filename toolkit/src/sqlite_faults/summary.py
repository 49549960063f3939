"""Durability run summaries: one row of figures per scenario, written as JSON and Markdown."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .ledger import LedgerReport

COLUMNS = [
    ("scenario", "scenario"), ("cycles", "cycles"), ("acknowledged", "acked"),
    ("indeterminate", "indeterminate"), ("resolved", "resolved"), ("lost", "lost"),
    ("duplicated", "duplicated"), ("integrity_failures", "integrity failures"),
    ("ready_p50_s", "restart-to-ready p50 s"), ("ready_p99_s", "p99 s"),
    ("wal_bytes_at_kill_max", "WAL at kill (max bytes)"),
    ("kills_with_commits_only_in_wal", "kills with commits only in WAL"),
    ("cycles_per_hour", "cycles/hour"),
]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass
class ScenarioFigures:
    scenario: str
    cycles: int = 0
    acknowledged: int = 0
    indeterminate: int = 0
    resolved: int = 0  # indeterminate creates settled by a keyed retry (committed or not)
    lost: int = 0
    duplicated: int = 0
    phantoms: int = 0
    integrity_failures: int = 0
    ready_seconds: list[float] = field(default_factory=list)
    wal_bytes_at_kill: list[int] = field(default_factory=list)
    kills_with_commits_only_in_wal: int = 0
    seconds: float = 0.0
    target_cycles: int | None = None  # nightly: the cycle count the scenario must reach
    notes: list[str] = field(default_factory=list)

    def add_report(self, report: LedgerReport) -> None:
        """Fold in one check; acknowledged counts the final total, the rest accumulate."""
        self.acknowledged = report.acknowledged
        self.indeterminate += report.indeterminate
        self.resolved += report.recovered + report.resolved
        self.lost = max(self.lost, report.lost)
        self.duplicated = max(self.duplicated, report.duplicated)
        self.phantoms = max(self.phantoms, report.phantoms)
        self.integrity_failures += report.integrity_failures

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.phantoms or self.integrity_failures)

    def row(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("ready_seconds")
        data.pop("wal_bytes_at_kill")
        data["ready_p50_s"] = round(percentile(self.ready_seconds, 0.5), 3)
        data["ready_p99_s"] = round(percentile(self.ready_seconds, 0.99), 3)
        data["wal_bytes_at_kill_max"] = max(self.wal_bytes_at_kill, default=0)
        data["wal_bytes_at_kill_median"] = (
            int(statistics.median(self.wal_bytes_at_kill)) if self.wal_bytes_at_kill else 0)
        data["cycles_per_hour"] = (
            round(self.cycles * 3600 / self.seconds) if self.seconds else 0)
        data["seconds"] = round(self.seconds, 1)
        return data


    @property
    def target_met(self) -> bool | None:
        return None if self.target_cycles is None else self.cycles >= self.target_cycles


@dataclass(frozen=True)
class Plan:
    """How much a scenario does: a fixed count in quick mode; in nightly mode a cycle target
    (`target_cycles`), with `budget_s` as a cap so a slow machine cannot run forever.

    The cap is sized from the measured rate: about 2,700 kill/restart cycles per hour on a
    2-core machine (docs/durability.md), so 1,000 cycles take ~22 minutes and the default
    cap of 2,700 s leaves room for a machine twice as slow.
    """

    mode: str
    quick_cycles: int
    budget_s: float
    target_cycles: int = 1000

    @property
    def target(self) -> int:
        return self.quick_cycles if self.mode == "quick" else self.target_cycles

    def more(self, cycles_done: int, elapsed_s: float) -> bool:
        if self.mode == "quick":
            return cycles_done < self.quick_cycles
        return cycles_done < self.target_cycles and elapsed_s < self.budget_s

    def cycles(self, figures: ScenarioFigures) -> Iterator[int]:
        """Cycle numbers for as long as the plan wants more; each cycle that ends is counted
        into `figures`, and the time they took (also when one fails)."""
        started = time.monotonic()
        done = 0
        try:
            while self.more(done, time.monotonic() - started):
                yield done
                done += 1
                figures.cycles += 1
        finally:
            figures.seconds += time.monotonic() - started


class DurabilitySummary:
    def __init__(self, seed: int, mode: str) -> None:
        self.seed = seed
        self.mode = mode
        self.started = time.time()
        self.scenarios: dict[str, ScenarioFigures] = {}

    def scenario(self, name: str) -> ScenarioFigures:
        return self.scenarios.setdefault(name, ScenarioFigures(name))

    def as_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed, "mode": self.mode,
            "started_unix": round(self.started), "seconds": round(time.time() - self.started, 1),
            "scenarios": [s.row() for s in self.scenarios.values()],
        }

    def markdown(self) -> str:
        lines = [
            f"# Durability summary ({self.mode} mode, seed {self.seed})", "",
            "| " + " | ".join(title for _, title in COLUMNS) + " |",
            "|" + "---|" * len(COLUMNS),
        ]
        for scenario in self.scenarios.values():
            row = scenario.row()
            lines.append("| " + " | ".join(str(row[key]) for key, _ in COLUMNS) + " |")
        targets = [
            f"- {s.scenario}: {s.cycles} cycles reached of a target of {s.target_cycles}: "
            + ("met" if s.target_met else "MISSED (the time cap ended it first)")
            for s in self.scenarios.values() if s.target_cycles is not None]
        notes = targets + [
            f"- {s.scenario}: {n}" for s in self.scenarios.values() for n in s.notes]
        if notes:
            lines += ["", *notes]
        return "\n".join(lines) + "\n"

    def write(self, folder: Path) -> tuple[Path, Path]:
        folder.mkdir(parents=True, exist_ok=True)
        json_path, md_path = folder / "summary.json", folder / "summary.md"
        json_path.write_text(json.dumps(self.as_dict(), indent=2) + "\n")
        md_path.write_text(self.markdown())
        return json_path, md_path
