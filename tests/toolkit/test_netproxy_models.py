"""The fault proxy's models, measured on what they decide: each fault's units (ms are ms,
KiB are KiB) and bounds (a draw stays inside its range and covers it; a probability is
the share it injects), from a seeded generator, so a model that injects ten times its
setting or half its range is red here even where the end-to-end tests (test_netproxy.py,
lower bounds on a loaded machine) would pass it."""

from __future__ import annotations

import random

import pytest
from sqlite_faults.netproxy.faults import make_fault

DRAWS = 10_000


def plans(name: str, rng_seed: int, moments: list[float], **params: float) -> list[float]:
    fault = make_fault(name, params, random.Random(rng_seed), now=100.0)
    return [fault.plan(100.0 + at).delay_s for at in moments]


def test_latency_adds_its_milliseconds_exactly() -> None:
    assert set(plans("latency", 1, [0.0, 0.5, 9.0], ms=150)) == {0.150}


def test_jitter_draws_across_its_whole_range_and_never_past_it(fault_seed: int) -> None:
    delays = plans("jitter", fault_seed, [i / 100 for i in range(DRAWS)], ms=80)
    assert 0.0 <= min(delays) < 0.004 and 0.076 < max(delays) <= 0.080
    assert sum(delays) / len(delays) == pytest.approx(0.040, abs=0.002)  # uniform: mean ms/2


def test_latency_pulses_hold_one_draw_per_pulse_inside_its_range_and_none_in_the_gaps(
        fault_seed: int) -> None:
    params = {"low_ms": 150.0, "high_ms": 250.0, "pulse_ms": 1000.0, "gap_ms": 500.0}
    moments = [i / 50 for i in range(50 * 30)]  # 30 s: 20 pulses
    delays = plans("latency-pulses", fault_seed, moments, **params)
    in_pulse = [d for at, d in zip(moments, delays, strict=True) if at % 1.5 < 1.0]
    in_gap = [d for at, d in zip(moments, delays, strict=True) if at % 1.5 >= 1.0]
    assert set(in_gap) == {0.0}
    assert all(0.150 <= d <= 0.250 for d in in_pulse)
    per_pulse = {int(at // 1.5): d for at, d in zip(moments, delays, strict=True)
                 if at % 1.5 < 1.0}
    assert len(set(per_pulse.values())) == 20  # a draw of its own per pulse
    # Within a pulse every chunk gets that pulse's one delay.
    assert all(d == per_pulse[int(at // 1.5)]
               for at, d in zip(moments, delays, strict=True) if at % 1.5 < 1.0)


def test_packet_loss_loses_its_share_and_holds_one_retransmission_timeout(
        fault_seed: int) -> None:
    delays = plans("packet-loss", fault_seed, [0.0] * DRAWS, probability=0.05, rto_ms=200)
    assert set(delays) == {0.0, 0.200}
    assert delays.count(0.200) / DRAWS == pytest.approx(0.05, abs=0.01)


def test_bandwidth_paces_at_its_kibibytes_per_second() -> None:
    fault = make_fault("bandwidth", {"kib_per_s": 40}, random.Random(1), now=0.0)
    assert fault.plan(0.0).rate == 40 * 1024 and fault.plan(0.0).delay_s == 0.0


def test_an_injected_500_comes_at_its_probability(fault_seed: int) -> None:
    fault = make_fault("http-500", {"probability": 0.05}, random.Random(fault_seed), now=0.0)
    share = sum(fault.answers_request() for _ in range(DRAWS)) / DRAWS
    assert share == pytest.approx(0.05, abs=0.01)
    assert not make_fault("http-500", {"probability": 0.0}, random.Random(1),
                          now=0.0).answers_request()


def test_a_misspelt_or_missing_parameter_is_named_and_a_left_out_one_has_its_default() -> None:
    """A misspelt knob would leave a scenario measuring the default without a word."""
    with pytest.raises(ValueError, match=r"latency: unknown parameter\(s\) \['msec'\]"):
        make_fault("latency", {"msec": 150}, random.Random(1), now=0.0)
    with pytest.raises(ValueError, match="latency: parameter 'ms' is required"):
        make_fault("latency", {}, random.Random(1), now=0.0)
    # jitter's ms defaults to 100: its draws span 0-100 ms.
    assert max(plans("jitter", 1, [i / 100 for i in range(DRAWS)])) > 0.096
