"""The report restarts a service that stopped answering, and only such a one
(report/runner.py, `ensure_answering`)."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from sqlite_faults.report.runner import ScenarioResult, ensure_answering
from sqlite_faults.report.scenarios import SCENARIOS

pytestmark = pytest.mark.unit


class FakeServer:
    """A server whose port nothing listens on: it cannot answer its readiness check."""

    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}"
        self.ready_path = "/readyz"
        self.running = True
        self.restarts = 0

    def kill(self) -> None:
        self.running = False

    def start(self, **_: Any) -> None:
        self.running = True
        self.restarts += 1


async def test_a_service_that_answered_during_the_drain_is_asked_again() -> None:
    """It may have wedged since: this one no longer answers, and is restarted."""
    server, result = FakeServer(), ScenarioResult("svc", SCENARIOS[0])
    await ensure_answering(server, result, answered_while_draining=True)  # type: ignore[arg-type]
    assert server.restarts == 1


async def test_a_service_that_did_not_answer_during_the_drain_is_restarted_and_noted() -> None:
    server, result = FakeServer(), ScenarioResult("svc", SCENARIOS[0])
    await ensure_answering(server, result, answered_while_draining=False)  # type: ignore[arg-type]
    assert server.restarts == 1
    assert "restarted" in result.notes[0]


async def test_before_a_scenario_a_service_that_does_not_answer_is_restarted() -> None:
    server, result = FakeServer(), ScenarioResult("svc", SCENARIOS[0])
    await ensure_answering(server, result)  # type: ignore[arg-type]
    assert server.restarts == 1
