"""SLO judgement per scenario and endpoint, from recorded samples and the ledger's check."""

from __future__ import annotations

import dataclasses
import tomllib
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlite_faults.ledger import LedgerReport
from sqlite_faults.retry import PLAIN
from sqlite_faults.summary import percentile
from sqlite_faults.traffic import CREATE, Sample

DEFAULT_OBJECTIVES = Path(__file__).with_name("objectives.toml")
RECOVERY_BUCKET_S = 0.5

# A verdict's three states: the service met the objective, breached it, or breached it only
# as measured, with the instrument's own delays enough to explain it (instrument.py).
MET = "met"
BREACHED = "breached"
INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class Objectives:
    p95_latency_ms: float
    error_rate: float
    deadline_grace_ms: float
    recovery_s: float
    acknowledged_writes_lost: int
    # Newer objectives: an objectives file written before them still loads, at these values.
    duplicate_writes: int = 0
    errors_that_committed: int = 0
    lanes_busy_fraction: float = 0.5

    @classmethod
    def load(cls, path: Path = DEFAULT_OBJECTIVES) -> Objectives:
        with open(path, "rb") as f:
            data = tomllib.load(f)
        defaults = {"duplicate_writes", "errors_that_committed", "lanes_busy_fraction"}
        missing = [name for name in cls.__dataclass_fields__
                   if name not in data and name not in defaults]
        if missing:
            raise ValueError(f"{path}: missing objectives {missing}")
        return cls(**{name: data[name] for name in cls.__dataclass_fields__ if name in data})


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
    profile: str = PLAIN  # the client profile whose requests were judged
    # Why the breach may be the instrument's, not the service's ("" when it is not).
    inconclusive: str = ""

    @property
    def status(self) -> str:
        if self.passed:
            return MET
        return INCONCLUSIVE if self.inconclusive else BREACHED

    @property
    def breached(self) -> bool:
        return self.status == BREACHED

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status}


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
          ledger: LedgerReport | None, profile: str = PLAIN) -> list[Verdict]:
    """Every verdict for one scenario, endpoint and client profile (passed ones included);
    `samples` are that profile's, `ledger` its own write ledger's check."""
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
        verdicts += ledger_verdicts(scenario, endpoint, ledger, objectives)
    return [dataclasses.replace(v, profile=profile) for v in verdicts]


def ledger_verdicts(scenario: str, endpoint: str, ledger: LedgerReport,
                    objectives: Objectives) -> list[Verdict]:
    """What the write ledger found, each kind of wrong answer under its own name: a write
    acknowledged and then missing or changed is not the same failure as one told "failed"
    that committed anyway, nor as a retry that wrote twice."""
    # Found by reading writes back: a check that could not read them all claims nothing about
    # the rest (a loss it did find stands).
    partial = (f"{ledger.unchecked} writes not checked: the service stopped answering the "
               "check" if ledger.unchecked else "")
    checks = [
        # Acknowledged (2xx), then missing or changed; or an unresolvable indeterminate write.
        ("acknowledged writes lost", ledger.lost, objectives.acknowledged_writes_lost,
         [p for p in ledger.problems if p.startswith("lost ")]),
        ("duplicate writes", ledger.duplicated, objectives.duplicate_writes,
         [p for p in ledger.problems if p.startswith("duplicated")]),
        # Told "failed" (a definite refusal, or a 5xx), and the row exists.
        ("errors that committed", ledger.phantoms + ledger.committed_after_error,
         objectives.errors_that_committed,
         [p for p in ledger.problems if p.startswith(("row for failed", "answered "))]),
        ("indeterminate writes unresolved", ledger.unresolved, 0,
         [p for p in ledger.problems if p.startswith("unresolved")]),
    ]
    read_back = {"acknowledged writes lost", "indeterminate writes unresolved"}
    return [Verdict(scenario, endpoint, name, f"= {limit}", str(count), f"+{count - limit}",
                    count <= limit and not (partial and name in read_back),
                    "; ".join(problems[:3]),
                    inconclusive=partial if count <= limit and name in read_back else "")
            for name, count, limit, problems in checks]


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


@dataclass
class LaneSamples:
    """The service's lane gauges, sampled through a scenario (target [metrics])."""

    capacity: float = 0.0
    busy: dict[str, list[float]] = field(default_factory=dict)  # phase -> samples

    def mean(self, phase: str) -> float:
        values = self.busy.get(phase, [])
        return sum(values) / len(values) if values else 0.0

    def peak(self, phase: str) -> float:
        return max(self.busy.get(phase, []), default=0.0)

    def as_dict(self) -> dict[str, Any]:
        return {"lanes": self.capacity, **{
            phase: {"mean_busy": round(self.mean(phase), 3), "max_busy": self.peak(phase),
                    "samples": len(self.busy.get(phase, []))}
            for phase in ("steady", "fault", "recovery")}}



LANES = "lanes"  # the endpoint a lane verdict is filed under: the service's DB lanes


def lanes_verdict(scenario: str, lanes: LaneSamples, objectives: Objectives) -> Verdict:
    """Slow clients must not hold the database: DB calls in flight, averaged over the fault
    window, stay below `lanes_busy_fraction` of the lanes. A service that held a lane while
    its answer crawled out to the client would keep every lane busy for the whole window."""
    limit = objectives.lanes_busy_fraction * lanes.capacity
    fault_mean = lanes.mean("fault")
    observed = (f"mean {fault_mean:.2f} busy of {lanes.capacity:g} (steady "
                f"{lanes.mean('steady'):.2f}, peak {lanes.peak('fault'):g})")
    sampled = bool(lanes.busy.get("fault"))
    passed = sampled and lanes.capacity > 0 and fault_mean < limit
    return Verdict(scenario, LANES, "DB lanes busy (fault)",
                   f"mean < {objectives.lanes_busy_fraction:.0%} of lanes", observed,
                   f"{fault_mean - limit:+.2f}", passed,
                   "" if passed else ("no lane samples in the fault window" if not sampled
                                      else "lanes held while clients were slow"))
