"""Both backends have every member of the declared interface (app/backend.py), with the
same parameters: `Database` calls nothing else, so a backend missing one fails here, not in
production on its first call of that kind."""

from __future__ import annotations

import inspect

import pytest

from app.backend import Backend
from app.postgres_backend import PostgresBackend
from app.sqlite_backend import SqliteBackend

pytestmark = pytest.mark.unit

MEMBERS = sorted(
    name for name in {*vars(Backend), *Backend.__annotations__}
    if not name.startswith("_")
)


@pytest.mark.parametrize("backend", [SqliteBackend, PostgresBackend])
@pytest.mark.parametrize("member", MEMBERS)
def test_each_backend_has_the_member(backend: type, member: str) -> None:
    if member in Backend.__annotations__:  # a declared attribute
        assert member in vars(backend) or member in getattr(backend, "__annotations__", {}) \
            or member in inspect.getsource(backend.__init__), member
        return
    declared = inspect.signature(getattr(Backend, member))
    implemented = inspect.signature(getattr(backend, member))
    assert list(implemented.parameters) == list(declared.parameters), member
