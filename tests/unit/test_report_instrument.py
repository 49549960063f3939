"""Which breaches the report charges to the service, and which it calls inconclusive because
the load generator's own delays could explain them (report/instrument.py), on hand-made
samples: each rule with a control that must stay a breach."""

from __future__ import annotations

from sqlite_faults.netproxy import ForwardedRequest
from sqlite_faults.report.instrument import (
    CpuSample,
    LoopLag,
    beside,
    cpu_figures,
    figures,
    service_time_view,
    service_view,
    settle,
)
from sqlite_faults.report.runner import ScenarioResult, judge_scenario
from sqlite_faults.report.scenarios import SCENARIOS
from sqlite_faults.report.slo import BREACHED, INCONCLUSIVE, MET, Objectives, judge
from sqlite_faults.traffic import OPEN, READ, LoadModel, Sample

OBJECTIVES = Objectives(p95_latency_ms=300, error_rate=0.01, deadline_grace_ms=100,
                        recovery_s=3.0, acknowledged_writes_lost=0)
TIMEOUT_S = 3.0


def sample(at: float, latency: float, *, lag: float = 0.0, waited: float = 0.0,
           status: int = 200, code: str = "", phase: str = "fault") -> Sample:
    return Sample(READ, phase, at, latency, status, code, lag=lag, waited=waited)


def verdicts(samples: list[Sample], probes: list[tuple[float, float]]) -> dict[str, str]:
    """slo -> status, judged as the runner does: measured, then the service's view."""
    loop = LoopLag(probes)
    steady = [sample(i * 0.01, 0.01, phase="steady") for i in range(100)]
    recovery = [sample(4 + i * 0.01, 0.01, phase="recovery") for i in range(100)]
    every = steady + samples + recovery

    def judged(of: list[Sample]) -> list:  # type: ignore[type-arg]
        return judge("s", READ, "available", of, 4.0, OBJECTIVES, 1.0, None)

    settled = settle(judged(every), judged(service_view(every, loop, TIMEOUT_S)), "why")
    return {v.slo: v.status for v in settled}


def test_latency_the_generator_added_by_sending_late_is_inconclusive() -> None:
    late = [sample(2 + i * 0.01, 0.45, lag=0.4) for i in range(100)]
    assert verdicts(late, [])["p95 latency (fault)"] == INCONCLUSIVE


def test_latency_spent_waiting_for_a_free_connection_is_inconclusive() -> None:
    queued = [sample(2 + i * 0.01, 0.5, waited=0.45) for i in range(100)]
    assert verdicts(queued, [])["p95 latency (fault)"] == INCONCLUSIVE


def test_answers_read_late_by_a_busy_generator_loop_are_inconclusive() -> None:
    slow = [sample(2 + i * 0.01, 0.4) for i in range(100)]
    busy_loop = [(2 + i * 0.02, 0.35) for i in range(150)]
    assert verdicts(slow, busy_loop)["p95 latency (fault)"] == INCONCLUSIVE


def test_a_slow_service_behind_a_prompt_generator_is_breached() -> None:
    slow = [sample(2 + i * 0.01, 0.5, lag=0.001) for i in range(100)]
    prompt_loop = [(2 + i * 0.02, 0.001) for i in range(150)]
    assert verdicts(slow, prompt_loop)["p95 latency (fault)"] == BREACHED


def test_a_breach_larger_than_the_instrument_delay_stays_the_services() -> None:
    # the generator was late by 100 ms, but the service still took 900 ms on top of that
    slow = [sample(2 + i * 0.01, 1.0, lag=0.1) for i in range(100)]
    assert verdicts(slow, [])["p95 latency (fault)"] == BREACHED


def test_timeouts_the_generator_ate_into_are_left_out_of_the_services_errors() -> None:
    fine = [sample(2 + i * 0.01, 0.01) for i in range(100)]
    starved = [sample(2.5, TIMEOUT_S, waited=2.5, status=0, code="ClientTimeout")
               for _ in range(5)]
    assert verdicts(fine + starved, [])["error rate (fault)"] == INCONCLUSIVE


def test_timeouts_of_a_silent_service_stay_errors() -> None:
    fine = [sample(2 + i * 0.01, 0.01) for i in range(100)]
    silent = [sample(2.5, TIMEOUT_S, waited=0.01, status=0, code="ClientTimeout")
              for _ in range(5)]
    assert verdicts(fine + silent, [])["error rate (fault)"] == BREACHED


def test_a_met_check_stays_met_and_a_service_error_is_never_excused() -> None:
    fine = [sample(2 + i * 0.01, 0.01) for i in range(100)]
    # the generator sent these 500 ms late, and still they are the service's 500s
    errors = [sample(2.5, 0.6, lag=0.5, status=500, code="internal_error") for _ in range(5)]
    statuses = verdicts(fine + errors, [])
    assert statuses["p95 latency (fault)"] == MET
    assert statuses["error rate (fault)"] == BREACHED  # a 500 is the service's whoever waited


def test_figures_report_the_instruments_delays_in_a_window() -> None:
    samples = [sample(1 + i * 0.01, 0.2, lag=0.01, waited=0.002 * (i % 2)) for i in range(100)]
    loop = LoopLag([(1 + i * 0.02, 0.005 if i < 40 else 0.05) for i in range(50)])
    shown = figures(samples, loop, 1.0, 2.0)
    assert shown["requests"] == 100
    assert shown["waited_for_connection"] == 50
    assert shown["loop_lag_max_ms"] == 50.0
    assert 10 <= shown["delay_p95_ms"] <= 63


def _network_verdicts(samples: list[Sample], log: dict[str, ForwardedRequest]
                      ) -> dict[str, str]:
    steady = [sample(i * 0.01, 0.01, phase="steady") for i in range(100)]
    view = service_time_view(steady + samples, log, network=True)
    return {v.slo: v.status for v in judge("s", READ, "available", view, 4.0, OBJECTIVES,
                                           1.0, None)}


def test_network_fault_time_the_service_did_not_spend_is_not_the_services() -> None:
    # The client saw 450 ms; the proxy logged 5 ms between forwarding and the answer.
    delayed = [Sample(READ, "fault", 2 + i * 0.01, 0.45, 200, "", request_id=str(i))
               for i in range(100)]
    log = {str(i): ForwardedRequest(100.0, 100.005, 200) for i in range(100)}
    assert _network_verdicts(delayed, log)["p95 latency (fault)"] == MET


def test_a_service_slow_behind_the_network_fault_is_still_breached() -> None:
    slow = [Sample(READ, "fault", 2 + i * 0.01, 0.6, 200, "", request_id=str(i))
            for i in range(100)]
    log = {str(i): ForwardedRequest(100.0, 100.5, 200) for i in range(100)}
    assert _network_verdicts(slow, log)["p95 latency (fault)"] == BREACHED


def test_requests_the_service_got_and_never_answered_stay_its_timeouts() -> None:
    fine = [Sample(READ, "fault", 2 + i * 0.01, 0.01, 200, "", request_id=str(i))
            for i in range(100)]
    held = [Sample(READ, "fault", 2.5, 3.0, 0, "ClientTimeout", request_id=f"h{i}")
            for i in range(5)]
    log = {str(i): ForwardedRequest(100.0, 100.005, 200) for i in range(100)}
    log.update({f"h{i}": ForwardedRequest(100.0, None, None) for i in range(5)})
    assert _network_verdicts(fine + held, log)["error rate (fault)"] == BREACHED
    # ...while the same timeouts, never forwarded (a black hole), are the network's.
    swallowed = {k: v for k, v in log.items() if not k.startswith("h")}
    assert _network_verdicts(fine + held, swallowed)["error rate (fault)"] == MET


def test_the_services_own_error_answer_counts_even_if_the_client_timed_out() -> None:
    fine = [Sample(READ, "fault", 2 + i * 0.01, 0.01, 200, "", request_id=str(i))
            for i in range(100)]
    crawled = [Sample(READ, "fault", 2.5, 3.0, 0, "ClientTimeout", request_id=f"c{i}")
               for i in range(5)]
    log = {str(i): ForwardedRequest(100.0, 100.005, 200) for i in range(100)}
    log.update({f"c{i}": ForwardedRequest(100.0, 100.01, 500) for i in range(5)})
    assert _network_verdicts(fine + crawled, log)["error rate (fault)"] == BREACHED


def test_a_window_the_network_took_whole_has_nothing_of_the_services_to_judge() -> None:
    swallowed = [Sample(READ, "fault", 2 + i * 0.01, 3.0, 0, "ClientTimeout",
                        request_id=str(i)) for i in range(50)]
    steady = [sample(i * 0.01, 0.01, phase="steady") for i in range(100)]
    view = service_time_view(steady + swallowed, {}, network=True)
    as_seen = judge("s", READ, "available", steady + swallowed, 4.0, OBJECTIVES, 1.0, None)
    judged = beside(judge("s", READ, "available", view, 4.0, OBJECTIVES, 1.0, None), as_seen,
                    network=True)
    shown = {v.slo: v for v in judged}
    assert shown["requests (fault)"].passed
    assert "0 reached the service" in shown["requests (fault)"].observed
    # ...while the raw judgement of the same samples (the client's view) is a breach.
    assert not next(v for v in as_seen if v.slo == "p95 latency (fault)").passed


def _verdicts_at_the_service(samples: list[Sample], log: dict[str, ForwardedRequest]
                             ) -> dict[str, object]:
    """A scenario with no network fault, judged as the runner does."""
    steady = [sample(i * 0.01, 0.01, phase="steady") for i in range(100)]
    every = steady + samples
    view = service_time_view(every, log, network=False)
    judged = beside(judge("s", READ, "fail-fast", view, 4.0, OBJECTIVES, 1.0, None),
                    judge("s", READ, "fail-fast", every, 4.0, OBJECTIVES, 1.0, None),
                    network=False)
    settled = settle(judged, judge("s", READ, "fail-fast",
                                   service_view(view, LoopLag([]), TIMEOUT_S), 4.0,
                                   OBJECTIVES, 1.0, None), "why")
    return {v.slo: v for v in settled}


def _late_504s(client_s: float, service_s: float, attempts: int = 1
               ) -> tuple[list[Sample], dict[str, ForwardedRequest]]:
    late = [Sample(READ, "fault", 2 + i * 0.01, client_s, 504, "deadline_exceeded",
                   attempts=attempts, request_id=str(i)) for i in range(100)]
    return late, {str(i): ForwardedRequest(100.0, 100.0 + service_s, 504) for i in range(100)}


def test_a_504_the_proxy_or_generator_made_late_is_met_at_the_service() -> None:
    """The service answered its 504s at 1.08 s (within the 1.1 s of deadline and grace); the
    client read them at 1.17 s. The check is the service's: met, the client's figure beside."""
    late, log = _late_504s(1.17, 1.08)
    check = _verdicts_at_the_service(late, log)["fail fast (fault)"]
    assert check.status == MET
    assert "as the client saw it" in str(check.observed)


def test_a_504_the_service_itself_answered_late_is_breached() -> None:
    late, log = _late_504s(1.25, 1.2)
    assert _verdicts_at_the_service(late, log)["fail fast (fault)"].status == BREACHED


def test_outside_a_network_fault_a_request_the_proxy_never_logged_counts_as_measured() -> None:
    late, _ = _late_504s(1.25, 1.2)
    assert _verdicts_at_the_service(late, {})["fail fast (fault)"].status == BREACHED


def test_a_retried_request_keeps_the_clients_figure() -> None:
    """Two attempts and a backoff: the last attempt's time at the service is not the
    request's, so the client's figure stands (here a breach no delay of the instrument's
    explains)."""
    late, log = _late_504s(1.25, 0.5, attempts=2)
    assert _verdicts_at_the_service(late, log)["fail fast (fault)"].status == BREACHED


def test_cpu_figures_say_who_had_the_machine_in_a_window() -> None:
    samples = [CpuSample(1.0 + i * 0.1, 1.0 if i < 5 else 0.5, 0.9, 0.6) for i in range(10)]
    shown = cpu_figures(samples, 1.0, 2.0)
    assert shown["cpu_samples"] == 10
    assert shown["machine_saturated_share"] == 0.5
    assert shown["machine_busy_mean"] == 0.75
    assert (shown["service_cpus_mean"], shown["instrument_cpus_mean"]) == (0.9, 0.6)
    assert cpu_figures(samples, 5.0, 6.0) == {"cpu_samples": 0}


def test_the_runner_judges_a_scenario_on_the_services_own_time() -> None:
    """The runner's judgement of a whole scenario with no network fault: 504s the service
    answered in time, read late by the client, meet the fail-fast check."""
    scenario = next(s for s in SCENARIOS if not s.network and s.expect[READ] == "fail-fast")
    late, log = _late_504s(1.17, 1.08)
    steady = [Sample(READ, "steady", i * 0.01, 0.01, 200, "") for i in range(100)]
    recovery = [Sample(READ, "recovery", 4 + i * 0.01, 0.01, 200, "") for i in range(100)]
    result = ScenarioResult("svc", scenario, samples=steady + late + recovery, fault_start=1.0,
                            fault_end=4.0, forwarded=log)
    judged = judge_scenario(result, OBJECTIVES, 1.0, LoadModel(OPEN, rate=100.0))
    check = next(v for v in judged if v.endpoint == READ and v.slo == "fail fast (fault)")
    assert check.status == MET, check
