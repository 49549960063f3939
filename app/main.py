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
from .api import router
from .db import Database
from .errors import ServiceError
from .http_errors import install_error_handlers
from .metrics import Metrics
from .passwords import PasswordHasher
from .request_limits import LimitRequestBody
from .resilience import RetryPolicy
from .settings import Settings

log = logging.getLogger(__name__)


def retry_policy(settings: Settings, rng: random.Random | None = None) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=settings.retry_max_attempts,
        backoff_initial_s=settings.retry_backoff_initial_s,
        backoff_max_s=settings.retry_backoff_max_s,
        rng=rng or random.Random(),
    )


def create_app(settings: Settings | None = None, *, retry: RetryPolicy | None = None) -> FastAPI:
    settings = settings or Settings()
    logging.basicConfig(level=settings.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("app").setLevel(settings.log_level)
    metrics = Metrics()
    db = Database.open(settings, metrics, retry or retry_policy(settings))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        checkpoints = (
            asyncio.create_task(_checkpoint_loop(db, settings.sqlite_checkpoint_interval_s))
            if settings.sqlite_checkpoint_interval_s > 0 and db.backend.supports_checkpoints
            else None
        )
        try:
            yield
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
    install_error_handlers(app, settings.retry_after_s)
    app.include_router(router)
    app.add_middleware(LimitRequestBody, max_bytes=settings.http_max_body_bytes,
                       timeout_s=settings.http_body_timeout_s)
    app.add_middleware(StampArrival)  # outermost: the arrival is stamped first
    return app


class StampArrival:
    """Records when each request arrived: its deadline counts from there, so time spent
    queueing in the event loop or hashing a password is inside the budget, not added to it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope.setdefault("state", {})["arrived"] = time.monotonic()
        await self.app(scope, receive, send)


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
