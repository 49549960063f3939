"""The service at the settings production runs with, not the cheap ones the other tests use:
the password hash at its default cost, and the start-up log on either backend saying what
runs and never a secret (a password in the database URL included)."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.settings import Settings

URL_PASSWORD = "url-secret-5b1c"
USER_PASSWORD = "a production passphrase"
COSTS = ("password_hash_time_cost", "password_hash_memory_kib", "password_hash_parallelism")


def production(name: str) -> Any:
    return Settings.model_fields[name].default


async def test_the_hash_is_computed_at_the_default_cost(
        make_app: Callable[..., FastAPI], client_for: Callable[[FastAPI], httpx.AsyncClient],
        db_rows: Callable[..., list[tuple[Any, ...]]]) -> None:
    """Each cost setting reaches argon2: the stored hash names the costs it was made with."""
    app = make_app(**{name: production(name) for name in COSTS})
    response = await client_for(app).post("/users/", json={"name": "costly",
                                                           "password": USER_PASSWORD})
    assert response.status_code == 201, response.text
    ((stored,),) = db_rows("SELECT password_hash FROM users")
    m, t, p = (production(name) for name in ("password_hash_memory_kib",
                                             "password_hash_time_cost",
                                             "password_hash_parallelism"))
    assert stored.startswith(f"$argon2id$v=19$m={m},t={t},p={p}$"), stored
    assert USER_PASSWORD not in stored


def test_start_up_says_what_runs_and_never_a_secret(
        make_app: Callable[..., FastAPI], database_url: str, on_postgres: bool,
        caplog: pytest.LogCaptureFixture) -> None:
    # PostgreSQL's throwaway server trusts local connections: the password is carried, unused.
    url = database_url.replace("@", f":{URL_PASSWORD}@", 1) if on_postgres else database_url
    with caplog.at_level(logging.DEBUG):
        make_app(database_url=url, **{name: production(name) for name in COSTS})
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert URL_PASSWORD not in logged
    if on_postgres:
        shown = r"PostgreSQL \d+\.\d+.* at postgresql\+psycopg://\w+:\*\*\*@"
        assert re.search(shown, logged), logged
    else:
        assert re.search(r"SQLite 3\.\d+\.\d+ via \w+ at \S+users\.db", logged), logged
