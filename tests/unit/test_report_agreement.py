"""Whether runs of the report agree, check by check (report/agreement.py)."""

from __future__ import annotations

from typing import Any

from sqlite_faults.report.agreement import compare, render


def report(seed: int, *verdicts: tuple[str, str, str, str, bool]) -> dict[str, Any]:
    """A report.json's shape: (scenario, slo, status, observed/margin, network) per check."""
    scenarios: dict[str, dict[str, Any]] = {}
    for scenario, slo, status, figures, network in verdicts:
        observed, margin = figures.split("|")
        entry = scenarios.setdefault(scenario, {"network": network, "verdicts": []})
        entry["verdicts"].append({"scenario": scenario, "endpoint": "read", "profile": "plain",
                                  "slo": slo, "status": status, "passed": status == "met",
                                  "observed": observed, "margin": margin})
    return {"meta": {"seed": seed}, "targets": {"svc": list(scenarios.values())}}


def test_the_same_verdicts_agree_and_a_flip_outside_the_network_does_not() -> None:
    first = report(1, ("lock", "p95 latency (fault)", "met", "120 ms|-180 ms", False),
                   ("lock", "recovery", "met", "0.5 s|-2.5 s", False))
    same = report(2, ("lock", "p95 latency (fault)", "met", "150 ms|-150 ms", False),
                  ("lock", "recovery", "met", "0.0 s|-3.0 s", False))
    assert compare([first, same]).holds
    flipped = report(3, ("lock", "p95 latency (fault)", "breached", "320 ms|+20 ms", False),
                     ("lock", "recovery", "met", "0.0 s|-3.0 s", False))
    agreement = compare([first, same, flipped])
    assert not agreement.holds
    assert [key for key, _ in agreement.disagree["outside the network scenarios"]] == [
        ("lock", "read", "plain", "p95 latency (fault)")]
    assert "breached: 320 ms (+20 ms)" in render(agreement, ["a", "b", "c"])


def test_a_recovery_flip_counts_even_in_a_network_scenario_and_others_there_do_not() -> None:
    one = report(1, ("net", "recovery", "met", "0.0 s|-3.0 s", True),
                 ("net", "p95 latency (fault)", "met", "290 ms|-10 ms", True))
    other = report(2, ("net", "recovery", "met", "0.0 s|-3.0 s", True),
                   ("net", "p95 latency (fault)", "breached", "310 ms|+10 ms", True))
    assert compare([one, other]).holds  # a network fault's own check: shown, not held
    later = report(3, ("net", "recovery", "breached", "not recovered|n/a", True),
                   ("net", "p95 latency (fault)", "met", "290 ms|-10 ms", True))
    assert not compare([one, later]).holds


def test_agreeing_checks_near_their_threshold_are_listed_with_their_margins() -> None:
    one = report(1, ("lock", "p95 latency (fault)", "met", "290 ms|-10 ms", False))
    two = report(2, ("lock", "p95 latency (fault)", "met", "200 ms|-100 ms", False))
    agreement = compare([one, two])
    assert agreement.holds and [key[3] for key, _ in agreement.near] == ["p95 latency (fault)"]


def test_a_flip_between_inconclusive_and_breached_is_a_disagreement_and_says_so() -> None:
    """Inconclusive (the instrument may explain it) and breached (the service's) are not the
    same verdict: runs that differ so disagree, and the headline says it."""
    unsure = report(1, ("lock", "p95 latency (fault)", "inconclusive", "320 ms|+20 ms", False))
    breached = report(2, ("lock", "p95 latency (fault)", "breached", "320 ms|+20 ms", False))
    agreement = compare([unsure, breached])
    assert not agreement.holds
    assert render(agreement, ["a", "b"]).startswith(
        "# Agreement of 2 runs: **the verdicts disagree**")
