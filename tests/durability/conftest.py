"""Fixtures of the durability suite: real server processes of the service as deployed."""

from __future__ import annotations

import sys
from collections.abc import Callable
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


@pytest.fixture
def servers(request: pytest.FixtureRequest,
            service_server: Callable[..., ServerProcess]) -> Callable[..., ServerProcess]:
    """Make (unstarted) server processes of the service as deployed (app.serve, with its
    limits and graceful shutdown), each on its own data folder, with test settings as keyword
    arguments (`servers(sqlite_synchronous="FULL")`). The toolkit's `service_server` kills
    them after the test and puts their logs and the seed into a failure's report."""
    on_postgres = request.getfixturevalue("on_postgres")

    def make(name: str = "server", **env: Any) -> ServerProcess:
        values = {**QUICK_ENV, **{k.upper(): str(v) for k, v in env.items()}}
        if on_postgres:
            values.setdefault("DATABASE_URL", request.getfixturevalue("database_url"))
        return service_server(name=name, start=False, env=values, launcher=SERVE)

    return make
