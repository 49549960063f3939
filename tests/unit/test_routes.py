"""Every route's success and error paths, through httpx against the app."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

import httpx
import pytest
from fastapi import FastAPI
from sqlite_faults.inspect_db import query_url
from sqlite_faults.observe import MetricsSnapshot
from sqlite_faults.sql_errors import InjectSqlError

from app import users

PASSWORD = "correct horse battery"


def rows(database_url: str, sql: str) -> list[tuple[object, ...]]:
    return query_url(database_url, sql)


async def create(client: httpx.AsyncClient, name: str, password: str = PASSWORD,
                 key: str | None = None) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key is not None else {}
    return await client.post("/users/", json={"name": name, "password": password},
                             headers=headers)


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    return error


async def test_root_reports_service_version_and_database(client: httpx.AsyncClient) -> None:
    response = await client.get("/")
    assert response.status_code == 200
    assert response.json() == {"service": "users-service", "version": "0.1.0", "database": "ok"}


async def test_create_then_read_a_user(client: httpx.AsyncClient) -> None:
    created = await create(client, "ada")
    assert created.status_code == 201, created.text
    body = created.json()
    assert set(body) == {"id", "name", "created_at"}
    assert body["name"] == "ada" and body["id"] > 0
    assert datetime.fromisoformat(body["created_at"]).utcoffset() is not None

    read = await client.get(f"/users/{body['id']}")
    assert read.status_code == 200
    assert read.json() == body


async def test_password_is_stored_only_as_a_salted_argon2_hash(
    client: httpx.AsyncClient, database_url: str
) -> None:
    await create(client, "first")
    await create(client, "second")  # same password
    hashes = [h for (h,) in rows(database_url, "SELECT password_hash FROM users")]
    assert all(h.startswith("$argon2id$") for h in hashes)
    assert PASSWORD not in "".join(hashes)
    assert hashes[0] != hashes[1]  # salted


async def test_read_a_missing_user_is_404(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/users/424242"), 404, "user_not_found")
    # The largest id SQLite can hold is valid, merely absent.
    assert_error(await client.get(f"/users/{2**63 - 1}"), 404, "user_not_found")


@pytest.mark.parametrize("bad_id", ["abc", "0", "-1", "1.5", str(2**63), "1e3"])
async def test_read_with_a_bad_id_is_422(client: httpx.AsyncClient, bad_id: str) -> None:
    error = assert_error(await client.get(f"/users/{bad_id}"), 422, "validation_error")
    assert error["details"][0]["loc"] == ["path", "user_id"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "", "password": PASSWORD}, "name"),
        ({"name": "x" * 65, "password": PASSWORD}, "name"),
        ({"name": "tab\there", "password": PASSWORD}, "name"),
        ({"name": "shorty", "password": "7chars!"}, "password"),
        ({"name": "longy", "password": "p" * 129}, "password"),
        ({"name": "nopass"}, "password"),
        ({"password": PASSWORD}, "name"),
        ({"name": "extra", "password": PASSWORD, "admin": True}, "admin"),
        ({"name": 42, "password": PASSWORD}, "name"),
    ],
)
async def test_invalid_create_bodies_are_422_naming_the_field(
    client: httpx.AsyncClient, database_url: str, body: dict[str, object], field: str
) -> None:
    response = await client.post("/users/", json=body)
    error = assert_error(response, 422, "validation_error")
    assert any(d["loc"][-1] == field for d in error["details"])  # type: ignore[index,union-attr]
    # The rejected password is never echoed back.
    if isinstance(body.get("password"), str):
        assert body["password"] not in response.text
    assert rows(database_url, "SELECT count(*) FROM users") == [(0,)]


async def test_name_and_password_at_their_limits_are_accepted(
    client: httpx.AsyncClient,
) -> None:
    assert (await create(client, "n" * 64, "p" * 128)).status_code == 201
    assert (await create(client, "n", "p" * 8)).status_code == 201


async def test_malformed_json_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/users/", content=b'{"name": "x", "password": ',
        headers={"content-type": "application/json"},
    )
    assert_error(response, 422, "validation_error")


async def test_duplicate_name_is_409_and_leaves_one_row(
    client: httpx.AsyncClient, database_url: str
) -> None:
    assert (await create(client, "twin")).status_code == 201
    assert_error(await create(client, "twin", "another password"), 409, "name_taken")
    assert rows(database_url, "SELECT count(*) FROM users WHERE name = 'twin'") == [(1,)]


async def test_repeated_idempotency_key_returns_the_original_user(
    client: httpx.AsyncClient, database_url: str
) -> None:
    first = await create(client, "once", key="key-1")
    again = await create(client, "once", key="key-1")
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert rows(database_url, "SELECT count(*) FROM users") == [(1,)]


@pytest.mark.parametrize("changed", [{"password": "a different one"}, {"name": "other"}])
async def test_same_idempotency_key_with_another_body_is_422(
    client: httpx.AsyncClient, database_url: str, changed: dict[str, str]
) -> None:
    assert (await create(client, "orig", key="key-2")).status_code == 201
    body = {"name": "orig", "password": PASSWORD, **changed}
    response = await client.post("/users/", json=body, headers={"Idempotency-Key": "key-2"})
    assert_error(response, 422, "idempotency_key_reused")
    assert rows(database_url, "SELECT count(*) FROM users") == [(1,)]


@pytest.mark.parametrize("key", [b"k" * 256, b"has space", "naïve".encode(), b""])
async def test_malformed_idempotency_key_is_422(client: httpx.AsyncClient, key: bytes) -> None:
    response = await client.post(
        "/users/", json={"name": "keyed", "password": PASSWORD},
        headers={"Idempotency-Key": key},
    )
    assert_error(response, 422, "validation_error")


async def test_health_readiness_and_metrics(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}
    await create(client, "counted")
    response = await client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    metrics = MetricsSnapshot(response.text)
    assert metrics.value("db_calls_total", operation="create_user", outcome="ok") == 1
    assert metrics.value("db_inflight", lane="writer") == 0


async def test_openapi_docs_are_served(client: httpx.AsyncClient) -> None:
    assert (await client.get("/docs")).status_code == 200
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert {"/", "/users/", "/users/{user_id}", "/healthz", "/readyz", "/metrics"} <= set(paths)


async def test_unknown_route_and_method_are_json_errors(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/nope"), 404, "not_found")
    assert_error(await client.delete("/users/1"), 405, "method_not_allowed")


async def test_transient_errors_past_the_retry_budget_are_503_with_retry_after(
    make_app: Callable[..., FastAPI], client_for: Callable[[FastAPI], httpx.AsyncClient],
    database_url: str,
) -> None:
    app = make_app(retry_max_attempts=3, retry_backoff_initial_s=0.001,
                   retry_backoff_max_s=0.002)
    client = client_for(app)
    with InjectSqlError(app.state.db.writer_engine, "busy", match=r"^INSERT INTO users"):
        response = await create(client, "busy")
    assert_error(response, 503, "storage_busy")
    assert response.headers["Retry-After"] == "1"
    metrics = MetricsSnapshot((await client.get("/metrics")).text)
    assert metrics.value("db_retries_total", operation="create_user") == 2
    assert rows(database_url, "SELECT count(*) FROM users") == [(0,)]


async def test_schema_error_is_500_without_sql_or_trace(
    make_app: Callable[..., FastAPI], client_for: Callable[[FastAPI], httpx.AsyncClient],
) -> None:
    app = make_app()
    client = client_for(app)
    with InjectSqlError(app.state.db.reader_engine, "no_such_table"):
        response = await client.get("/users/1")
    error = assert_error(response, 500, "internal_error")
    assert error["message"] == "internal error"
    assert "SELECT" not in response.text and "Traceback" not in response.text


async def test_unexpected_exception_is_a_bare_500(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: object) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(users, "get_user", broken)
    response = await client.get("/users/1")
    assert_error(response, 500, "internal_error")
    assert "secret internals" not in response.text


async def test_no_password_or_hash_in_any_response_or_log(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    responses = [
        await create(client, "secretive", key="k"),
        await create(client, "secretive", key="k"),
        await create(client, "secretive"),
        await create(client, "secretive", "a wrong password", key="k"),
        await client.get("/users/1"),
        await client.get("/metrics"),
    ]
    for response in responses:
        assert PASSWORD not in response.text
        assert "$argon2" not in response.text
    assert PASSWORD not in caplog.text
    assert "$argon2" not in caplog.text
