"""A fault agent inside a server process, so a harness outside it can arm in-process faults.

SQL error injection and slow statements work on a SQLAlchemy engine, which lives in the
server's process; a load test drives that process over HTTP. The agent is a router mounted
only by test targets (report/targets.py), never by the service itself:

    POST   /_faults/sql-error  {"engine": "writer", "kind": "busy", "probability": 0.05,
                                "seed": 7, "match": null}
    POST   /_faults/slow       {"engine": "reader", "seconds": 2.0, "match": "users"}
    DELETE /_faults            remove every armed fault; answers what each injected
"""

from __future__ import annotations

import random
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy import Engine

from .slow import SlowStatements
from .sql_errors import InjectSqlError


class SqlErrorSpec(BaseModel):
    engine: str
    kind: str
    probability: float = 1.0
    seed: int = 0
    match: str | None = None
    times: int | None = None


class SlowSpec(BaseModel):
    engine: str
    seconds: float
    match: str | None = None


def fault_agent(engines: Callable[[], dict[str, Engine]]) -> APIRouter:
    """A router arming faults on the named engines (e.g. {"writer": ..., "reader": ...})."""
    router = APIRouter(prefix="/_faults", include_in_schema=False)
    armed = ExitStack()
    active: list[Any] = []

    def targets(name: str) -> list[Engine]:
        known = engines()
        return list(known.values()) if name == "any" else [known[name]]

    @router.post("/sql-error")
    async def arm_sql_error(spec: SqlErrorSpec) -> dict[str, int]:
        for engine in targets(spec.engine):
            fault = InjectSqlError(
                engine, spec.kind, match=spec.match, times=spec.times,
                probability=spec.probability, rng=random.Random(spec.seed),
            )
            active.append(armed.enter_context(fault))
        return {"armed": len(active)}

    @router.post("/slow")
    async def arm_slow(spec: SlowSpec) -> dict[str, int]:
        for engine in targets(spec.engine):
            active.append(armed.enter_context(SlowStatements(engine, spec.seconds, spec.match)))
        return {"armed": len(active)}

    @router.delete("")
    async def disarm() -> dict[str, list[dict[str, Any]]]:
        report = [
            {"fault": type(f).__name__, "injected": getattr(f, "injected", None),
             "started": getattr(f, "started", None)}
            for f in active
        ]
        armed.close()
        active.clear()
        return {"disarmed": report}

    return router
