"""The users operations: create (idempotent under a key) and read.

Each DB step is a sync unit of work handed to `Database`; it returns plain records, never ORM
objects, because it runs on a worker thread and its Session is closed before the result
reaches the event loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from .db import Database
from .errors import IdempotencyKeyReused, IntegrityViolation, NameTaken, UserNotFound
from .models import IdempotencyKey, User
from .passwords import PasswordHasher
from .resilience import Deadline


@dataclass(frozen=True)
class UserRecord:
    id: int
    name: str
    created_at: datetime  # aware, UTC

    @classmethod
    def of(cls, user: User) -> UserRecord:
        return cls(user.id, user.name, user.created_at.replace(tzinfo=UTC))


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
) -> Callable[[Session], UserRecord | _Replay]:
    def work(session: Session) -> UserRecord | _Replay:
        if key is not None:
            earlier = session.execute(
                select(User).join(IdempotencyKey, IdempotencyKey.user_id == User.id)
                .where(IdempotencyKey.key == key)
            ).scalar_one_or_none()
            if earlier is not None:
                return _Replay(UserRecord.of(earlier), earlier.password_hash)
        now = datetime.now(UTC).replace(tzinfo=None)
        user = User(name=name, password_hash=password_hash, created_at=now)
        session.add(user)
        session.flush()  # the UNIQUE check on name happens here, inside the transaction
        if key is not None:
            session.add(IdempotencyKey(key=key, user_id=user.id, created_at=now))
        return UserRecord.of(user)

    return work


def _select_user(user_id: int) -> Callable[[Session], UserRecord | None]:
    def work(session: Session) -> UserRecord | None:
        user = session.get(User, user_id)
        return None if user is None else UserRecord.of(user)

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
    password_hash = await hasher.hash(password)
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
        same = outcome.user.name == name and await hasher.verify(outcome.password_hash, password)
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
