"""A users service on Flask (WSGI), hardened the way app/ is, in the few lines a WSGI
service needs: what the fault toolkit's battery judges a WSGI target by
(examples/targets/wsgi_api.toml; its naive twin is examples/wsgi_service/naive.py).

    python -m sqlite_faults.wsgi examples.wsgi_service.hardened:create_app --factory \
        --threads 8 --port 8000

- SQLite in WAL mode with synchronous=NORMAL, set on every connection.
- Every request has a deadline (DB_DEADLINE_S, 1 s): the lock wait is bounded by what is
  left of it (busy_timeout), and a statement still running at the deadline is interrupted
  (a progress handler), so a request ends in time with 503 or 504 and a Retry-After.
- Writes take the write lock up front (BEGIN IMMEDIATE), where the busy handler can wait.
- Transient lock errors (SQLITE_BUSY, SQLITE_LOCKED) retry the whole transaction with
  jittered backoff inside the deadline.
- Database work has DB_SLOTS seats (fewer than the server's threads, with as many pooled
  connections): a thread that cannot get one in time answers 503 overloaded, and requests
  that need no database always find a thread.
- Input is validated before the database sees it; every error is JSON, never a trace.
- Passwords are stored as argon2id hashes, never returned or logged.
"""

from __future__ import annotations

import os
import random
import threading
import time
from datetime import UTC, datetime
from typing import Any

from argon2 import PasswordHasher
from flask import Flask, jsonify, request
from sqlalchemy import (
    Column,
    Connection,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    event,
    insert,
    select,
)
from sqlalchemy.exc import DBAPIError, IntegrityError
from werkzeug.exceptions import HTTPException

MAX_ID = 2**63 - 1
TRANSIENT = {5, 6}  # SQLITE_BUSY, SQLITE_LOCKED (primary result codes)
INTERRUPTED = 9  # SQLITE_INTERRUPT

metadata = MetaData()
users = Table("users", metadata,
              Column("id", Integer, primary_key=True),
              Column("name", String(64), nullable=False, unique=True),
              Column("password_hash", String(255), nullable=False),
              Column("created_at", String(40), nullable=False))


class Refused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _result_code(exc: DBAPIError) -> int | None:
    code = getattr(exc.orig, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF


def _valid_text(body: dict[str, Any], field: str, low: int, high: int) -> str:
    value = body.get(field)
    if not isinstance(value, str) or not low <= len(value) <= high:
        raise Refused(422, "validation_error", f"{field}: a string of {low} to {high} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise Refused(422, "validation_error", f"{field}: not valid Unicode text") from None
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in value):
        raise Refused(422, "validation_error", f"{field}: control characters are not allowed")
    return value


def create_app() -> Flask:
    deadline_s = float(os.environ.get("DB_DEADLINE_S", "1.0"))
    slots = int(os.environ.get("DB_SLOTS", "4"))
    hasher = PasswordHasher(time_cost=int(os.environ.get("PASSWORD_HASH_TIME_COST", "2")),
                            memory_cost=int(os.environ.get("PASSWORD_HASH_MEMORY_KIB", "19456")),
                            parallelism=1)
    engine = create_engine(os.environ.get("DATABASE_URL", "sqlite:///./wsgi_users.db"),
                           pool_size=slots, max_overflow=0, pool_timeout=deadline_s,
                           connect_args={"check_same_thread": False})
    seats = threading.BoundedSemaphore(slots)

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        # The driver's own transaction handling off: BEGIN is ours (below).
        dbapi_connection.isolation_level = None
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON"):
            dbapi_connection.execute(f"PRAGMA {pragma}")

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE" if connection.info.get("write")
                                   else "BEGIN")

    metadata.create_all(engine)

    def run(work: Any, write: bool) -> Any:
        """`work(connection)` in one transaction, within the request's deadline: retried
        whole on a transient lock error, interrupted at the deadline."""
        give_up = time.monotonic() + deadline_s
        if not seats.acquire(timeout=deadline_s):
            raise Refused(503, "overloaded", "every database seat is busy")
        try:
            attempt = 0
            while True:
                attempt += 1
                left = give_up - time.monotonic()
                if left <= 0:
                    raise Refused(504, "deadline_exceeded", "the database did not answer in time")
                try:
                    with engine.connect() as connection:
                        raw = connection.connection.dbapi_connection
                        assert raw is not None
                        raw.execute(f"PRAGMA busy_timeout = {max(1, int(left * 1000))}")
                        raw.set_progress_handler(
                            lambda: int(time.monotonic() > give_up), 1000)
                        connection.info["write"] = write
                        try:
                            with connection.begin():
                                return work(connection)
                        finally:
                            raw.set_progress_handler(None, 0)
                except DBAPIError as exc:
                    code = _result_code(exc)
                    if code == INTERRUPTED or time.monotonic() >= give_up:
                        raise Refused(504, "deadline_exceeded",
                                      "the database did not answer in time") from None
                    if code not in TRANSIENT or isinstance(exc, IntegrityError):
                        raise
                    if time.monotonic() + 0.01 >= give_up:
                        raise Refused(503, "storage_busy", "the database is locked") from None
                    time.sleep(random.uniform(0, min(0.1, 0.005 * 2**attempt)))
        finally:
            seats.release()

    app = Flask(__name__)

    @app.errorhandler(Refused)
    def _refused(exc: Refused) -> Any:
        headers = {"Retry-After": "1"} if exc.status in (503, 504) else {}
        return jsonify(error={"code": exc.code, "message": exc.message}), exc.status, headers

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Any:
        return (jsonify(error={"code": (exc.name or "http_error").lower().replace(" ", "_"),
                               "message": exc.description}), exc.code or 500)

    @app.errorhandler(DBAPIError)
    def _storage(exc: DBAPIError) -> Any:
        app.logger.warning("database error: %s", type(exc.orig).__name__)
        return (jsonify(error={"code": "storage_unavailable", "message": "storage failed"}),
                503, {"Retry-After": "1"})

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Any:
        app.logger.error("unexpected %s", type(exc).__name__)
        return jsonify(error={"code": "internal_error", "message": "internal error"}), 500

    def as_json(row: Any) -> dict[str, Any]:
        return {"id": row.id, "name": row.name, "created_at": row.created_at}

    @app.post("/users/")
    def create_user() -> Any:
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or set(body) != {"name", "password"}:
            raise Refused(422, "validation_error", "the body must be {name, password}")
        name = _valid_text(body, "name", 1, 64)
        password_hash = hasher.hash(_valid_text(body, "password", 8, 128))
        created_at = datetime.now(UTC).isoformat()

        def write(connection: Connection) -> Any:
            new_id = connection.execute(insert(users).values(
                name=name, password_hash=password_hash, created_at=created_at)).inserted_primary_key
            return connection.execute(select(users).where(users.c.id == new_id[0])).one()
        try:
            row = run(write, write=True)
        except IntegrityError:
            raise Refused(409, "name_taken", "that name is taken") from None
        return jsonify(as_json(row)), 201

    @app.get("/users/<int:user_id>")
    def read_user(user_id: int) -> Any:
        if not 0 < user_id <= MAX_ID:
            raise Refused(404, "user_not_found", "no such user")
        row = run(lambda c: c.execute(select(users).where(users.c.id == user_id)).first(),
                  write=False)
        if row is None:
            raise Refused(404, "user_not_found", "no such user")
        return jsonify(as_json(row))

    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify(status="ok")

    @app.get("/readyz")
    def readyz() -> Any:
        run(lambda c: c.exec_driver_sql("SELECT 1").scalar(), write=False)
        return jsonify(status="ready")

    return app
