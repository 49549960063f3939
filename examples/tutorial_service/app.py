"""A peer: the users service as FastAPI's SQL tutorial teaches it, so the benchmark can show
what the hardened service (app/) costs or saves against what a user would otherwise write.

The pattern of https://fastapi.tiangolo.com/tutorial/sql-databases/, with SQLAlchemy 2's ORM
in place of SQLModel:

- plain `def` handlers, which FastAPI runs on its thread pool (anyio's, 40 threads);
- a `Session` per request from a `def get_session()` yield dependency;
- ORM models, `session.add()`, `commit()`, `refresh()`, `session.get()`;
- one engine with SQLAlchemy's default pool (5 + 10 connections, 30 s checkout timeout) and
  `check_same_thread=False`, as the tutorial sets it: a request's Session may be opened, used
  and closed on different pool threads.

Beyond the tutorial, what a careful user adds from SQLite's and SQLAlchemy's docs: WAL and
`synchronous=NORMAL`, set in a `connect` event on every new connection. The SQLite library is
pysqlite3's bundled one (3.53.x), the same as the hardened service's, so the comparison is not
one of SQLite versions.

What it does NOT do, and the hardened service does: no deadlines (a request waits as long as
its pool checkout, 30 s, or SQLite's busy timeout, pysqlite's default 5 s, lets it); no retries
of transient errors; no back-pressure (requests queue for the thread pool without bound); no
`BEGIN IMMEDIATE`: writers start deferred and meet in SQLite's busy handler, which sleeps and
polls; no idempotency keys. A duplicate name is a `409`, a missing user a `404`, and any other
database error a `500`. Error bodies are FastAPI's `{"detail": ...}`.

Passwords are stored only as argon2id hashes (argon2-cffi; cost from PASSWORD_HASH_TIME_COST
and PASSWORD_HASH_MEMORY_KIB), computed on the handler's pool thread; no response carries a
password or a hash. The database comes from DATABASE_URL (`sqlite:///path`).

Serve it with `uvicorn examples.tutorial_service.app:create_app --factory`.
"""

import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Annotated, Any

import pysqlite3.dbapi2 as pysqlite3
from fastapi import Depends, FastAPI, HTTPException, Request, status
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from examples.peer_schema import Base, User, UserCreate, UserOut, hasher_from_env

# No `from __future__ import annotations` here: FastAPI reads the handlers' annotations, and
# the tutorial's style defines them as plain module-level objects it can evaluate.

DEFAULT_DATABASE_URL = "sqlite:///./tutorial_users.db"
def make_engine(url: str) -> Engine:
    engine = create_engine(
        url,
        # The same SQLite library as the hardened service (the stdlib module links 3.40.1).
        module=pysqlite3,
        connect_args={"check_same_thread": False},
    )

    @event.listens_for(engine, "connect")
    def _wal_and_normal(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return engine


def get_session(request: Request) -> Iterator[Session]:
    with Session(request.app.state.engine) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def create_app(database_url: str | None = None) -> FastAPI:
    """Build the tutorial-style service; settings from the environment (DATABASE_URL,
    PASSWORD_HASH_TIME_COST, PASSWORD_HASH_MEMORY_KIB)."""
    engine = make_engine(database_url or os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL))
    Base.metadata.create_all(engine)
    hasher = hasher_from_env()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        engine.dispose()

    app = FastAPI(title="Users service, FastAPI SQL tutorial pattern", lifespan=lifespan)
    app.state.engine = engine

    @app.post("/users/", response_model=UserOut, status_code=status.HTTP_201_CREATED)
    def create_user(body: UserCreate, session: SessionDep) -> Any:
        user = User(name=body.name, password_hash=hasher.hash(body.password),
                    created_at=datetime.now(UTC).replace(tzinfo=None))
        session.add(user)
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            raise HTTPException(status_code=409, detail="name already taken") from None
        session.refresh(user)
        return user

    @app.get("/users/{user_id}", response_model=UserOut)
    def read_user(user_id: int, session: SessionDep) -> Any:
        user = session.get(User, user_id)
        if user is None:
            raise HTTPException(status_code=404, detail="User not found")
        return user

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz(session: SessionDep) -> dict[str, str]:
        session.execute(text("SELECT 1"))
        return {"status": "ready"}

    return app
