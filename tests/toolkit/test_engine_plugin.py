"""The engine plugin: faults reach an engine built from a URL with ?plugin=sqlite_faults,
through the control server, without the service's code knowing."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError
from sqlite_faults import FaultControl, NoEngineYet, registered_engines, with_plugin
from sqlite_faults.engine_plugin import CONTROL_ENV


@pytest.fixture(scope="module")
def control_address() -> Iterator[str]:
    # One control server per process (the first engine starts it), as in a service.
    address = FaultControl.new().address
    yield address


@pytest.fixture
def control(control_address: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultControl]:
    monkeypatch.setenv(CONTROL_ENV, control_address)
    control = FaultControl(control_address)
    yield control
    asyncio.run(control.disarm())


def test_with_plugin_adds_the_plugin_once() -> None:
    assert with_plugin("sqlite:///a.db") == "sqlite:///a.db?plugin=sqlite_faults"
    assert with_plugin("sqlite:///a.db?x=1") == "sqlite:///a.db?x=1&plugin=sqlite_faults"
    assert with_plugin(with_plugin("sqlite:///a.db")) == with_plugin("sqlite:///a.db")


def test_an_engine_from_a_plugin_url_is_registered_and_the_dialect_never_sees_the_plugin(
        tmp_path: Path, control: FaultControl) -> None:
    engine = create_engine(with_plugin(f"sqlite:///{tmp_path / 'a.db'}"))
    plain = create_engine(f"sqlite:///{tmp_path / 'b.db'}")
    try:
        assert engine in registered_engines()
        assert plain not in registered_engines()
        assert "plugin" not in engine.url.query
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar_one() == 1
    finally:
        engine.dispose()
        plain.dispose()


def test_a_fault_armed_through_the_control_server_raises_in_the_engine_until_disarmed(
        tmp_path: Path, control: FaultControl) -> None:
    engine = create_engine(with_plugin(f"sqlite:///{tmp_path / 'a.db'}"))
    try:
        listed = asyncio.run(control.engines())
        assert any(e["url"].endswith("a.db") for e in listed)
        asyncio.run(control.arm("sql-error", kind="busy", times=1, match="^SELECT"))
        with engine.connect() as conn, pytest.raises(OperationalError, match="locked"):
            conn.execute(text("SELECT 1"))
        # Armed on every engine of the process ("any"); one statement met it.
        statuses = asyncio.run(control.faults())
        assert sum(s["injected"] for s in statuses) == 1
        reports = asyncio.run(control.disarm())
        assert {r["fault"] for r in reports} == {"InjectSqlError"}
        assert asyncio.run(control.faults()) == []
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar_one() == 1
    finally:
        engine.dispose()


def test_a_bad_fault_spec_is_a_clear_error(tmp_path: Path, control: FaultControl) -> None:
    engine = create_engine(with_plugin(f"sqlite:///{tmp_path / 'a.db'}"))
    try:
        with pytest.raises(ValueError, match="unknown error kind"):
            asyncio.run(control.arm("sql-error", kind="no-such-kind"))
        with pytest.raises(ValueError, match="unknown fault"):
            asyncio.run(control.arm("no-such-fault"))
    finally:
        engine.dispose()


def test_without_a_control_address_no_port_is_opened(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CONTROL_ENV, raising=False)
    assert CONTROL_ENV not in os.environ
    engine = create_engine(with_plugin(f"sqlite:///{tmp_path / 'a.db'}"))
    engine.dispose()
    assert engine in registered_engines()


def test_before_the_first_engine_there_is_nothing_to_list_or_remove() -> None:
    """A service may build its engine at its first request that needs it (MLflow's tracking
    server does): until then no control server is up, which means no engine and no fault,
    not an error; arming one says what is missing."""
    nobody = FaultControl.new()  # a free port: no service, so no engine, answers there
    assert asyncio.run(nobody.engines()) == []
    assert asyncio.run(nobody.disarm()) == []
    with pytest.raises(NoEngineYet, match="no engine has been built"):
        asyncio.run(nobody.arm("slow", seconds=1.0))


def test_the_control_server_answers_each_engines_diagnosis(
        tmp_path: Path, control: FaultControl) -> None:
    engine = create_engine(with_plugin(f"sqlite:///{tmp_path / 'seen.db'}"))
    try:
        with engine.connect() as conn:
            conn.execute(text("PRAGMA journal_mode=WAL"))
        answers = asyncio.run(control.diagnostics())
        ids = [e["id"] for e in asyncio.run(control.engines()) if e["url"].endswith("seen.db")]
    finally:
        engine.dispose()
    (seen,) = [a for a in answers if a["id"] in ids]
    assert (seen["dialect"], seen["journal_mode"], seen["pool"]) == ("sqlite", "wal", "QueuePool")
    assert seen["wal_reset_bug"] is not None and seen["version"]


def test_a_change_applies_its_pragmas_to_every_connection_from_then_on(
        tmp_path: Path, control: FaultControl) -> None:
    """What a counterfactual run changes from outside: the engine's connections, opened
    again, all carry it."""
    engine = create_engine(with_plugin(f"sqlite:///{tmp_path / 'changed.db'}"))
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        assert asyncio.run(control.change(journal_mode="WAL", busy_timeout="1234")) >= 1
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar_one() == "wal"
            assert conn.execute(text("PRAGMA busy_timeout")).scalar_one() == 1234
        with pytest.raises(ValueError, match="plain names and values"):
            asyncio.run(control.change(journal_mode="WAL; DROP TABLE x"))
    finally:
        engine.dispose()
