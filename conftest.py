"""Suite-wide options, markers by folder, and the fixtures every suite shares.

Options (all also readable from the environment, for tox):
  --backend sqlite|postgres          the database every test service uses (default sqlite; postgres
                                     starts a throwaway PostgreSQL server)
  --durability-mode quick|nightly    how long the durability suite runs (default quick)
  --durability-budget-s S            nightly: the most seconds the random-kill scenario may run
  --durability-cycles N              nightly: the kill/restart cycles it must reach (1000)
  --durability-summary DIR           where the durability summary goes

--fault-seed and --sqlite-synchronous (the whole suite under that durability level) are the
fault toolkit's pytest plugin's (sqlite_faults.plugin), as are the fault fixtures.
"""

from __future__ import annotations

import itertools
import os
import random
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from sqlite_faults.inspect_db import query_url
from sqlite_faults.postgres_server import PostgresServer, pg_bin_dir
from sqlite_faults.summary import DurabilitySummary

from app.main import create_app
from app.settings import Settings

ROOT = Path(__file__).resolve().parent

# pytester, for tests of the fault toolkit's own pytest plugin (tests/toolkit/).
pytest_plugins = ["pytester"]

# Markers follow the folder a test lives in, so `pytest -m fault` needs no decorator anywhere.
_FOLDER_MARKERS = {"unit": "unit", "fault": "fault", "durability": "durability",
                   "report": "report", "toolkit": "toolkit"}

hypothesis_settings.register_profile(
    "ci", max_examples=25, stateful_step_count=20, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
hypothesis_settings.register_profile(
    "nightly", max_examples=500, stateful_step_count=50, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("hardened service")
    group.addoption(
        "--backend", choices=["sqlite", "postgres"],
        default=os.environ.get("TEST_BACKEND", "sqlite"),
        help="database for every service the tests start (postgres: a throwaway server)",
    )
    group.addoption(
        "--durability-mode", choices=["quick", "nightly"],
        default=os.environ.get("DURABILITY_MODE", "quick"),
        help="quick (CI, minutes) or nightly (a time budget, many cycles)",
    )
    group.addoption(
        "--durability-budget-s", type=float,
        default=float(os.environ.get("DURABILITY_BUDGET_S", "2700")),
        help="nightly mode: the most seconds the random-kill scenario may run per synchronous "
             "level (a cap: it stops at --durability-cycles)",
    )
    group.addoption(
        "--durability-cycles", type=int,
        default=int(os.environ.get("DURABILITY_CYCLES", "1000")),
        help="nightly mode: kill/restart cycles the random-kill scenario runs per level",
    )
    group.addoption(
        "--durability-summary", type=Path,
        default=Path(os.environ.get("DURABILITY_SUMMARY", ROOT / "build" / "durability")),
        help="folder for summary.json and summary.md",
    )


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [
        f"backend: {config.getoption('--backend')}",
        f"durability mode: {config.getoption('--durability-mode')}",
    ]


@pytest.fixture(scope="session")
def durability_summary(request: pytest.FixtureRequest) -> Iterator[DurabilitySummary]:
    """Figures per durability scenario, written as JSON and Markdown when the session ends."""
    config = request.config
    summary = DurabilitySummary(config.getoption("--fault-seed"),
                                config.getoption("--durability-mode"))
    yield summary
    if summary.scenarios:
        json_path, md_path = summary.write(config.getoption("--durability-summary"))
        config.stash[_SUMMARY_KEY] = (summary.markdown(), json_path, md_path)


_SUMMARY_KEY = pytest.StashKey[tuple[str, Path, Path]]()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    written = config.stash.get(_SUMMARY_KEY, None)
    if written is not None:
        markdown, json_path, md_path = written
        terminalreporter.write_sep("-", "durability summary")
        terminalreporter.write_line(markdown)
        terminalreporter.write_line(f"written to {json_path} and {md_path}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    backend = config.getoption("--backend")
    for item in items:
        only = item.get_closest_marker("sqlite_only")
        if backend == "postgres" and only is not None:
            item.add_marker(pytest.mark.skip(
                reason=f"SQLite-only: {only.args[0] if only.args else 'an SQLite mechanism'}"))
        if (backend == "sqlite" and item.get_closest_marker("postgres_only") is not None
                and pg_bin_dir() is None):
            # Otherwise PostgreSQL-only tests run in the SQLite run too, on the throwaway
            # server (database_url below).
            item.add_marker(pytest.mark.skip(reason="PostgreSQL-only, and PostgreSQL is not "
                                                    "installed (apt-get install postgresql)"))
        parts = Path(str(item.fspath)).relative_to(ROOT).parts
        if len(parts) > 1 and parts[0] == "tests" and parts[1] in _FOLDER_MARKERS:
            item.add_marker(getattr(pytest.mark, _FOLDER_MARKERS[parts[1]]))


@pytest.fixture
def anyio_backend() -> str:
    """Async tests (anyio_mode = auto in pyproject.toml) run on asyncio, as uvicorn does."""
    return "asyncio"


@pytest.fixture
def rng(fault_rng: random.Random) -> random.Random:
    """The plugin's fault_rng: seeded from --fault-seed and the test's id."""
    return fault_rng


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "users.db"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL server for the session (--backend postgres)."""
    with PostgresServer() as server:
        yield server


@pytest.fixture
def database_url(request: pytest.FixtureRequest, db_path: Path, on_postgres: bool) -> str:
    """The test service's database: an SQLite file, or a fresh PostgreSQL database (with
    --backend postgres, and for PostgreSQL-only tests in any run)."""
    if not on_postgres:
        return f"sqlite:///{db_path}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = f"t{zlib.crc32(request.node.nodeid.encode()):x}_{next(_DATABASE_NUMBERS)}"
    return server.url(server.create_database(name))


_DATABASE_NUMBERS = itertools.count()


@pytest.fixture
def on_postgres(request: pytest.FixtureRequest) -> bool:
    """True when this test's service runs on PostgreSQL (--backend postgres, or a
    PostgreSQL-only test)."""
    return (request.config.getoption("--backend") == "postgres"
            or request.node.get_closest_marker("postgres_only") is not None)


@pytest.fixture
def db_rows(database_url: str) -> Callable[..., list[tuple[Any, ...]]]:
    """Run one read-only statement against the test service's database (either backend)."""
    return lambda sql, params=(): query_url(database_url, sql, params)


@pytest.fixture
def make_settings(database_url: str, request: pytest.FixtureRequest) -> Callable[..., Settings]:
    """Settings for a test service: its own database file, cheap password hashing, no
    background checkpoints (tests call them), the suite's synchronous level."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": database_url,
            "password_hash_time_cost": 1,
            "password_hash_memory_kib": 8,
            "sqlite_checkpoint_interval_s": 0,
            "sqlite_synchronous": request.config.getoption("--sqlite-synchronous"),
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def make_app(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., FastAPI]]:
    """Build apps with setting overrides; every app built is closed after the test."""
    apps: list[FastAPI] = []

    def make(**overrides: Any) -> FastAPI:
        retry = overrides.pop("retry", None)
        app = create_app(make_settings(**overrides), retry=retry)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.state.db.close()
        app.state.hasher.close()


@pytest.fixture
async def client_for() -> AsyncIterator[Callable[[FastAPI], httpx.AsyncClient]]:
    clients: list[httpx.AsyncClient] = []

    def make(app: FastAPI) -> httpx.AsyncClient:
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
            base_url="http://service.test",
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
def app(make_app: Callable[..., FastAPI]) -> FastAPI:
    return make_app()


@pytest.fixture
def client(app: FastAPI, client_for: Callable[[FastAPI], httpx.AsyncClient]) -> httpx.AsyncClient:
    return client_for(app)
