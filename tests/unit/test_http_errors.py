"""http_error_for: every error class in app/errors.py maps to its intended HTTP status."""

from __future__ import annotations

import inspect

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient, Response

from app import errors
from app.errors import ServiceError
from app.http_errors import HttpError, http_error_for, install_error_handlers
from app.schemas import UserCreate

pytestmark = pytest.mark.unit

# Class name -> (status, code, Retry-After sent). Every ServiceError class must be listed.
EXPECTED: dict[str, tuple[int, str, bool]] = {
    "UserNotFound": (404, "user_not_found", False),
    "NameTaken": (409, "name_taken", False),
    "IdempotencyKeyReused": (422, "idempotency_key_reused", False),
    "IntegrityViolation": (409, "conflict", False),
    "DeadlineExceeded": (504, "deadline_exceeded", False),
    "RetriesExhausted": (503, "storage_busy", True),
    "TransientStorageError": (503, "storage_busy", True),
    "LockTimeout": (503, "storage_busy", True),
    "QueueFull": (503, "overloaded", True),
    "StorageUnavailable": (503, "storage_unavailable", True),
    "StorageBug": (500, "internal_error", False),
    # Never read: its connection is gone.
    "ClientGone": (499, "client_closed_request", False),
    # Bases are never raised on their own; if one is, it is an internal error.
    "StorageError": (500, "internal_error", False),
    "DomainError": (500, "internal_error", False),
    "ServiceError": (500, "internal_error", False),
}

ERROR_CLASSES: dict[str, type[ServiceError]] = {
    name: cls
    for name, cls in inspect.getmembers(errors, inspect.isclass)
    if issubclass(cls, ServiceError)
}


def test_every_error_class_has_an_expected_mapping() -> None:
    assert set(ERROR_CLASSES) == set(EXPECTED)


@pytest.mark.parametrize(("name", "expected"), sorted(EXPECTED.items()))
def test_error_maps_to_its_status(name: str, expected: tuple[int, str, bool]) -> None:
    exc = ERROR_CLASSES[name]("message")
    error = http_error_for(exc)
    assert (error.status, error.code, error.retry_after) == expected


def test_storage_error_name_does_not_change_the_mapping() -> None:
    exc = errors.LockTimeout("busy", error_name="SQLITE_BUSY_SNAPSHOT")
    assert http_error_for(exc) == HttpError(503, "storage_busy", retry_after=True)


def test_unknown_service_error_subclass_is_internal() -> None:
    class Surprise(ServiceError):
        pass

    assert http_error_for(Surprise("?")) == HttpError(500, "internal_error", retry_after=False)


def test_unknown_subclass_of_a_mapped_class_inherits_its_mapping() -> None:
    class SlowDisk(errors.StorageUnavailable):
        pass

    assert http_error_for(SlowDisk("?")).status == 503


def test_every_503_tells_the_client_when_to_retry() -> None:
    statuses = {name: http_error_for(cls("message")) for name, cls in ERROR_CLASSES.items()}
    unavailable = {name for name, error in statuses.items() if error.status == 503}
    assert unavailable == {
        "RetriesExhausted",
        "TransientStorageError",
        "LockTimeout",
        "QueueFull",
        "StorageUnavailable",
    }
    assert all(statuses[name].retry_after for name in unavailable)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def post(exc: Exception, body: dict[str, str]) -> Response:
    """POST `body` to a bare app whose one route raises `exc`, through the error handlers."""
    app = FastAPI()
    install_error_handlers(app, retry_after_s=7)

    @app.post("/boom")
    async def boom(body: UserCreate) -> None:
        raise exc

    transport = ASGITransport(app=app, raise_app_exceptions=False)
    async with AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.post("/boom", json=body)


BODY = {"name": "ada", "password": "hunter2-secret"}


@pytest.mark.anyio
async def test_handler_sends_retry_after_on_503() -> None:
    response = await post(errors.QueueFull("the writer queue is full"), BODY)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "7"
    assert response.json() == {
        "error": {"code": "overloaded", "message": "the writer queue is full"}
    }


@pytest.mark.anyio
async def test_handler_hides_internal_error_text() -> None:
    response = await post(errors.StorageBug("no such table: users"), BODY)
    assert response.status_code == 500
    assert "Retry-After" not in response.headers
    assert response.json() == {"error": {"code": "internal_error", "message": "internal error"}}


@pytest.mark.anyio
async def test_validation_error_never_echoes_the_password() -> None:
    response = await post(RuntimeError("unreachable"), {"name": "ada", "password": "short7!"})
    assert response.status_code == 422
    assert "short7!" not in response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert [d["loc"] for d in error["details"]] == [["body", "password"]]
