"""The benchmark's peers (examples/tutorial_service, examples/async_service) serve the hardened
service's API, so one load generator drives all three; the benchmark's own app adds the
hash-only reference, which the service itself never serves.

Each peer's database is read only through the peer's own engine: two SQLite libraries on one
file in one process drop each other's locks (the tutorial peer uses pysqlite3, the asyncio
peer the stdlib module).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import ModuleType

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from sqlalchemy import text

from app.main import create_app as create_service
from app.settings import Settings
from benchmarks import bench_app
from examples.async_service import app as async_service
from examples.tutorial_service import app as tutorial_service

pytestmark = pytest.mark.unit

PASSWORD = "correct horse battery"
PEERS = {"tutorial": tutorial_service, "async": async_service}


@pytest.fixture(params=sorted(PEERS))
async def peer_app(request: pytest.FixtureRequest, tmp_path: Path,
                   monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FastAPI]:
    monkeypatch.setenv("PASSWORD_HASH_TIME_COST", "1")
    monkeypatch.setenv("PASSWORD_HASH_MEMORY_KIB", "8")
    module: ModuleType = PEERS[request.param]
    app = module.create_app(f"sqlite:///{tmp_path / 'peer.db'}")
    # ASGITransport runs no lifespan; the asyncio peer creates its tables in it, and both
    # dispose of their engines at its end.
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
def peer(peer_app: FastAPI,
         client_for: Callable[[FastAPI], httpx.AsyncClient]) -> httpx.AsyncClient:
    return client_for(peer_app)


async def stored_hashes(app: FastAPI) -> list[str]:
    engine = app.state.engine
    query = text("SELECT password_hash FROM users ORDER BY id")
    if hasattr(engine, "sync_engine"):  # the asyncio peer
        async with engine.connect() as conn:
            return list((await conn.execute(query)).scalars())
    with engine.connect() as conn:
        return list(conn.execute(query).scalars())


async def test_create_read_duplicate_and_missing(peer: httpx.AsyncClient) -> None:
    created = await peer.post("/users/", json={"name": "ada", "password": PASSWORD})
    assert created.status_code == 201, created.text
    body = created.json()
    assert set(body) == {"id", "name", "created_at"}
    assert body["name"] == "ada" and body["id"] > 0
    assert body["created_at"].endswith("+00:00") or body["created_at"].endswith("Z")

    read = await peer.get(f"/users/{body['id']}")
    assert read.status_code == 200
    assert read.json() == body

    duplicate = await peer.post("/users/", json={"name": "ada", "password": PASSWORD})
    assert duplicate.status_code == 409
    assert (await peer.get("/users/424242")).status_code == 404
    for response in (created, read, duplicate):
        assert PASSWORD not in response.text
        assert "argon2" not in response.text


async def test_passwords_are_stored_only_as_salted_argon2_hashes(
    peer: httpx.AsyncClient, peer_app: FastAPI
) -> None:
    for name in ("first", "second"):  # the same password
        assert (await peer.post("/users/", json={"name": name, "password": PASSWORD})
                ).status_code == 201
    hashes = await stored_hashes(peer_app)
    assert len(hashes) == 2 and hashes[0] != hashes[1]
    assert all(h.startswith("$argon2id$") for h in hashes)
    assert PASSWORD not in "".join(hashes)


async def test_service_routes_answer(peer: httpx.AsyncClient) -> None:
    assert (await peer.get("/healthz")).json() == {"status": "ok"}
    assert (await peer.get("/readyz")).status_code == 200


async def test_peers_run_wal_with_synchronous_normal(peer_app: FastAPI) -> None:
    engine = peer_app.state.engine
    pragmas = text("PRAGMA journal_mode"), text("PRAGMA synchronous")
    if hasattr(engine, "sync_engine"):
        async with engine.connect() as conn:
            values = [(await conn.execute(p)).scalar() for p in pragmas]
    else:
        with engine.connect() as conn:
            values = [conn.execute(p).scalar() for p in pragmas]
    assert values == ["wal", 1]  # 1 = NORMAL


def _paths(app: FastAPI) -> set[str]:
    return {route.path for route in app.routes if isinstance(route, APIRoute)}


async def test_hash_only_reference_is_served_only_by_the_bench_app(
    make_settings: Callable[..., Settings],
    client_for: Callable[[FastAPI], httpx.AsyncClient],
    db_rows: Callable[..., list[tuple[object, ...]]],
) -> None:
    service = create_service(make_settings())
    bench = bench_app.create_app(make_settings())
    try:
        assert bench_app.HASH_ONLY_PATH not in _paths(service)
        assert bench_app.HASH_ONLY_PATH in _paths(bench)
        assert bench_app.HASH_ONLY_PATH not in bench.openapi()["paths"]
        assert _paths(service) <= _paths(bench)  # the rest of the service, unchanged

        client = client_for(bench)
        answer = await client.post(bench_app.HASH_ONLY_PATH,
                                   json={"name": "ref", "password": PASSWORD})
        assert answer.status_code == 201, answer.text
        assert PASSWORD not in answer.text
        assert db_rows("SELECT count(*) FROM users") == [(0,)]  # no database write
        # The same body rules as POST /users/.
        assert (await client.post(bench_app.HASH_ONLY_PATH,
                                  json={"name": "ref", "password": "short"})).status_code == 422
        missing = await client_for(service).post(bench_app.HASH_ONLY_PATH,
                                                 json={"name": "ref", "password": PASSWORD})
        assert missing.status_code in (404, 405)
    finally:
        service.state.db.close()
        service.state.hasher.close()
        bench.state.db.close()
        bench.state.hasher.close()
