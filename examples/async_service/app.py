"""A peer: the users service on SQLAlchemy's asyncio engine over aiosqlite, as a careful user
would write it from SQLAlchemy's asyncio documentation, so the benchmark can show what the
hardened service (app/) costs or saves against it.

- `async def` handlers; an `AsyncSession` per request from an async yield dependency
  (`async_sessionmaker(..., expire_on_commit=False)`, as SQLAlchemy's docs advise for asyncio);
- `create_async_engine("sqlite+aiosqlite:///...")` with SQLAlchemy's default async pool
  (5 + 10 connections, 30 s checkout timeout), tables created in the lifespan;
- WAL and `synchronous=NORMAL`, set in a `connect` event on `engine.sync_engine`;
- argon2 off the event loop with `await asyncio.to_thread(...)` (the loop's default executor).

aiosqlite runs each connection on a thread of its own and uses the interpreter's `sqlite3`
module, so this peer runs the system SQLite (3.40.1 on this machine), not the 3.53.x that the
hardened service and the tutorial peer get from pysqlite3. aiosqlite can be handed a
pysqlite3 connector, but SQLAlchemy's aiosqlite dialect takes its exception classes from the
stdlib module: pysqlite3's IntegrityError would then escape SQLAlchemy's error wrapping, so
that would no longer be the code a user writes. The two versions do not differ in anything this
API uses (WAL, a unique index, a rowid lookup).

What it does NOT do, and the hardened service does: no deadlines (a request waits as long as
its pool checkout, 30 s, or SQLite's busy timeout, the driver's default 5 s, lets it); no
retries of transient errors; no back-pressure; no `BEGIN IMMEDIATE`: writers start deferred
and meet in SQLite's busy handler; no bound on concurrent argon2 hashes beyond the default
executor's threads; no idempotency keys. A duplicate name is a `409`, a missing user a `404`,
any other database error a `500`; error bodies are FastAPI's `{"detail": ...}`.

Passwords are stored only as argon2id hashes (cost from PASSWORD_HASH_TIME_COST and
PASSWORD_HASH_MEMORY_KIB); no response carries a password or a hash. The database comes from
DATABASE_URL (`sqlite:///path`; the driver is switched to aiosqlite here).

Serve it with `uvicorn examples.async_service.app:create_app --factory`.
"""

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request, status
from sqlalchemy import event, make_url, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from examples.peer_schema import Base, User, UserCreate, UserOut, hasher_from_env

# No `from __future__ import annotations`: FastAPI evaluates the handlers' annotations.

DEFAULT_DATABASE_URL = "sqlite:///./async_users.db"
def make_engine(url: str) -> AsyncEngine:
    engine = create_async_engine(make_url(url).set(drivername="sqlite+aiosqlite"))

    @event.listens_for(engine.sync_engine, "connect")
    def _wal_and_normal(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return engine


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.sessions() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


def create_app(database_url: str | None = None) -> FastAPI:
    """Build the asyncio peer; settings from the environment (DATABASE_URL,
    PASSWORD_HASH_TIME_COST, PASSWORD_HASH_MEMORY_KIB)."""
    engine = make_engine(database_url or os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL))
    hasher = hasher_from_env()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        yield
        await engine.dispose()

    app = FastAPI(title="Users service, SQLAlchemy asyncio + aiosqlite", lifespan=lifespan)
    app.state.engine = engine
    app.state.sessions = async_sessionmaker(engine, expire_on_commit=False)

    @app.post("/users/", response_model=UserOut, status_code=status.HTTP_201_CREATED)
    async def create_user(body: UserCreate, session: SessionDep) -> Any:
        password_hash = await asyncio.to_thread(hasher.hash, body.password)
        user = User(name=body.name, password_hash=password_hash,
                    created_at=datetime.now(UTC).replace(tzinfo=None))
        session.add(user)
        try:
            await session.commit()
        except IntegrityError:
            await session.rollback()
            raise HTTPException(status_code=409, detail="name already taken") from None
        return user

    @app.get("/users/{user_id}", response_model=UserOut)
    async def read_user(user_id: int, session: SessionDep) -> Any:
        user = await session.get(User, user_id)
        if user is None:
            raise HTTPException(status_code=404, detail="User not found")
        return user

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(session: SessionDep) -> dict[str, str]:
        await session.execute(text("SELECT 1"))
        return {"status": "ready"}

    return app
