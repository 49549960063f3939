"""Real driver errors carry SQL and bound parameters (a name, a password hash); none of it may
reach a log line or a response.

The errors are the driver's own, raised by real statements: a UNIQUE violation, a table
dropped under the running service by another connection, and (for /readyz) an I/O error
raised through SQLAlchemy's execution path, whose wrapper quotes the statement.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import httpx
import pysqlite3.dbapi2 as sqlite
import pytest
from fastapi import FastAPI
from sqlite_faults.sql_errors import InjectSqlError

from app.errors import IntegrityViolation
from app.users import _insert_user

PASSWORD = "a secret passphrase"
NAME = "log-hygiene-name"
SQL_WORDS = ("INSERT INTO", "SELECT ", "[SQL", "parameters:", "Traceback")


def everything_logged(caplog: pytest.LogCaptureFixture) -> str:
    """Every record's message and formatted traceback, from every logger."""
    formatter = logging.Formatter()
    parts = []
    for record in caplog.records:
        parts.append(record.getMessage())
        if record.exc_info:
            parts.append(formatter.formatException(record.exc_info))
    return "\n".join(parts)


def assert_clean(text: str, *secrets: str) -> None:
    for word in (*SQL_WORDS, *secrets, "$argon2"):
        assert word not in text, f"{word!r} leaked:\n{text}"


@pytest.mark.sqlite_only("drops a table from a second SQLite connection")
async def test_a_real_schema_error_leaves_no_sql_or_parameters_in_logs_or_response(
    make_app: Callable[..., FastAPI], client_for: Callable[[FastAPI], httpx.AsyncClient],
    db_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    app = make_app()
    client = client_for(app)
    assert (await client.post("/users/", json={"name": "first", "password": PASSWORD})
            ).status_code == 201
    other = sqlite.connect(db_path, isolation_level=None)
    other.execute("DROP TABLE idempotency_keys")
    other.execute("DROP TABLE users")
    other.close()
    caplog.clear()

    response = await client.post("/users/", json={"name": NAME, "password": PASSWORD})
    assert response.status_code == 500, response.text
    assert response.json()["error"] == {"code": "internal_error", "message": "internal error"}
    assert_clean(response.text, NAME, PASSWORD)
    logged = everything_logged(caplog)
    assert "500 internal_error" in logged  # the failure is logged, by class and code
    assert_clean(logged, NAME, PASSWORD)


async def test_the_driver_error_kept_for_logs_quotes_sql_but_never_its_parameters(
    app: FastAPI, client: httpx.AsyncClient, database_url: str,
) -> None:
    """The driver's error stays attached (`__cause__`) for whoever logs it later: with
    SQLAlchemy's hide_parameters it shows the statement, never the bound parameters (the
    hash). PostgreSQL's own DETAIL quotes the conflicting key's value (the name) whatever
    the client hides, which is one more reason no log line prints a driver's text."""
    assert (await client.post("/users/", json={"name": NAME, "password": PASSWORD})
            ).status_code == 201
    password_hash = "$argon2id$v=19$m=8,t=1,p=1$not-a-real-hash"
    with pytest.raises(IntegrityViolation) as caught:
        await app.state.db.write("create_user", _insert_user(NAME, password_hash, None))
    cause = str(caught.value.__cause__)
    assert "INSERT INTO users" in cause  # the real driver error, with its statement
    assert password_hash not in cause, cause
    if database_url.startswith("sqlite"):
        assert NAME not in cause, cause


async def test_readiness_failure_names_the_error_class_only(
    app: FastAPI, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with InjectSqlError(app.state.db.reader_engine, "io_error"):
        response = await client.get("/readyz")
    assert response.status_code == 503, response.text
    assert_clean(response.text)
    assert_clean(everything_logged(caplog))
