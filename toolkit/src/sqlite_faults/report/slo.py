"""SLO judgement per scenario and endpoint, from recorded samples and the ledger's check."""

from __future__ import annotations

import tomllib
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlite_faults.ledger import LedgerReport
from sqlite_faults.summary import percentile

from .load import CREATE, Sample

DEFAULT_OBJECTIVES = Path(__file__).with_name("objectives.toml")
RECOVERY_BUCKET_S = 0.5


@dataclass(frozen=True)
class Objectives:
    p95_latency_ms: float
    error_rate: float
    deadline_grace_ms: float
    recovery_s: float
    acknowledged_writes_lost: int

    @classmethod
    def load(cls, path: Path = DEFAULT_OBJECTIVES) -> Objectives:
        with open(path, "rb") as f:
            data = tomllib.load(f)
        return cls(**{name: data[name] for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Verdict:
    scenario: str
    endpoint: str
    slo: str
    objective: str
    observed: str
    margin: str
    passed: bool
    pattern: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PhaseStats:
    count: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    error_rate: float
    statuses: dict[str, int]

    @classmethod
    def of(cls, samples: list[Sample]) -> PhaseStats:
        latencies = [s.latency * 1000 for s in samples]
        errors = sum(not s.ok for s in samples)
        statuses = Counter(str(s.status) + (f" {s.code}" if s.code else "") for s in samples)
        return cls(
            count=len(samples), p50_ms=round(percentile(latencies, 0.5), 1),
            p95_ms=round(percentile(latencies, 0.95), 1),
            p99_ms=round(percentile(latencies, 0.99), 1),
            max_ms=round(max(latencies, default=0.0), 1),
            error_rate=round(errors / len(samples), 4) if samples else 0.0,
            statuses=dict(statuses.most_common()),
        )


def judge(scenario: str, endpoint: str, expect: str, samples: list[Sample],
          fault_end: float, objectives: Objectives, deadline_s: float | None,
          ledger: LedgerReport | None) -> list[Verdict]:
    """Every verdict for one scenario and endpoint (passed ones included)."""
    by_phase = {phase: [s for s in samples if s.phase == phase]
                for phase in ("steady", "fault", "recovery")}
    verdicts = _available(scenario, endpoint, "steady", by_phase["steady"], objectives)
    if expect == "available":
        verdicts += _available(scenario, endpoint, "fault", by_phase["fault"], objectives)
    elif expect == "fail-fast":
        verdicts.append(_fail_fast(scenario, endpoint, by_phase["fault"], objectives,
                                   deadline_s))
    verdicts.append(_recovery(scenario, endpoint, by_phase["recovery"], fault_end, objectives))
    if endpoint == CREATE and ledger is not None:
        lost = ledger.lost + ledger.duplicated + ledger.phantoms + ledger.unresolved
        verdicts.append(Verdict(
            scenario, endpoint, "acknowledged writes lost",
            f"= {objectives.acknowledged_writes_lost}", str(lost),
            f"+{lost - objectives.acknowledged_writes_lost}",
            lost <= objectives.acknowledged_writes_lost,
            "; ".join(ledger.problems[:3]),
        ))
    return verdicts


def _available(scenario: str, endpoint: str, phase: str, samples: list[Sample],
               objectives: Objectives) -> list[Verdict]:
    stats = PhaseStats.of(samples)
    if not stats.count:
        return [Verdict(scenario, endpoint, f"requests ({phase})", "> 0", "0", "n/a", False,
                        "no request completed in this phase")]
    p95_ok = stats.p95_ms < objectives.p95_latency_ms
    errors_ok = stats.error_rate < objectives.error_rate
    return [
        Verdict(scenario, endpoint, f"p95 latency ({phase})",
                f"p95 < {objectives.p95_latency_ms:g} ms", f"{stats.p95_ms:.2f} ms",
                f"{stats.p95_ms - objectives.p95_latency_ms:+.2f} ms", p95_ok,
                "" if p95_ok else pattern(samples)),
        Verdict(scenario, endpoint, f"error rate ({phase})",
                f"error rate < {objectives.error_rate:.0%}", f"{stats.error_rate:.1%}",
                f"{(stats.error_rate - objectives.error_rate) * 100:+.1f} pp", errors_ok,
                "" if errors_ok else pattern(samples)),
    ]


def _fail_fast(scenario: str, endpoint: str, samples: list[Sample], objectives: Objectives,
               deadline_s: float | None) -> Verdict:
    """Every request answered; failures only as 503/504; nothing past deadline + grace."""
    limit_ms = ((deadline_s or 0) * 1000 + objectives.deadline_grace_ms
                if deadline_s is not None else objectives.p95_latency_ms)
    stats = PhaseStats.of(samples)
    unclean = [s for s in samples if not s.ok and s.status not in (503, 504)]
    passed = bool(samples) and not unclean and stats.max_ms <= limit_ms
    observed = f"max {stats.max_ms:.0f} ms, {len(unclean)} unclean failures"
    return Verdict(scenario, endpoint, "fail fast (fault)",
                   f"503/504 within {limit_ms:.0f} ms", observed,
                   f"{stats.max_ms - limit_ms:+.0f} ms", passed,
                   "" if passed else pattern(samples))


def _recovery(scenario: str, endpoint: str, samples: list[Sample], fault_end: float,
              objectives: Objectives) -> Verdict:
    """Seconds after the fault until every later half-second bucket meets the objectives."""
    recovered_after = recovery_time(samples, fault_end, objectives)
    objective = f"< {objectives.recovery_s:g} s"
    if recovered_after is None:
        return Verdict(scenario, endpoint, "recovery", objective, "not recovered", "n/a",
                       False, pattern(samples))
    return Verdict(scenario, endpoint, "recovery", objective, f"{recovered_after:.1f} s",
                   f"{recovered_after - objectives.recovery_s:+.1f} s",
                   recovered_after < objectives.recovery_s)


def recovery_time(samples: list[Sample], fault_end: float,
                  objectives: Objectives) -> float | None:
    if not samples:
        return None
    buckets: dict[int, list[Sample]] = {}
    for sample in samples:
        buckets.setdefault(int((sample.at - fault_end) / RECOVERY_BUCKET_S), []).append(sample)
    recovered_from: int | None = None
    for index in sorted(buckets):
        stats = PhaseStats.of(buckets[index])
        good = (stats.p95_ms < objectives.p95_latency_ms
                and stats.error_rate < max(objectives.error_rate, 1 / stats.count))
        if good and recovered_from is None:
            recovered_from = index
        elif not good:
            recovered_from = None
    return None if recovered_from is None else recovered_from * RECOVERY_BUCKET_S


def pattern(samples: list[Sample]) -> str:
    """A short description of how the failures or the slowness looked."""
    if not samples:
        return "no requests"
    failures = [s for s in samples if not s.ok]
    if failures:
        codes = Counter(f"{s.status or 'no answer'} {s.code}".strip() for s in failures)
        top = ", ".join(f"{code} x{n}" for code, n in codes.most_common(3))
        return f"{len(failures)} of {len(samples)} failed: {top}"
    stats = PhaseStats.of(samples)
    return f"tail latency up: p50 {stats.p50_ms:.0f} ms, p99 {stats.p99_ms:.0f} ms"
