"""The ledger judges what a client was told, not what a later retry was told: an
indeterminate write that had committed, resent to a service without idempotency keys, is
refused as a duplicate (409). That refusal is no answer to the first request, so the write
stays indeterminate; it must never become a definite failure whose row is then counted as
a phantom by the next check (found on the WSGI example, SIGKILLed mid-write)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from sqlite_faults import LedgerReport, ServerProcess, WriteLedger, load_target

from examples.targets import FOLDER

pytestmark = pytest.mark.timeout(120)


def test_a_committed_write_whose_retry_is_refused_is_no_phantom(
        service_server: Callable[..., ServerProcess], fault_seed: int) -> None:
    target = load_target(FOLDER / "query_api.toml")  # 409 for a name taken, no keys
    server = service_server(target, with_faults=False)
    ledger = WriteLedger(random.Random(fault_seed), target.write, prefix="resolve")
    create = ledger.new_create()

    async def run() -> list[LedgerReport]:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
            await ledger.send(client, create)
        assert create.outcome == "acknowledged"
        # The answer was lost on the way back (a SIGKILL, a reset): the client knows nothing.
        create.outcome, create.status, create.detail = "indeterminate", None, "ReadError"
        first = await ledger.check(server.base_url, Path(server.db_path))
        second = await ledger.check(server.base_url, Path(server.db_path))
        return [first, second]

    first, second = asyncio.run(run())
    assert create.outcome == "indeterminate", (create.outcome, create.status, create.detail)
    assert first.unresolved == 1 and "retry answered 409" in first.problems[0], first
    assert second.phantoms == 0 and second.failed == 0, second.problems
