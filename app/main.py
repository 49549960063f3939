"""Wiring only: `create_app(settings)` builds one independent service instance.

Serve with `uvicorn app.main:create_app --factory` (settings from the environment).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from . import __version__
from .admission import Admission
from .api import router
from .db import Database
from .errors import ServiceError
from .http_errors import install_error_handlers
from .metrics import Metrics
from .passwords import PasswordHasher
from .request_limits import LimitRequestBody
from .resilience import RetryBudget, RetryPolicy
from .settings import Settings

log = logging.getLogger(__name__)


def retry_policy(settings: Settings, rng: random.Random | None = None) -> RetryPolicy:
    budget = (RetryBudget(settings.retry_budget_tokens, settings.retry_budget_ratio)
              if settings.retry_budget_tokens > 0 else None)
    return RetryPolicy(
        max_attempts=settings.retry_max_attempts,
        backoff_initial_s=settings.retry_backoff_initial_s,
        backoff_max_s=settings.retry_backoff_max_s,
        rng=rng or random.Random(),
        budget=budget,
    )


def create_app(settings: Settings | None = None, *, retry: RetryPolicy | None = None) -> FastAPI:
    settings = settings or Settings()
    logging.basicConfig(level=settings.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("app").setLevel(settings.log_level)
    metrics = Metrics()
    db = Database.open(settings, metrics, retry or retry_policy(settings))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Admission]]:
        checkpoints = (
            asyncio.create_task(_checkpoint_loop(db, settings.sqlite_checkpoint_interval_s))
            if settings.sqlite_checkpoint_interval_s > 0 and db.backend.supports_checkpoints
            else None
        )
        try:
            # The lifespan state reaches the HTTP protocol (uvicorn hands it to each
            # connection): that is how app/serve.py finds the gate.
            yield {"admission": admission}
        finally:
            if checkpoints is not None:
                checkpoints.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await checkpoints
            db.close()
            hasher.close()

    app = FastAPI(
        title="Hardened users service",
        version=__version__,
        lifespan=lifespan,
        description="Users on embedded SQLite, with deadlines, retries and back-pressure.",
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.db = db
    app.state.hasher = hasher = PasswordHasher(settings)
    metrics.watch_password_hashing(lambda: hasher.running, lambda: hasher.waiting,
                                   hasher.slots)
    admission = admission_gate(settings, db, hasher, metrics)
    install_error_handlers(app, settings.retry_after_s)
    app.include_router(router)
    app.add_middleware(LimitRequestBody, max_bytes=settings.http_max_body_bytes,
                       timeout_s=settings.http_body_timeout_s)
    # Outermost: stamped first.
    app.add_middleware(StampArrival, metrics=metrics, admission=admission)
    return app


def admission_gate(settings: Settings, db: Database, hasher: PasswordHasher,
                   metrics: Metrics) -> Admission:
    """The routes that queue for a lane, and on which lanes, for the door's judgement."""
    gate = Admission(settings.admission_wait_s, settings.retry_after_s,
                     on_refusal=lambda reason: metrics.http_refusals.labels(reason).inc())
    gate.route("POST", "/users/", [hasher.lane, db.writer])
    gate.route("GET", "/users/", [db.readers], prefix=True)
    # The root and readiness ping the database under their own deadline and answer whatever
    # they find ("unavailable", "not ready") once it passes: a reader lane full of slow
    # statements cannot make them late, so it is no reason to refuse them. They are still
    # judged on the time spent before the app (a loop that is behind refuses them too).
    gate.route("GET", "/", [])
    gate.route("GET", "/readyz", [])
    return gate


class StampArrival:
    """Records when each request arrived: its deadline counts from there, so time spent
    queueing in the event loop or hashing a password is inside the budget, not added to it.
    Served by app/serve.py, the stamp is the request's first byte, set by the protocol; the
    time from there to here is the request's wait before the app (a histogram). Otherwise
    (an in-process client, another server) it is now. It tells the door (app/admission.py)
    that wait, and when a request it admitted has been answered."""

    def __init__(self, app: ASGIApp, metrics: Metrics, admission: Admission) -> None:
        self.app = app
        self.metrics = metrics
        self.admission = admission

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        now = time.monotonic()
        waited = now - state.setdefault("arrived", now)
        self.metrics.http_queue_seconds.observe(waited)
        self.admission.observe_door_delay(waited)
        route = state.get("admitted")  # the door's count of requests it let in (serve.py)
        try:
            await self.app(scope, receive, send)
        finally:
            if route is not None:
                route.leave()


async def _checkpoint_loop(db: Database, interval_s: float) -> None:
    """Checkpoint every `interval_s` for the life of the app. Nothing may end this loop but
    shutdown: with SQLite's auto-checkpoint off, a dead loop lets the WAL grow without bound."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await db.checkpoint()
        except ServiceError as exc:
            log.warning("checkpoint failed: %s (%s)", type(exc).__name__,
                        getattr(exc, "error_name", None))
        except Exception:
            log.exception("checkpoint failed unexpectedly; will try again")
