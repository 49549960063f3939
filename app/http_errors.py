"""The one place where failures become HTTP responses.

Every error body has the same shape: `{"error": {"code", "message", "details"?}}`. Nothing a
client sends is echoed back in an error (a rejected password would otherwise be), and nothing
from the database (SQL, driver text, parameters) or a stack trace ever is.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .errors import (
    ClientGone,
    DeadlineExceeded,
    IdempotencyKeyReused,
    IntegrityViolation,
    NameTaken,
    QueueFull,
    RetriesExhausted,
    ServiceError,
    StorageBug,
    StorageUnavailable,
    TransientStorageError,
    UserNotFound,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HttpError:
    status: int
    code: str
    retry_after: bool = False  # send Retry-After: the client may try again later


# Most specific class first: the first isinstance match wins.
ERROR_MAP: tuple[tuple[type[ServiceError], HttpError], ...] = (
    (UserNotFound, HttpError(404, "user_not_found")),
    (NameTaken, HttpError(409, "name_taken")),
    (IdempotencyKeyReused, HttpError(422, "idempotency_key_reused")),
    (DeadlineExceeded, HttpError(504, "deadline_exceeded")),
    (RetriesExhausted, HttpError(503, "storage_busy", retry_after=True)),
    # A transient error escaping the retry loop unconverted would be a bug in db.py; still,
    # the honest answer to the client is "busy, try again".
    (TransientStorageError, HttpError(503, "storage_busy", retry_after=True)),
    (QueueFull, HttpError(503, "overloaded", retry_after=True)),
    # Nobody reads it (the connection is gone); nginx's code for the case, for the log.
    (ClientGone, HttpError(499, "client_closed_request")),
    (StorageUnavailable, HttpError(503, "storage_unavailable", retry_after=True)),
    (IntegrityViolation, HttpError(409, "conflict")),
    (StorageBug, HttpError(500, "internal_error")),
)
_INTERNAL = HttpError(500, "internal_error")

_PUBLIC_MESSAGES = {
    500: "internal error",
}


def http_error_for(exc: ServiceError) -> HttpError:
    for cls, error in ERROR_MAP:
        if isinstance(exc, cls):
            return error
    return _INTERNAL


def error_response(
    status: int, code: str, message: str, *, details: list[dict[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI, retry_after_s: int) -> None:
    async def service_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ServiceError)
        error = http_error_for(exc)
        if error.status >= 500:
            # Class and result code only: the driver's message may quote SQL.
            detail = getattr(exc, "error_name", None) or type(exc.__cause__).__name__
            log.warning("%s %s -> %d %s (%s, %s)", request.method, request.url.path,
                        error.status, error.code, type(exc).__name__, detail)
        # Internal errors get a fixed message: theirs may name tables or SQL.
        message = _PUBLIC_MESSAGES.get(error.status, str(exc))
        headers = {"Retry-After": str(retry_after_s)} if error.retry_after else None
        return error_response(error.status, error.code, message, headers=headers)

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        # Keep where and what; drop "input" and "ctx", which echo what was sent (a password).
        details = [
            {"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type")}
            for err in exc.errors()
        ]
        return error_response(422, "validation_error", "the request is not valid",
                              details=details)

    async def http_exception(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not_found", 405: "method_not_allowed", 408: "request_timeout",
                413: "request_too_large"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), headers=exc.headers)

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s -> 500 unexpected %s", request.method, request.url.path,
                  type(exc).__name__, exc_info=exc)
        return error_response(500, "internal_error", "internal error")

    app.add_exception_handler(ServiceError, service_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_exception)
    app.add_exception_handler(Exception, unexpected)
