"""The users operations: create (idempotent under a key) and read.

Each DB step is a sync unit of work handed to `Database`: SQLAlchemy Core statements, built
once at import (their compiled form is cached by the engine), run on the worker's connection.
It returns plain records, because it runs on a worker thread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, bindparam, insert, select

from .db import Database
from .errors import IdempotencyKeyReused, IntegrityViolation, NameTaken, UserNotFound
from .models import IdempotencyKey, User
from .passwords import PasswordHasher
from .resilience import Deadline

# Declarative classes carry Tables; the ORM types __table__ as the wider FromClause.
_users = cast(Table, User.__table__)
_keys = cast(Table, IdempotencyKey.__table__)

_SELECT_USER = select(_users.c.id, _users.c.name, _users.c.created_at).where(
    _users.c.id == bindparam("user_id"))
_SELECT_BY_KEY = (
    select(_users.c.id, _users.c.name, _users.c.created_at, _users.c.password_hash)
    .join(_keys, _keys.c.user_id == _users.c.id)
    .where(_keys.c.key == bindparam("key"))
)
_INSERT_USER = insert(_users).values(
    name=bindparam("name"), password_hash=bindparam("password_hash"),
    created_at=bindparam("created_at"),
).returning(_users.c.id)
_INSERT_KEY = insert(_keys).values(
    key=bindparam("key"), user_id=bindparam("user_id"), created_at=bindparam("created_at"))
# A create with a new key runs these, in this order, in one write transaction (_insert_user);
# the power-loss simulation replays them on connections of its own (app/crash_service.py).
CREATE_STATEMENTS = (_SELECT_BY_KEY, _INSERT_USER, _INSERT_KEY)


@dataclass(frozen=True)
class UserRecord:
    id: int
    name: str
    created_at: datetime  # aware, UTC

    @classmethod
    def of(cls, row: Any) -> UserRecord:
        return cls(row.id, row.name, row.created_at.replace(tzinfo=UTC))


@dataclass(frozen=True)
class Created:
    user: UserRecord
    replayed: bool  # True when an earlier request with the same Idempotency-Key made it


@dataclass(frozen=True)
class _Replay:
    user: UserRecord
    password_hash: str


def _insert_user(
    name: str, password_hash: str, key: str | None
) -> Callable[[Connection], UserRecord | _Replay]:
    def work(conn: Connection) -> UserRecord | _Replay:
        if key is not None:
            earlier = conn.execute(_SELECT_BY_KEY, {"key": key}).first()
            if earlier is not None:
                return _Replay(UserRecord.of(earlier), earlier.password_hash)
        now = datetime.now(UTC).replace(tzinfo=None)
        # The UNIQUE check on name happens here, inside the transaction.
        user_id = conn.execute(_INSERT_USER, {"name": name, "password_hash": password_hash,
                                              "created_at": now}).scalar_one()
        if key is not None:
            conn.execute(_INSERT_KEY, {"key": key, "user_id": user_id, "created_at": now})
        return UserRecord(user_id, name, now.replace(tzinfo=UTC))

    return work


def _select_user(user_id: int) -> Callable[[Connection], UserRecord | None]:
    def work(conn: Connection) -> UserRecord | None:
        row = conn.execute(_SELECT_USER, {"user_id": user_id}).first()
        return None if row is None else UserRecord.of(row)

    return work


async def create_user(
    db: Database, hasher: PasswordHasher, name: str, password: str, key: str | None,
    deadline: Deadline | None = None,
) -> Created:
    """Create a user, or return the one an earlier request with the same key created.

    The password is hashed before the write transaction (the writer lane should not wait on
    argon2). A repeat with the same key must carry the same name and password: the password is
    checked against the stored hash, so no other derivative of it is ever stored.
    """
    password_hash = await hasher.hash(password, deadline)
    work = _insert_user(name, password_hash, key)
    try:
        outcome = await db.write("create_user", work, deadline)
    except IntegrityViolation as exc:
        if key is None or db.serialises_writes:
            raise NameTaken(f"a user named {name!r} already exists") from exc
        # With concurrent writers (PostgreSQL), a request with the same key may have
        # committed between this transaction's key lookup and its insert: look again.
        try:
            outcome = await db.write("create_user", work, deadline)
        except IntegrityViolation as again:
            raise NameTaken(f"a user named {name!r} already exists") from again
    if isinstance(outcome, _Replay):
        same = outcome.user.name == name and await hasher.verify(
            outcome.password_hash, password, deadline)
        if not same:
            raise IdempotencyKeyReused(
                "this Idempotency-Key was used with a different request body"
            )
        return Created(outcome.user, replayed=True)
    return Created(outcome, replayed=False)


async def get_user(db: Database, user_id: int, deadline: Deadline | None = None) -> UserRecord:
    user = await db.read("get_user", _select_user(user_id), deadline)
    if user is None:
        raise UserNotFound(f"no user with id {user_id}")
    return user
