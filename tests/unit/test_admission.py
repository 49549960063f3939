"""The door's judgement (app/admission.py) on its own: the wait it expects from the lanes, from
the requests it admitted that have not reached a lane yet, and from the event loop's delay."""

from __future__ import annotations

import time

import pytest

from app.admission import Admission

pytestmark = pytest.mark.unit


class FakeLane:
    def __init__(self, workers: int, drain_seconds: float, queued: int = 0) -> None:
        self.workers = workers
        self.drain_seconds = drain_seconds
        self.queued = queued

    def wait_for(self, calls: int) -> float:
        return calls * self.drain_seconds


def gate_with(lane: FakeLane, max_wait_s: float = 1.0) -> tuple[Admission, object]:
    refused: list[str] = []
    gate = Admission(max_wait_s, retry_after_s=1, on_refusal=refused.append)
    gate.route("POST", "/users/", [lane])
    route = gate.route_of(b"POST", b"/users/?x=1")
    assert route is not None
    return gate, route


def test_routes_match_method_and_path_or_prefix() -> None:
    gate = Admission(1.0, 1)
    lane = FakeLane(1, 0.001)
    gate.route("GET", "/users/", [lane], prefix=True)
    gate.route("GET", "/", [lane])
    assert gate.route_of(b"GET", b"/users/17") is not None
    assert gate.route_of(b"GET", b"/") is not None
    assert gate.route_of(b"GET", b"/healthz") is None
    assert gate.route_of(b"POST", b"/users/17") is None


def test_the_queue_ahead_times_the_drain_time_is_the_expected_wait() -> None:
    gate, route = gate_with(FakeLane(workers=2, drain_seconds=0.1, queued=5))
    assert route.expected_wait() == pytest.approx(0.5)  # type: ignore[attr-defined]
    assert gate.admits(route, time.monotonic())  # type: ignore[arg-type]
    gate2, route2 = gate_with(FakeLane(workers=2, drain_seconds=0.1, queued=11))
    assert not gate2.admits(route2, time.monotonic())  # type: ignore[arg-type]


def test_admitted_requests_count_before_they_reach_the_lane() -> None:
    gate, route = gate_with(FakeLane(workers=1, drain_seconds=0.1))
    admitted = 0
    while gate.admits(route, time.monotonic()):  # type: ignore[arg-type]
        route.enter()  # type: ignore[attr-defined]
        admitted += 1
        assert admitted < 100, "the door never closed"
    assert admitted == 11  # 1 working + 10 waiting 0.1 s each fill the 1 s bound


def test_time_already_spent_counts() -> None:
    gate, route = gate_with(FakeLane(workers=1, drain_seconds=0.01))
    assert not gate.admits(route, time.monotonic() - 1.5)  # type: ignore[arg-type]


def test_a_loop_that_is_behind_makes_the_door_refuse() -> None:
    refused: list[str] = []
    gate = Admission(1.0, 1, on_refusal=refused.append)
    gate.route("GET", "/users/", [FakeLane(2, 0.0001)], prefix=True)
    route = gate.route_of(b"GET", b"/users/1")
    assert route is not None and gate.admits(route, time.monotonic())
    for _ in range(2000):  # requests have been waiting 2 s for the loop before the app
        gate.observe_door_delay(2.0)
    assert not gate.admits(route, time.monotonic())
    assert refused == ["overloaded"]


def test_the_refusal_is_a_complete_json_503_with_retry_after() -> None:
    gate = Admission(2.5, retry_after_s=3)
    head, _, body = gate.refusal_bytes.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 ")
    assert b"retry-after: 3" in head
    assert b"content-length: %d" % len(body) in head
    assert b"connection: close" not in head
    assert b"connection: close" in gate.refusal_bytes_closing
    assert b'"code": "overloaded"' in body


def test_the_root_and_readiness_are_not_refused_for_a_reader_lane_full_of_slow_reads() -> None:
    # They ping the database under their own deadline and answer what they find: a lane of
    # 2 s statements cannot make them late. Reads of users, which must wait, are refused.
    from types import SimpleNamespace

    from app.main import admission_gate
    from app.settings import Settings

    stuck = FakeLane(workers=4, drain_seconds=0.5, queued=200)
    db = SimpleNamespace(readers=stuck, writer=FakeLane(1, 0.001))
    hasher = SimpleNamespace(lane=FakeLane(2, 0.01))
    counted = SimpleNamespace(inc=lambda: None)
    metrics = SimpleNamespace(http_refusals=SimpleNamespace(labels=lambda reason: counted))
    gate = admission_gate(Settings(), db, hasher, metrics)  # type: ignore[arg-type]
    for path in (b"/", b"/readyz"):
        route = gate.route_of(b"GET", path)
        assert route is not None and gate.admits(route, time.monotonic()), path
    read = gate.route_of(b"GET", b"/users/7")
    assert read is not None and not gate.admits(read, time.monotonic())


def test_a_refused_connection_is_held_only_once_refusals_come_fast() -> None:
    """A few refusals a second leave their connections alone (a pooled client's next request
    on one may be for a route that is admitted); past the unheld rate, refused connections are
    held, and a quiet second gives the allowance back."""
    now = [100.0]
    gate = Admission(max_wait_s=0.5, retry_after_s=1, unheld_refusals_per_s=3,
                     clock=lambda: now[0])
    assert [gate.holds_after_refusal() for _ in range(5)] == [False, False, False, True, True]
    now[0] += 0.34  # a little more than one refusal's worth of time
    assert [gate.holds_after_refusal() for _ in range(2)] == [False, True]
    now[0] += 10.0  # a long quiet spell refills one second's worth, no more
    assert [gate.holds_after_refusal() for _ in range(4)] == [False, False, False, True]
