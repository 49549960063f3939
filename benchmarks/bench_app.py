"""The hardened service as the benchmark serves it: `app.main`'s app plus one route that
exists only here, `POST /_bench/hash-only`, the hash-only reference.

The reference is the create's handler without its database call: the same body and
Idempotency-Key parameters, the same response building, and a `201` after hashing the
password with the app's own `PasswordHasher` (the same argon2 cost, the same bound on hashes
at once, the same worker threads), touching no database. Served by the same process as the real
routes, it tells how much of a create's cost is the hash and how much the database path: a
create at 0.85 of the reference spends at most 15 % of its time beyond hashing.

Serve with `uvicorn benchmarks.bench_app:create_app --factory` (benchmarks/bench.py does, through
sqlite_faults.server.ServerProcess). Never part of the public API: `app.main` does not know it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import FastAPI, Request, Response, status

from app.api import IdempotencyKeyHeader, user_response
from app.main import create_app as create_service
from app.schemas import UserCreate, UserOut
from app.settings import Settings
from app.users import UserRecord

HASH_ONLY_PATH = "/_bench/hash-only"


async def hash_only(body: UserCreate, request: Request,
                    idempotency_key: IdempotencyKeyHeader = None) -> Response:
    """The create's handler with the database call taken out: the same parameters (body, the
    Idempotency-Key header), the same hash, the same response building."""
    created_at = datetime.now(UTC)
    await request.app.state.hasher.hash(body.password)
    return user_response(UserRecord(0, body.name, created_at), status.HTTP_201_CREATED)


def create_app(settings: Settings | None = None) -> FastAPI:
    app = create_service(settings)
    app.add_api_route(HASH_ONLY_PATH, hash_only, methods=["POST"], response_model=UserOut,
                      status_code=status.HTTP_201_CREATED, include_in_schema=False)
    return app
