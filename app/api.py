"""Routes. Handlers are `async def` and never touch the database themselves: every DB call
goes through `Database` (app/db.py), which runs it on a worker lane under a deadline."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Request, Response, status

from . import __version__, users
from .db import Database
from .errors import ServiceError
from .http_errors import error_response
from .metrics import CONTENT_TYPE, Metrics
from .resilience import Deadline
from .schemas import (
    IDEMPOTENCY_KEY_MAX,
    IDEMPOTENCY_KEY_PATTERN,
    MAX_USER_ID,
    ErrorBody,
    ReadyStatus,
    ServiceInfo,
    UserCreate,
    UserOut,
)
from .settings import Settings

# Every dependency is `async def`: FastAPI runs a plain `def` dependency in AnyIO's thread pool,
# a thread hop per dependency per request (and up to 40 idle threads after a burst). Nothing
# here is a plain `def` a request would wait on.

async def _db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


def _arrived(request: Request) -> float:
    """When the request arrived (app.main.StampArrival), or now."""
    return getattr(request.state, "arrived", None) or time.monotonic()


def request_deadline(request: Request) -> Deadline:
    """The request's budget: from its first byte, and only while its client is there."""
    return Deadline(_arrived(request) + request.app.state.settings.db_deadline_s,
                    getattr(request.state, "gone", None))


async def _ready_deadline(request: Request) -> Deadline:
    return Deadline(_arrived(request) + request.app.state.settings.readyz_deadline_s)


DbDep = Annotated[Database, Depends(_db)]
SettingsDep = Annotated[Settings, Depends(_settings)]
MetricsDep = Annotated[Metrics, Depends(_metrics)]
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

# The error answers each route can give, all `{"error": {"code", "message", "details"?}}` JSON
# (app/http_errors.py), described by their `code`s. FastAPI documents a `model` under the
# route's own response_class media type: only JSON routes may use these.
_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before trying again",
                                "schema": {"type": "integer"}}}


def _error(description: str, **extra: Any) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description, **extra}


_VALIDATION = _error("`validation_error`: the request is not valid; `details` says where")
_INTERNAL = _error("`internal_error`")
_UNAVAILABLE = _error("`storage_busy`, `overloaded` or `storage_unavailable`",
                      headers=_RETRY_AFTER)
_DEADLINE = _error("`deadline_exceeded`: the database did not answer within `DB_DEADLINE_S`")

_CREATE_ERRORS: dict[int | str, dict[str, Any]] = {
    400: _error("`http_error`: the body could not be parsed (e.g. not UTF-8)"),
    408: _error("`request_timeout`: the body did not arrive within `HTTP_BODY_TIMEOUT_S`"),
    409: _error("`name_taken`, or `conflict` (another constraint refused the write)"),
    413: _error("`request_too_large`: the body is larger than `HTTP_MAX_BODY_BYTES`"),
    422: _error("`validation_error` (`details` says where), or `idempotency_key_reused`: "
                "the Idempotency-Key was used with a different name or password"),
    500: _INTERNAL,
    503: _UNAVAILABLE,
    504: _DEADLINE,
}
_READ_ERRORS: dict[int | str, dict[str, Any]] = {
    404: _error("`user_not_found`"),
    422: _VALIDATION,
    500: _INTERNAL,
    503: _UNAVAILABLE,
    504: _DEADLINE,
}


class PrometheusText(Response):
    """What /metrics answers: its media_type (CONTENT_TYPE without parameters) is what the
    OpenAPI documents; the answer itself carries CONTENT_TYPE whole (the format's version)."""

    media_type = CONTENT_TYPE.split(";", 1)[0].strip()


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


# The two users routes are the hot path: they take the Request and read app.state directly
# (each FastAPI dependency costs its own resolution per request), and serialise their
# UserOut once themselves (a returned model would be validated again against the
# response_model, which stays for the OpenAPI schema).
@router.post(
    "/users/",
    response_model=UserOut,
    status_code=status.HTTP_201_CREATED,
    responses=_CREATE_ERRORS,
    tags=["users"],
)
async def create_user(
    body: UserCreate,
    request: Request,
    idempotency_key: IdempotencyKeyHeader = None,
) -> Response:
    state = request.app.state
    created = await users.create_user(
        state.db, state.hasher, body.name, body.password, idempotency_key, request_deadline(request)
    )
    headers = {"Idempotent-Replayed": "true"} if created.replayed else None
    return user_response(created.user, status.HTTP_201_CREATED, headers)


@router.get("/users/{user_id}", response_model=UserOut, responses=_READ_ERRORS,
            tags=["users"])
async def read_user(user_id: UserId, request: Request) -> Response:
    user = await users.get_user(request.app.state.db, user_id, request_deadline(request))
    return user_response(user, status.HTTP_200_OK)


def user_response(user: users.UserRecord, status_code: int,
                   headers: dict[str, str] | None = None) -> Response:
    return Response(UserOut(id=user.id, name=user.name, created_at=user.created_at)
                    .model_dump_json(), status_code, headers, media_type="application/json")


@router.get("/healthz", tags=["service"])
async def healthz() -> dict[str, str]:
    """The process is alive and its event loop answers; the database is not consulted."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=ReadyStatus,
    tags=["service"],
    responses={503: _error("`not_ready`: the database did not answer within "
                           "`READYZ_DEADLINE_S`", headers=_RETRY_AFTER)},
)
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


# Prometheus text, not JSON: with the default response_class FastAPI would document the 200
# as application/json; with PrometheusText its media type is the only one documented.
@router.get(
    "/metrics",
    response_class=PrometheusText,
    tags=["service"],
    responses={200: {"description": "Prometheus text exposition format",
                     "content": {PrometheusText.media_type: {"schema": {"type": "string"}}}}},
)
async def metrics(metrics: MetricsDep) -> Response:
    return Response(metrics.render(), media_type=CONTENT_TYPE)
