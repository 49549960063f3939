"""What the two peers (tutorial_service/, async_service/) share: their table, their bodies and
their hasher, defined as a user would. The peers differ only in how they reach the database;
this part is the same in both, so it is written once. Not the hardened service's code: a peer
must not borrow app/, or the comparison would measure the same thing twice.

No `from __future__ import annotations`: FastAPI evaluates these models' annotations.
"""

import os
from datetime import UTC, datetime

from argon2 import PasswordHasher
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import DateTime, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# The hardened service's default argon2id cost; the benchmark lowers both through the env.
DEFAULT_HASH_TIME_COST = 2
DEFAULT_HASH_MEMORY_KIB = 19456


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime)


class UserCreate(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=8, max_length=128)


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    created_at: datetime

    @field_validator("created_at")
    @classmethod
    def _in_utc(cls, value: datetime) -> datetime:
        # SQLite keeps no time zone; the values were written in UTC.
        return value if value.tzinfo else value.replace(tzinfo=UTC)


def hasher_from_env() -> PasswordHasher:
    """argon2id at PASSWORD_HASH_TIME_COST / PASSWORD_HASH_MEMORY_KIB (ServerProcess sets them)."""
    return PasswordHasher(
        time_cost=int(os.environ.get("PASSWORD_HASH_TIME_COST", DEFAULT_HASH_TIME_COST)),
        memory_cost=int(os.environ.get("PASSWORD_HASH_MEMORY_KIB", DEFAULT_HASH_MEMORY_KIB)),
        parallelism=1,
    )
