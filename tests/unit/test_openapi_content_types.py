"""Every route's OpenAPI documents the content type it really answers with, per status code.

Schema-driven fuzzers (schemathesis) check each response's Content-Type against the media
types the OpenAPI lists for that status; here every route is requested once per status it can
be made to answer (success, client errors, storage failures injected at the handler's call into
app/users.py), and the answer's media type must be the one, and only one, documented for that
status. JSON answers whose schema names one of app/schemas.py's models must also parse as it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from app import errors, schemas, users

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]

PASSWORD = "correct horse battery"
KEY = "content-type-key"
BODY_TIMEOUT_S = 0.2
MAX_BODY = 1024

Fault = Callable[[FastAPI, pytest.MonkeyPatch], None]


def _raising(exc: Exception) -> Callable[..., Any]:
    async def fail(*args: object, **kwargs: object) -> Any:
        raise exc
    return fail


def _users_fault(function: str, exc: Exception) -> Fault:
    def install(app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(users, function, _raising(exc))
    return install


def _ping_fault(exc: Exception) -> Fault:
    def install(app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(app.state.db, "ping", _raising(exc))
    return install


async def _slow_body() -> AsyncIterator[bytes]:
    yield b'{"name": '
    await asyncio.sleep(BODY_TIMEOUT_S * 5)
    yield b'"late", "password": "correct horse battery"}'


async def _chunked_large_body() -> AsyncIterator[bytes]:
    for _ in range(4):
        yield b"x" * MAX_BODY


@dataclass(frozen=True)
class Case:
    id: str
    method: str
    route: str  # the OpenAPI path
    status: int
    url: str | None = None  # the route itself when None; "{user_id}" is the seeded user's id
    json: Any = None
    content: Any = None  # bytes, or a function returning a fresh async iterator of chunks
    headers: dict[str, str] = field(default_factory=dict)
    fault: Fault | None = None


NEW_USER = {"name": "grace", "password": PASSWORD}

CASES = [
    Case("root", "get", "/", 200),
    Case("healthz", "get", "/healthz", 200),
    Case("readyz", "get", "/readyz", 200),
    Case("readyz-db-down", "get", "/readyz", 503,
         fault=_ping_fault(errors.StorageUnavailable("disk I/O error"))),
    Case("metrics", "get", "/metrics", 200),
    Case("create", "post", "/users/", 201, json=NEW_USER),
    Case("create-replayed", "post", "/users/", 201, json={"name": "ada", "password": PASSWORD},
         headers={"Idempotency-Key": KEY}),
    Case("create-name-taken", "post", "/users/", 409,
         json={"name": "ada", "password": PASSWORD}),
    Case("create-invalid-body", "post", "/users/", 422, json={"name": "", "password": "x"}),
    Case("create-not-json", "post", "/users/", 422, content=b"{not json",
         headers={"Content-Type": "application/json"}),
    Case("create-not-utf8", "post", "/users/", 400, content=b"T\x12\xff",
         headers={"Content-Type": "application/json"}),
    Case("create-invalid-key", "post", "/users/", 422, json=NEW_USER,
         headers={"Idempotency-Key": "has space"}),
    Case("create-key-reused", "post", "/users/", 422,
         json={"name": "someone-else", "password": PASSWORD}, headers={"Idempotency-Key": KEY}),
    Case("create-too-large", "post", "/users/", 413, content=b"x" * (MAX_BODY + 1),
         headers={"Content-Type": "application/json"}),
    Case("create-too-large-chunked", "post", "/users/", 413, content=_chunked_large_body,
         headers={"Content-Type": "application/json"}),
    Case("create-too-slow", "post", "/users/", 408, content=_slow_body,
         headers={"Content-Type": "application/json"}),
    Case("create-overloaded", "post", "/users/", 503, json=NEW_USER,
         fault=_users_fault("create_user", errors.QueueFull("queue full"))),
    Case("create-deadline", "post", "/users/", 504, json=NEW_USER,
         fault=_users_fault("create_user", errors.DeadlineExceeded("deadline"))),
    Case("create-storage-bug", "post", "/users/", 500, json=NEW_USER,
         fault=_users_fault("create_user", errors.StorageBug("no such table"))),
    Case("read", "get", "/users/{user_id}", 200, url="/users/{user_id}"),
    Case("read-missing", "get", "/users/{user_id}", 404, url="/users/424242"),
    Case("read-bad-id", "get", "/users/{user_id}", 422, url="/users/abc"),
    Case("read-busy", "get", "/users/{user_id}", 503, url="/users/{user_id}",
         fault=_users_fault("get_user", errors.RetriesExhausted("busy"))),
    Case("read-deadline", "get", "/users/{user_id}", 504, url="/users/{user_id}",
         fault=_users_fault("get_user", errors.DeadlineExceeded("deadline"))),
    Case("read-storage-bug", "get", "/users/{user_id}", 500, url="/users/{user_id}",
         fault=_users_fault("get_user", errors.StorageBug("no such table"))),
]


def media_type(value: str) -> str:
    return value.split(";", 1)[0].strip().lower()


def documented_response(spec: dict[str, Any], case: Case) -> dict[str, Any]:
    responses = spec["paths"][case.route][case.method]["responses"]
    for key in (str(case.status), f"{case.status // 100}XX", "default"):
        if key in responses:
            response: dict[str, Any] = responses[key]
            return response
    raise AssertionError(f"{case.method.upper()} {case.route} answers {case.status}, which its "
                         f"OpenAPI does not document (documented: {sorted(responses)})")


def _model_named(ref: str) -> type[BaseModel] | None:
    model = getattr(schemas, ref.rsplit("/", 1)[-1], None)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


@pytest.fixture
def service(make_app: Callable[..., FastAPI]) -> FastAPI:
    return make_app(http_max_body_bytes=MAX_BODY, http_body_timeout_s=BODY_TIMEOUT_S)


def test_every_route_in_the_openapi_has_a_case(service: FastAPI) -> None:
    documented = {(method, path) for path, operations in service.openapi()["paths"].items()
                  for method in operations}
    assert documented == {(case.method, case.route) for case in CASES}


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
async def test_the_answer_has_the_media_type_documented_for_its_status(
    case: Case, service: FastAPI, client_for: Callable[[FastAPI], httpx.AsyncClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = client_for(service)
    seeded = await client.post("/users/", json={"name": "ada", "password": PASSWORD},
                               headers={"Idempotency-Key": KEY})
    assert seeded.status_code == 201, seeded.text
    if case.fault is not None:
        case.fault(service, monkeypatch)

    url = (case.url or case.route).format(user_id=seeded.json()["id"])
    content = case.content() if callable(case.content) else case.content
    response = await client.request(case.method, url, json=case.json, content=content,
                                    headers=case.headers)

    assert response.status_code == case.status, response.text
    actual = media_type(response.headers["content-type"])
    documented = documented_response(service.openapi(), case).get("content", {})
    # The one media type a route answers with for a status is the only one documented for it:
    # a fuzzer would otherwise expect, say, JSON from /metrics.
    assert {media_type(name) for name in documented} == {actual}, (
        f"{case.method.upper()} {url} -> {case.status} {actual}, documented: {list(documented)}")

    schema = next(iter(documented.values())).get("schema", {})
    if actual == "application/json":
        model = _model_named(schema.get("$ref", ""))
        if model is not None:
            model.model_validate_json(response.content)
    else:
        assert schema == {"type": "string"}
