"""Every failure the service can report, drawn once.

    ServiceError                       (http status and code: app/http_errors.py)
    ├── StorageError                   raised by the DB layer, never a raw driver error
    │   ├── TransientStorageError      may succeed if the whole transaction is retried
    │   │   └── LockTimeout              SQLITE_BUSY: another connection held the lock
    │   ├── RetriesExhausted           transient errors outlasted the retry budget -> 503
    │   ├── QueueFull                  the DB work queue is full -> 503 at once
    │   ├── DeadlineExceeded           the call outlived its deadline -> 504
    │   ├── StorageUnavailable         disk full, I/O error, cannot open -> 503
    │   ├── IntegrityViolation         a constraint refused the write -> 409
    │   └── StorageBug                 schema, programming or unknown DB errors -> 500
    ├── ClientGone                     the client disconnected; its queued work was dropped
    └── DomainError                    the request is well formed but cannot be served
        ├── UserNotFound                 -> 404
        ├── NameTaken                    -> 409
        └── IdempotencyKeyReused         same key, different request -> 422

Only `TransientStorageError` is ever retried (app/resilience.py). The driver's error is kept as
`__cause__` for logs; its text never reaches a client.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base of every error the service reports to a client."""


class StorageError(ServiceError):
    """A DB call failed; the subclass says how."""

    def __init__(self, message: str, *, error_name: str | None = None) -> None:
        super().__init__(message)
        # The backend's machine-readable code (e.g. "SQLITE_BUSY"), for metrics and logs.
        self.error_name = error_name


class TransientStorageError(StorageError):
    """Retrying the whole transaction may succeed."""


class LockTimeout(TransientStorageError):
    """Another connection held the lock for the whole busy wait."""


class RetriesExhausted(StorageError):
    """Transient errors outlasted the retry budget (attempts or deadline)."""


class QueueFull(StorageError):
    """The DB work queue is full; the call was refused without waiting."""


class DeadlineExceeded(StorageError):
    """The call outlived its deadline; its work was interrupted."""


class StorageUnavailable(StorageError):
    """The storage cannot serve writes or reads now (disk full, I/O error, cannot open)."""


class IntegrityViolation(StorageError):
    """A constraint refused the write."""


class StorageBug(StorageError):
    """Schema, programming or unclassified DB error: a defect, never retried."""


class ClientGone(ServiceError):
    """The client disconnected while its work was queued; the work was never started."""


class DomainError(ServiceError):
    """The request was valid but cannot be served."""


class UserNotFound(DomainError):
    pass


class NameTaken(DomainError):
    pass


class IdempotencyKeyReused(DomainError):
    """The Idempotency-Key was used before with a different request body."""
