"""Tables."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, ForeignKey, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


# 64-bit ids everywhere (the API accepts up to 2**63 - 1). On SQLite the column must be
# exactly INTEGER to be the rowid alias that AUTOINCREMENT needs; SQLite's INTEGER is 64-bit.
Id = BigInteger().with_variant(Integer(), "sqlite")


class User(Base):
    __tablename__ = "users"
    # AUTOINCREMENT: an id is never handed out twice, even after the newest row is gone, so a
    # client holding an id from a 201 can never read someone else's user under it.
    # Not ClassVar: SQLAlchemy's declarative base declares __table_args__ as an attribute.
    __table_args__ = {"sqlite_autoincrement": True}  # noqa: RUF012

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    # Naive UTC: SQLite has no time zone type; the API adds the zone back.
    created_at: Mapped[datetime] = mapped_column(DateTime)


class IdempotencyKey(Base):
    """A create that succeeded under an Idempotency-Key, written in the same transaction as
    the user, so the key exists if and only if the user does."""

    __tablename__ = "idempotency_keys"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    user_id: Mapped[int] = mapped_column(Id, ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime)
