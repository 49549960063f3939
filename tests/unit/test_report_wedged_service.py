"""The report restarts a service that stopped answering, and only such a one
(report/runner.py, `ensure_answering`)."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pytest
from sqlite_faults.ports import free_port
from sqlite_faults.report.restarts import RESTARTS, ServiceGone
from sqlite_faults.report.runner import ScenarioResult, ensure_answering, through_the_fault
from sqlite_faults.report.scenarios import SCENARIOS, FaultContext
from sqlite_faults.server import ServerNotReady, ServerProcess
from sqlite_faults.target import load_target

from examples.targets import HARDENED

pytestmark = pytest.mark.unit


class FakeServer(ServerProcess):
    """A server whose port nothing listens on: it cannot answer its readiness check."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir, app="nothing:app", ready_path="/readyz")
        self.port = free_port()
        self.up = True
        self.restarts = 0
        self.failing_starts = 0  # restarts that do not get ready

    @property
    def running(self) -> bool:
        return self.up

    def kill(self, sig: int = 0) -> None:
        self.up = False

    def start(self, *_: Any, **__: Any) -> float:
        self.restarts += 1
        if self.restarts <= self.failing_starts:
            raise ServerNotReady("the server was not ready in time:\n--- start\ndatabase is locked")
        self.up = True
        return 0.0


async def test_a_service_that_answered_during_the_drain_is_asked_again(
        tmp_path: Path) -> None:
    """It may have wedged since: this one no longer answers, and is restarted."""
    server, result = FakeServer(tmp_path), ScenarioResult("svc", SCENARIOS[0])
    await ensure_answering(server, result, answered_while_draining=True)
    assert server.restarts == 1


async def test_a_service_that_did_not_answer_during_the_drain_is_restarted_and_noted(
        tmp_path: Path) -> None:
    server, result = FakeServer(tmp_path), ScenarioResult("svc", SCENARIOS[0])
    await ensure_answering(server, result, answered_while_draining=False)
    assert server.restarts == 1
    assert "restarted" in result.notes[0]


async def test_before_a_scenario_a_service_that_does_not_answer_is_restarted(
        tmp_path: Path) -> None:
    server, result = FakeServer(tmp_path), ScenarioResult("svc", SCENARIOS[0])
    await ensure_answering(server, result)
    assert server.restarts == 1


async def test_a_restart_that_does_not_get_ready_is_tried_again(tmp_path: Path) -> None:
    server, result = FakeServer(tmp_path), ScenarioResult("svc", SCENARIOS[0])
    server.failing_starts = 1
    await ensure_answering(server, result, answered_while_draining=False)
    assert server.restarts == 2 and server.up
    assert "database is locked" in result.notes[-1]


async def test_a_service_that_never_comes_back_ends_its_scenarios_not_the_report(
        tmp_path: Path) -> None:
    server, result = FakeServer(tmp_path), ScenarioResult("svc", SCENARIOS[0])
    server.failing_starts = RESTARTS
    with pytest.raises(ServiceGone):
        await ensure_answering(server, result, answered_while_draining=False)
    assert server.restarts == RESTARTS


async def test_a_sigkill_restart_that_does_not_come_back_keeps_its_window_and_says_so(
        tmp_path: Path) -> None:
    """The SIGKILL scenario restarts the service inside its fault window, the same way:
    tried again, and a service that stays down is the scenario's finding (MLflow's server
    once was not ready within 30 s there, and the report stopped with ServerNotReady)."""
    server, result = FakeServer(tmp_path), ScenarioResult("svc", SCENARIOS[0])
    server.failing_starts = RESTARTS
    sigkill = next(s for s in SCENARIOS if s.name == "sigkill-restart")
    context = FaultContext(server, load_target(HARDENED), None,  # type: ignore[arg-type]
                           random.Random(1), 0.05, notes=result.notes)
    assert sigkill.fault is not None
    started = time.monotonic()
    await through_the_fault(sigkill.fault(context), 0.05, result)
    assert time.monotonic() - started >= 0.05  # the window kept its length
    assert server.restarts == RESTARTS and not server.up
    assert "database is locked" in result.notes[0]
    assert "did not come back" in result.notes[-1]
