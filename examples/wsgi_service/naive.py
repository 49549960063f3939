"""A users service on Flask (WSGI) written the way the seed report's service is: the naive
twin of examples/wsgi_service/hardened.py, for the fault toolkit's WSGI target.

SQLAlchemy's and SQLite's defaults (rollback journal, the driver's 5 s busy timeout, a
deferred BEGIN, a QueuePool of 5 + 10), no deadline, no retries, no validation beyond
Flask's own: every database error is a 500, and a read id is converted with int().
Passwords are still stored only as argon2id hashes.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

from argon2 import PasswordHasher
from flask import Flask, jsonify, request
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, insert, select
from sqlalchemy.exc import SQLAlchemyError

metadata = MetaData()
users = Table("users", metadata,
              Column("id", Integer, primary_key=True),
              Column("name", String(64), unique=True),
              Column("password_hash", String(255)),
              Column("created_at", String(40)))


def create_app() -> Flask:
    hasher = PasswordHasher(time_cost=int(os.environ.get("PASSWORD_HASH_TIME_COST", "2")),
                            memory_cost=int(os.environ.get("PASSWORD_HASH_MEMORY_KIB", "19456")),
                            parallelism=1)
    engine = create_engine(os.environ.get("DATABASE_URL", "sqlite:///./wsgi_naive.db"))
    metadata.create_all(engine)
    app = Flask(__name__)

    def as_json(row: Any) -> dict[str, Any]:
        return {"id": row.id, "name": row.name, "created_at": row.created_at}

    @app.post("/users/")
    def create_user() -> Any:
        body = request.get_json()
        try:
            with engine.begin() as connection:
                new_id = connection.execute(insert(users).values(
                    name=body["name"], password_hash=hasher.hash(body["password"]),
                    created_at=datetime.now(UTC).isoformat())).inserted_primary_key[0]
                row = connection.execute(select(users).where(users.c.id == new_id)).one()
        except SQLAlchemyError:
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
