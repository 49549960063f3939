"""Routes. Handlers are `async def` and never touch the database themselves: every DB call
goes through `Database` (app/db.py), which runs it on a worker lane under a deadline."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Request, Response, status

from . import __version__, users
from .db import Database
from .errors import ServiceError
from .http_errors import error_response
from .metrics import CONTENT_TYPE, Metrics
from .passwords import PasswordHasher
from .resilience import Deadline
from .schemas import (
    IDEMPOTENCY_KEY_MAX,
    IDEMPOTENCY_KEY_PATTERN,
    MAX_USER_ID,
    ErrorBody,
    ServiceInfo,
    UserCreate,
    UserOut,
)
from .settings import Settings

# Every dependency is `async def`: FastAPI runs a plain `def` dependency in AnyIO's thread pool,
# a thread hop per dependency per request (and up to 40 idle threads after a burst).

async def _db(request: Request) -> Database:
    return request.app.state.db


async def _hasher(request: Request) -> PasswordHasher:
    return request.app.state.hasher


async def _settings(request: Request) -> Settings:
    return request.app.state.settings


async def _metrics(request: Request) -> Metrics:
    return request.app.state.metrics


def _arrived(request: Request) -> float:
    """When the request arrived (app.main.StampArrival), or now."""
    return getattr(request.state, "arrived", None) or time.monotonic()


async def _deadline(request: Request) -> Deadline:
    return Deadline(_arrived(request) + request.app.state.settings.db_deadline_s)


async def _ready_deadline(request: Request) -> Deadline:
    return Deadline(_arrived(request) + request.app.state.settings.readyz_deadline_s)


DbDep = Annotated[Database, Depends(_db)]
HasherDep = Annotated[PasswordHasher, Depends(_hasher)]
SettingsDep = Annotated[Settings, Depends(_settings)]
MetricsDep = Annotated[Metrics, Depends(_metrics)]
DeadlineDep = Annotated[Deadline, Depends(_deadline)]
ReadyDeadlineDep = Annotated[Deadline, Depends(_ready_deadline)]
UserId = Annotated[int, Path(gt=0, le=MAX_USER_ID, description="A positive 64-bit integer")]
IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=IDEMPOTENCY_KEY_MAX,
        pattern=IDEMPOTENCY_KEY_PATTERN,
        description="Repeat a create safely: the same key and body return the original user.",
    ),
]

_ERRORS = {
    code: {"model": ErrorBody}
    for code in (404, 409, 422, 500, 503, 504)
}

router = APIRouter()


@router.get("/", response_model=ServiceInfo, tags=["service"])
async def service_info(db: DbDep, settings: SettingsDep,
                       deadline: ReadyDeadlineDep) -> ServiceInfo:
    try:
        await db.ping(deadline)
        database = "ok"
    except ServiceError:
        database = "unavailable"
    return ServiceInfo(service=settings.service_name, version=__version__, database=database)


@router.post(
    "/users/",
    response_model=UserOut,
    status_code=status.HTTP_201_CREATED,
    responses=_ERRORS,
    tags=["users"],
)
async def create_user(
    body: UserCreate,
    response: Response,
    db: DbDep,
    hasher: HasherDep,
    deadline: DeadlineDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> UserOut:
    created = await users.create_user(
        db, hasher, body.name, body.password, idempotency_key, deadline
    )
    if created.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return UserOut(**vars(created.user))


@router.get("/users/{user_id}", response_model=UserOut, responses=_ERRORS, tags=["users"])
async def read_user(user_id: UserId, db: DbDep, deadline: DeadlineDep) -> UserOut:
    return UserOut(**vars(await users.get_user(db, user_id, deadline)))


@router.get("/healthz", tags=["service"])
async def healthz() -> dict[str, str]:
    """The process is alive and its event loop answers; the database is not consulted."""
    return {"status": "ok"}


@router.get("/readyz", tags=["service"], responses={503: {"model": ErrorBody}})
async def readyz(db: DbDep, settings: SettingsDep, deadline: ReadyDeadlineDep) -> Response:
    """One DB round trip within `readyz_deadline_s`, else 503."""
    try:
        await db.ping(deadline)
    except ServiceError as exc:
        return error_response(
            503, "not_ready", f"the database did not answer: {type(exc).__name__}",
            headers={"Retry-After": str(settings.retry_after_s)},
        )
    return Response('{"status":"ready"}', media_type="application/json")


@router.get("/metrics", tags=["service"])
async def metrics(metrics: MetricsDep) -> Response:
    return Response(metrics.render(), media_type=CONTENT_TYPE)
