"""The hardened service as the benchmark serves it: `app.main`'s app plus one route that
exists only here, `POST /_bench/hash-only`, the hash-only reference.

The reference takes the body of `POST /users/` and answers `201` after hashing the password
with the app's own `PasswordHasher` (the same argon2 cost, the same bound on hashes at once,
the same worker threads), touching no database. Served by the same process as the real
routes, it tells how much of a create's cost is the hash and how much the database path: a
create at 0.85 of the reference spends at most 15 % of its time beyond hashing.

Serve with `uvicorn benchmarks.bench_app:create_app --factory` (benchmarks/bench.py does, through
faults.server.ServerProcess). Never part of the public API: `app.main` does not know it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import FastAPI, Request, status

from app.main import create_app as create_service
from app.schemas import UserCreate, UserOut
from app.settings import Settings

HASH_ONLY_PATH = "/_bench/hash-only"


async def hash_only(body: UserCreate, request: Request) -> UserOut:
    await request.app.state.hasher.hash(body.password)
    # A body of the create's shape, so the reference also pays its serialisation: the
    # difference to a real create is then the database path alone.
    return UserOut(id=0, name=body.name, created_at=datetime.now(UTC))


def create_app(settings: Settings | None = None) -> FastAPI:
    app = create_service(settings)
    app.add_api_route(HASH_ONLY_PATH, hash_only, methods=["POST"], response_model=UserOut,
                      status_code=status.HTTP_201_CREATED, include_in_schema=False)
    return app
