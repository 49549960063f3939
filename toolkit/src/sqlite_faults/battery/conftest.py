"""The battery's service: started once per session from --target, with its fault control."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from sqlite_faults.battery.service import BatteryService
from sqlite_faults.target import Target


@pytest.fixture(scope="session")
def service(fault_target: Target, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[BatteryService]:
    battery = BatteryService(fault_target, Path(tmp_path_factory.mktemp("battery")))
    battery.start()
    try:
        yield battery
    finally:
        battery.stop()


@pytest.fixture
def fresh(service: BatteryService) -> Iterator[BatteryService]:
    """The session's service, answering and with no fault armed, before and after the test."""
    service.ensure_answering()
    try:
        yield service
    finally:
        asyncio.run(service.control.disarm())
        service.ensure_answering()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "sqlite_faults/battery" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.battery)
