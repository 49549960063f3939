"""SLO judgement of the resilience report on hand-made samples."""

from __future__ import annotations

from sqlite_faults.ledger import LedgerReport
from sqlite_faults.report.runner import phase_of
from sqlite_faults.report.slo import Objectives, judge, recovery_time
from sqlite_faults.traffic import CREATE, READ, Sample

OBJECTIVES = Objectives(p95_latency_ms=300, error_rate=0.01, deadline_grace_ms=100,
                        recovery_s=3.0, acknowledged_writes_lost=0)


def sample(at: float, latency: float, status: int = 200, phase: str = "steady",
           endpoint: str = READ, code: str = "") -> Sample:
    return Sample(endpoint, phase, at, latency, status, code)


def failed(verdicts: list) -> set[str]:  # type: ignore[type-arg]
    return {v.slo for v in verdicts if not v.passed}


def test_a_request_overlapping_the_fault_window_belongs_to_it() -> None:
    assert phase_of(sample(1.0, 0.5), fault_start=2.0, fault_end=4.0) == "steady"
    assert phase_of(sample(1.8, 0.5), fault_start=2.0, fault_end=4.0) == "fault"
    assert phase_of(sample(3.9, 0.5), fault_start=2.0, fault_end=4.0) == "fault"
    assert phase_of(sample(4.0, 0.1), fault_start=2.0, fault_end=4.0) == "recovery"


def test_slow_or_failing_available_endpoints_breach_latency_and_error_rate() -> None:
    steady = [sample(i * 0.01, 0.05) for i in range(100)]
    fault = [sample(2 + i * 0.01, 0.5, phase="fault") for i in range(50)]
    fault += [sample(2.5, 0.01, status=503, phase="fault", code="storage_busy")]
    recovery = [sample(4 + i * 0.01, 0.05, phase="recovery") for i in range(100)]
    verdicts = judge("s", READ, "available", steady + fault + recovery, 4.0, OBJECTIVES,
                     1.0, None)
    assert failed(verdicts) == {"p95 latency (fault)", "error rate (fault)"}
    bad = next(v for v in verdicts if v.slo == "error rate (fault)")
    assert "503 storage_busy x1" in bad.pattern


def test_fail_fast_needs_503_or_504_within_deadline_plus_grace() -> None:
    steady = [sample(i * 0.01, 0.05, endpoint=CREATE) for i in range(100)]
    quick = [sample(2 + i * 0.01, 1.05, status=504, phase="fault", endpoint=CREATE,
                    code="deadline_exceeded") for i in range(20)]
    ok = judge("s", CREATE, "fail-fast", steady + quick, 4.0, OBJECTIVES, 1.0, None)
    assert "fail fast (fault)" not in failed(ok)

    late = [*quick, sample(3, 1.2, status=504, phase="fault", endpoint=CREATE)]
    assert "fail fast (fault)" in failed(
        judge("s", CREATE, "fail-fast", steady + late, 4.0, OBJECTIVES, 1.0, None))
    unclean = [*quick, sample(3, 0.1, status=500, phase="fault", endpoint=CREATE)]
    assert "fail fast (fault)" in failed(
        judge("s", CREATE, "fail-fast", steady + unclean, 4.0, OBJECTIVES, 1.0, None))


def test_recovery_time_is_where_every_later_bucket_meets_the_objectives() -> None:
    slow = [sample(4 + i * 0.05, 0.6, phase="recovery") for i in range(30)]  # 4.0-5.5 s
    fast = [sample(5.5 + i * 0.05, 0.05, phase="recovery") for i in range(40)]
    assert recovery_time(slow + fast, 4.0, OBJECTIVES) == 1.5
    relapse = [sample(7.4, 0.9, phase="recovery")]  # the last bucket is slow again
    assert recovery_time(fast + relapse, 4.0, OBJECTIVES) is None


def test_lost_acknowledged_writes_fail_the_create_endpoint() -> None:
    steady = [sample(i * 0.01, 0.05, endpoint=CREATE) for i in range(100)]
    ledger = LedgerReport(acknowledged=10, lost=1, problems=["lost u-3"])
    verdicts = judge("s", CREATE, "available", steady, 0.0, OBJECTIVES, 1.0, ledger)
    lost = next(v for v in verdicts if v.slo == "acknowledged writes lost")
    assert not lost.passed and lost.observed == "1"


def test_a_phase_in_which_no_request_completed_is_breached() -> None:
    """A service that answered nothing in the fault window is not judged on empty figures."""
    steady = [sample(i * 0.01, 0.05) for i in range(100)]
    verdicts = judge("s", READ, "available", steady, 4.0, OBJECTIVES, 1.0, None)
    assert "requests (fault)" in failed(verdicts)
    fault = [sample(2 + i * 0.01, 0.05, phase="fault") for i in range(10)]
    verdicts = judge("s", READ, "available", steady + fault, 4.0, OBJECTIVES, 1.0, None)
    assert not any(v.slo.startswith("requests") for v in verdicts)


def test_judge_keeps_every_phases_verdicts_beside_the_ledgers() -> None:
    """Slow in the steady state and in the fault window, with a ledger: the latency breaches
    of both phases stay, and the four ledger verdicts come on top (mutation testing found
    that either could silently replace the other)."""
    slow = [sample(i * 0.01, 0.5, endpoint=CREATE) for i in range(50)]
    slow += [sample(2 + i * 0.01, 0.5, phase="fault", endpoint=CREATE) for i in range(50)]
    verdicts = judge("s", CREATE, "available", slow, 4.0, OBJECTIVES, 1.0,
                     LedgerReport(acknowledged=100))
    assert {"p95 latency (steady)", "p95 latency (fault)"} <= failed(verdicts)
    assert {"acknowledged writes lost", "duplicate writes", "errors that committed",
            "indeterminate writes unresolved"} <= {v.slo for v in verdicts}


def test_a_service_that_never_recovers_is_breached_as_not_recovered() -> None:
    steady = [sample(i * 0.01, 0.05) for i in range(100)]
    failing = [sample(4 + i * 0.05, 0.01, status=503, phase="recovery", code="storage_busy")
               for i in range(60)]
    verdicts = judge("s", READ, "available", steady + failing, 4.0, OBJECTIVES, 1.0, None)
    recovery = next(v for v in verdicts if v.slo == "recovery")
    assert not recovery.passed and recovery.observed == "not recovered"


def test_a_503_is_a_clean_refusal_and_one_error_is_not_a_breach_of_a_large_sample() -> None:
    steady = [sample(i * 0.01, 0.05, endpoint=CREATE) for i in range(100)]
    refused = [sample(2 + i * 0.01, 0.01, status=503, phase="fault", endpoint=CREATE,
                      code="storage_busy") for i in range(20)]
    assert "fail fast (fault)" not in failed(
        judge("s", CREATE, "fail-fast", steady + refused, 4.0, OBJECTIVES, 1.0, None))
    # 1 error in 200 is 0.5 %: under the 1 % objective.
    calm = [sample(i * 0.01, 0.05) for i in range(199)]
    calm.append(sample(1.995, 0.05, status=503, code="storage_busy"))
    assert "error rate (steady)" not in failed(
        judge("s", READ, "available", calm, 4.0, OBJECTIVES, 1.0, None))
