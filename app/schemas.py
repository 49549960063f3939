"""Request and response bodies. No response model has a password or hash field."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

# SQLite's INTEGER is a signed 64-bit value; a larger id can never exist.
MAX_USER_ID = 2**63 - 1

# Printable text only: C0 and C1 control characters in a name break logs and terminals
# (\x9b alone starts a terminal escape sequence).
_NAME_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]+$"
# Idempotency keys are opaque tokens: visible ASCII, as HTTP header values allow safely.
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]+$"
IDEMPOTENCY_KEY_MAX = 255


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=64, pattern=_NAME_PATTERN)]
    # repr=False: a stray repr or log line of the body never shows the password.
    password: Annotated[str, Field(min_length=8, max_length=128, repr=False)]


class UserOut(BaseModel):
    id: int
    name: str
    created_at: datetime


class ServiceInfo(BaseModel):
    service: str
    version: str
    database: str  # "ok" or "unavailable"


class ReadyStatus(BaseModel):
    status: Literal["ready"]


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: list[dict[str, object]] | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail
