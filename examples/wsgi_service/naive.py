"""A users service on Flask (WSGI) written the way the seed report's service is: the naive
twin of examples/wsgi_service/hardened.py, for the fault toolkit's WSGI target.

SQLAlchemy's and SQLite's defaults (rollback journal, the driver's 5 s busy timeout, a
deferred BEGIN, a QueuePool of 5 + 10), no deadline, no retries, no validation beyond
Flask's own: every database error is a 500, and a read id is converted with int().
Passwords are still stored only as argon2id hashes.

NAIVE_FLAWS adds, for the battery's negative controls (tests/toolkit/
test_battery_verdicts.py), the mistakes that make a check this service passes go red,
each a real one (a comma-separated list):

- `url`: the engine is built from the URL without its query (so without the fault
  plugin), as a service that rebuilds its URL from parts does;
- `no-wait`: a busy timeout of 0 (`connect_args={"timeout": 0}`): a lock is never waited out;
- `ack-before-commit`: a create is answered once its row is inserted into a transaction
  that a background thread commits every 0.5 s ("write-behind" with group commit): a
  SIGKILL loses whatever was acknowledged since the last commit;
- `leak`: a create that failed is handed to a thread that retries it every 30 s until it
  lands: a burst of failures leaves a thread each behind.

and, for the report's negative controls (tests/report/test_report_controls.py):

- `no-unique`: names are not unique, and the Idempotency-Key a client sends is accepted and
  ignored: a client's retry of a write that did commit writes it again;
- `read-after-commit`: a create commits, then reads its row back in a second transaction;
  an error there answers 500 for a write that committed;
- `breaker-never-closes`: after three failed creates a circuit breaker answers every later
  create 503 at once, and nothing ever closes it again (no half-open trial): the service
  does not recover when the fault ends.

and, for the battery's SIGKILL check on a service that migrates its schema at its first
write, as MLflow's server does (tests/toolkit/test_battery_verdicts.py):

- `migrate-at-first-write`: the first create of each process brings the schema to version
  2 the way a migration tool does it through Python's sqlite3: an ALTER TABLE (which the
  driver runs outside any transaction, so it commits at once), 1 s of further work, then
  the version stamp in a transaction of its own. Killed in between, the next start finds
  no stamp, runs the ALTER again and fails on the column it added: every create is a 500,
  for good;
- `slow-first-write`: the same first-write pause without the mistake (it only waits): a
  service that the check must pass.
"""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime
from typing import Any

from argon2 import PasswordHasher
from flask import Flask, jsonify, request
from sqlalchemy import (
    Column,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    insert,
    make_url,
    select,
)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

FIRST_WRITE_WORK_S = 1.0


class WriteBehind:
    """One connection whose open transaction takes every create; a thread commits it every
    COMMIT_EVERY_S and begins the next. Creates are answered before their commit."""

    COMMIT_EVERY_S = 0.5

    def __init__(self, engine: Engine) -> None:
        self.lock = threading.Lock()
        self.connection = engine.connect()
        self.connection.begin()
        threading.Thread(target=self._commit_forever, daemon=True).start()

    def _commit_forever(self) -> None:
        while True:
            time.sleep(self.COMMIT_EVERY_S)
            with self.lock:
                self.connection.commit()
                self.connection.begin()


def users_table(unique_names: bool) -> Table:
    return Table("users", MetaData(),
                 Column("id", Integer, primary_key=True),
                 Column("name", String(64), unique=unique_names),
                 Column("password_hash", String(255)),
                 Column("created_at", String(40)))


def create_app() -> Flask:
    hasher = PasswordHasher(time_cost=int(os.environ.get("PASSWORD_HASH_TIME_COST", "2")),
                            memory_cost=int(os.environ.get("PASSWORD_HASH_MEMORY_KIB", "19456")),
                            parallelism=1)
    flaws = set(filter(None, os.environ.get("NAIVE_FLAWS", "").split(",")))
    url = make_url(os.environ.get("DATABASE_URL", "sqlite:///./wsgi_naive.db"))
    engine = create_engine(url.set(query={}) if "url" in flaws else url,
                           connect_args={"timeout": 0} if "no-wait" in flaws else {})
    users = users_table(unique_names="no-unique" not in flaws)
    users.metadata.create_all(engine)

    def retry_later(values: dict[str, Any]) -> None:
        while True:
            time.sleep(30)
            try:
                with engine.begin() as connection:
                    connection.execute(insert(users).values(**values))
                return
            except IntegrityError:
                return
            except SQLAlchemyError:
                continue
    app = Flask(__name__)

    def as_json(row: Any) -> dict[str, Any]:
        return {"id": row.id, "name": row.name, "created_at": row.created_at}

    failed_creates = 0
    write_behind = WriteBehind(engine) if "ack-before-commit" in flaws else None
    first_write = threading.Lock()
    first_write_done = False
    if "migrate-at-first-write" in flaws:
        with engine.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE IF NOT EXISTS schema_version (v INTEGER)")

    def migrate() -> None:
        with engine.connect() as connection:
            if connection.exec_driver_sql("SELECT count(*) FROM schema_version").scalar():
                return
            connection.exec_driver_sql("ALTER TABLE users ADD COLUMN note TEXT")
            time.sleep(FIRST_WRITE_WORK_S)
            connection.exec_driver_sql("INSERT INTO schema_version VALUES (2)")
            connection.commit()

    @app.post("/users/")
    def create_user() -> Any:
        nonlocal failed_creates, first_write_done
        with first_write:
            if not first_write_done:
                if "migrate-at-first-write" in flaws:
                    try:
                        migrate()
                    except SQLAlchemyError:
                        return jsonify(detail="Database error occurred"), 500
                elif "slow-first-write" in flaws:
                    time.sleep(FIRST_WRITE_WORK_S)
                first_write_done = True
        if "breaker-never-closes" in flaws and failed_creates >= 3:
            return jsonify(detail="Service unavailable"), 503
        body = request.get_json()
        values = {"name": body["name"], "password_hash": hasher.hash(body["password"]),
                  "created_at": datetime.now(UTC).isoformat()}
        if write_behind is not None:
            with write_behind.lock:
                new_id = write_behind.connection.execute(
                    insert(users).values(**values)).inserted_primary_key[0]
            return jsonify({"id": new_id, "name": values["name"],
                            "created_at": values["created_at"]}), 201
        try:
            with engine.begin() as connection:
                new_id = connection.execute(insert(users).values(**values)).inserted_primary_key[0]
                row = connection.execute(select(users).where(users.c.id == new_id)).one()
            if "read-after-commit" in flaws:
                with engine.connect() as connection:
                    row = connection.execute(select(users).where(users.c.id == new_id)).one()
        except SQLAlchemyError:
            failed_creates += 1
            if "leak" in flaws:
                threading.Thread(target=retry_later, args=(values,), daemon=True).start()
            return jsonify(detail="Database error occurred"), 500
        return jsonify(as_json(row)), 201

    @app.get("/users/<user_id>")
    def read_user(user_id: str) -> Any:
        with engine.connect() as connection:
            row = connection.execute(select(users).where(users.c.id == int(user_id))).first()
        if row is None:
            return jsonify(detail="User not found"), 404
        return jsonify(as_json(row))

    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify(status="ok")

    @app.get("/readyz")
    def readyz() -> Any:
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
        return jsonify(status="ready")

    return app
