"""The naive baseline: the users service as the seed resilience report shows it *before* its
recommendations, kept so the hardened service (app/) can be measured side by side with it.

Serve it with `uvicorn examples.naive_service.app:create_app --factory`, or through
`sqlite_faults.server.ServerProcess(data_dir, app="examples.naive_service.app:create_app")`.
It serves the same API shape as the hardened service, so one load generator drives both.

Each naive choice, kept on purpose, and what the hardened service does instead:

- `async def` handlers call blocking SQLAlchemy methods directly, on the event loop thread.
  While one waits (for SQLite's lock, for a pooled connection, for argon2) no other request
  is served, not even `GET /healthz`. Hardened: handlers only await futures; every DB call
  runs on a bounded worker lane (app/db.py, app/resilience.py).
- `create_engine(url)` with SQLAlchemy's defaults: a `QueuePool` of 5 + 10 overflow
  connections and a 30 s checkout timeout. With 16+ concurrent requests all 15 connections are
  checked out, the next handler blocks the loop in `Queue.get` waiting for one, and the
  sessions that would give one back can only close once the loop runs again: the service
  stops answering until the 30 s pool timeout (measured in docs/performance.md).
  Hardened: each lane has as many threads as pooled connections (`max_overflow=0`), so a
  worker never waits for a connection, and a bounded queue answers `503 overloaded` at once.
- SQLite's defaults: rollback journal (`journal_mode=DELETE`), `synchronous=FULL`, the stdlib
  `sqlite3` module (the system SQLite, 3.40.1 here) with its 5 s busy timeout, and the
  driver's legacy transaction handling (no `BEGIN` before a `SELECT`, a deferred `BEGIN`
  before a write). Readers and the writer block each other. Hardened: WAL, pragmas on every
  connection, `BEGIN IMMEDIATE` for writes, a bundled current SQLite (pysqlite3).
- A `Session` comes from a sync generator dependency: FastAPI runs it in a worker thread, so
  the Session is created (and later closed) there but used on the event loop thread, as the
  report's code does. Sessions are not thread-safe. Hardened: each attempt opens its own
  Session on the worker thread that uses it and closes it there.
- A tenacity retry only on `GET /`, and on every `SQLAlchemyError`; its back-off sleeps with
  `time.sleep` on the event loop. No retries on the users routes. Hardened: one retry policy
  for every DB call, transient SQLite errors only (classified by result code), whole
  transactions, back-off awaited without holding a thread or a connection.
- No deadlines: a call waits as long as its busy timeout or pool timeout says. Hardened:
  `DB_DEADLINE_S` per call, `504` at the deadline, the running statement interrupted.
- Errors: any `SQLAlchemyError` on a create (a duplicate name included) is a `500`
  `{"detail": "Database error occurred"}`, as in the report; the hardened service answers
  `409 name_taken` and has one error body shape for everything.
- Validation: `name` and `password` are plain strings (any length); `created_at` is returned
  without a time zone (naive UTC as stored). Hardened: bounded fields, ISO 8601 with `+00:00`.

One deliberate deviation from the report: it stored and returned plaintext passwords. Here
the password is stored only as an argon2id hash (argon2-cffi, cost from
`PASSWORD_HASH_TIME_COST` / `PASSWORD_HASH_MEMORY_KIB`), computed inline in the handler,
blocking the loop as naive code would; no response or log line carries it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Annotated, Any

from argon2 import PasswordHasher
from fastapi import Depends, FastAPI, Form, HTTPException, Request, status
from pydantic import BaseModel
from sqlalchemy import DateTime, Integer, String, create_engine, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

# A relative URL: a file in the current working directory, as the report's "./test.db".
DEFAULT_DATABASE_URL = "sqlite:///./naive_users.db"
# The same argon2id cost as the hardened service's defaults (OWASP's minimum), so hashing
# costs the same on both sides of a comparison; benchmarks lower both through the env.
DEFAULT_HASH_TIME_COST = 2
DEFAULT_HASH_MEMORY_KIB = 19456


class Base(DeclarativeBase):
    pass


class User(Base):
    # Its own table definition (not app.models): the baseline must not borrow any of the
    # hardened service's code, or the comparison would measure the same thing twice.
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime)


class UserCreate(BaseModel):
    name: str
    password: str


class UserOut(BaseModel):
    id: int
    name: str
    created_at: datetime


def get_db(request: Request) -> Iterator[Session]:
    # A sync generator: FastAPI runs it (and its `finally`) in a worker thread, while the
    # async handler uses the Session on the event loop thread, as the report's code did.
    db: Session = request.app.state.session_factory()
    try:
        yield db
    finally:
        db.close()


DbDep = Annotated[Session, Depends(get_db)]


# The report's retry, on GET / only: every SQLAlchemyError, 3 attempts, exponential back-off
# slept with time.sleep on the event loop thread.
@retry(
    retry=retry_if_exception_type(SQLAlchemyError),
    wait=wait_exponential(multiplier=0.5, max=2),
    stop=stop_after_attempt(3),
    reraise=True,
)
def _ping(db: Session) -> None:
    db.execute(text("SELECT 1"))


def create_app(database_url: str | None = None, shape: str | None = None) -> FastAPI:
    """Build the naive service; settings come from the environment (DATABASE_URL,
    PASSWORD_HASH_TIME_COST, PASSWORD_HASH_MEMORY_KIB, SERVICE_NAME, API_SHAPE).

    `shape` (API_SHAPE) is how a create carries its data: "json" (the default, the shape
    the hardened service serves, so one load generator drives both), "query" (the seed
    report's own signature, `create_user(name: str, secret_password: str)`: query
    parameters) or "form" (a form body). The toolkit's target files describe each."""
    url = database_url or os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL)
    shape = shape or os.environ.get("API_SHAPE", "json")
    if shape not in ("json", "query", "form"):
        raise ValueError(f"API_SHAPE must be json, query or form, got {shape!r}")
    service_name = os.environ.get("SERVICE_NAME", "users-service-naive")
    hasher = PasswordHasher(
        time_cost=int(os.environ.get("PASSWORD_HASH_TIME_COST", DEFAULT_HASH_TIME_COST)),
        memory_cost=int(os.environ.get("PASSWORD_HASH_MEMORY_KIB", DEFAULT_HASH_MEMORY_KIB)),
        parallelism=1,
    )
    engine = create_engine(url)  # the defaults, on purpose: QueuePool 5 + 10, 30 s timeout
    Base.metadata.create_all(engine)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        engine.dispose()

    app = FastAPI(title="Naive users service (baseline)", lifespan=lifespan)
    app.state.engine = engine
    app.state.session_factory = sessionmaker(autocommit=False, autoflush=False, bind=engine)

    @app.get("/")
    async def service_info(db: DbDep) -> dict[str, str]:
        _ping(db)  # blocking, retried with blocking sleeps; a final failure is a 500
        return {"service": service_name, "version": "naive", "database": "ok"}

    def insert(db: Session, name: str, password: str) -> User:
        user = User(
            name=name,
            password_hash=hasher.hash(password),  # blocking argon2 on the loop
            created_at=datetime.now(UTC).replace(tzinfo=None),
        )
        try:
            db.add(user)
            db.commit()
            db.refresh(user)
        except SQLAlchemyError:
            # The report's handler: every database error, a duplicate name included, is a 500.
            db.rollback()
            raise HTTPException(status_code=500, detail="Database error occurred") from None
        return user

    created = status.HTTP_201_CREATED
    if shape == "query":
        @app.post("/users/", response_model=UserOut, status_code=created)
        async def create_user_from_query(name: str, secret_password: str, db: DbDep) -> Any:
            return insert(db, name, secret_password)
    elif shape == "form":
        @app.post("/users/", response_model=UserOut, status_code=created)
        async def create_user_from_form(name: Annotated[str, Form()],
                                        password: Annotated[str, Form()], db: DbDep) -> Any:
            return insert(db, name, password)
    else:
        @app.post("/users/", response_model=UserOut, status_code=created)
        async def create_user(body: UserCreate, db: DbDep) -> Any:
            return insert(db, body.name, body.password)

    @app.get("/users/{user_id}", response_model=UserOut)
    async def read_user(user_id: int, db: DbDep) -> Any:
        user = db.scalars(select(User).where(User.id == user_id)).first()
        if user is None:
            raise HTTPException(status_code=404, detail="User not found")
        return user

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """No database: answers whenever the event loop is free."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(db: DbDep) -> dict[str, str]:
        db.execute(text("SELECT 1"))  # no deadline, no error handling: a failure is a 500
        return {"status": "ready"}

    return app
