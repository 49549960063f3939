"""Fixtures of the durability suite: real server processes, and what a failure must print."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlite_faults.server import ServerProcess
from sqlite_faults.summary import Plan

from examples.targets import QUICK_ENV

SERVE = [sys.executable, "-m", "app.serve"]


@pytest.fixture
def plan(request: pytest.FixtureRequest) -> Callable[[int], Plan]:
    config = request.config

    def make(quick_cycles: int) -> Plan:
        return Plan(config.getoption("--durability-mode"), quick_cycles,
                    config.getoption("--durability-budget-s"),
                    config.getoption("--durability-cycles"))

    return make


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        for server in getattr(item, "durability_servers", []):
            report.sections.append((f"server log ({server.data_dir.name})", server.log_tail()))
        seed = item.config.getoption("--fault-seed")
        report.sections.append(("reproduce", f"seed {seed}: rerun {item.nodeid} "
                                             f"--fault-seed={seed}"))


@pytest.fixture
def servers(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[..., ServerProcess]]:
    """Make server processes on their own data folders; all are killed after the test, and a
    failing test's report carries their logs, the seed and the scenario."""
    made: list[ServerProcess] = []
    request.node.durability_servers = made

    on_postgres = request.getfixturevalue("on_postgres")

    def make(name: str = "server", **env: Any) -> ServerProcess:
        values = {**QUICK_ENV, **{k.upper(): str(v) for k, v in env.items()}}
        if on_postgres:
            values.setdefault("DATABASE_URL", request.getfixturevalue("database_url"))
        # As deployed: app.serve, with its limits and graceful shutdown.
        server = ServerProcess(tmp_path / name, env=values, launcher=SERVE)
        made.append(server)
        return server

    yield make
    for server in made:
        server.kill()
