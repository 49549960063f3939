"""The service's whole configuration: one class, read from the environment.

Every field is documented in the README's configuration table; keep the two in step.
Nothing here is instantiated at import time: `create_app()` builds a `Settings()` when it is
not handed one, so each test (and each fault) can build an app with its own settings.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, PositiveInt, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# A finite duration in seconds: pydantic's PositiveFloat would accept "inf", which no deadline
# arithmetic survives.
Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATABASE_URL = f"sqlite:///{PROJECT_ROOT / 'data' / 'users.db'}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    service_name: str = "users-service"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    database_url: str = DEFAULT_DATABASE_URL

    # SQLite only. "pysqlite3" bundles a current SQLite; "sqlite3" is the interpreter's own
    # module, linked to the system library (3.40.1 here, affected by the WAL-reset bug).
    sqlite_driver: Literal["pysqlite3", "sqlite3"] = "pysqlite3"
    # OFF is not offered: it lets an OS crash corrupt the database.
    sqlite_synchronous: Literal["NORMAL", "FULL", "EXTRA"] = "NORMAL"
    # Busy wait outside a request (schema creation, maintenance). Inside a request a lock wait
    # ends with the request's deadline: a read's busy timeout is set to its remaining budget,
    # and the writer waits for its lock in short busy waits while its calls still want it.
    sqlite_busy_timeout_ms: PositiveInt = 5000
    sqlite_journal_size_limit_bytes: PositiveInt = 64 * 1024 * 1024
    # Seconds between the service's own WAL checkpoints, run on their own thread and
    # connection (PASSIVE, or TRUNCATE once the WAL is past the journal size limit); SQLite's
    # auto-checkpoint inside COMMITs is then off. 0 leaves checkpoints to SQLite alone.
    sqlite_checkpoint_interval_s: float = Field(default=1.0, ge=0, allow_inf_nan=False)
    # Run WAL with several connections on an SQLite affected by the WAL-reset bug anyway.
    sqlite_allow_affected_version: bool = False

    # Deadline of a request's DB work, counted from the request's arrival: queueing, password
    # hashing, lock waits and retries all fall inside it.
    db_deadline_s: Seconds = 5.0
    # Worker threads (and connections) for reads; SQLite writes have one of each. Few: the
    # process shares one GIL, and each reader takes a whole batch of queued reads per wake-up
    # (measured on 2 cores: 1, 2 and 4 readers within noise of each other; 2 keeps reads
    # going beside one long one).
    db_read_workers: PositiveInt = 2
    # Calls allowed to wait for a worker, per lane, before new ones get 503 at once: a bound
    # on memory, as many as requests can be in flight. What bounds the wait is time
    # (ADMISSION_MAX_WAIT_S): a thousand point reads drain in well under a second.
    db_queue_limit: int = Field(default=1024, ge=0)
    # Admission at the door (app/admission.py): a request whose expected wait before its
    # work starts (time since its first byte plus the measured drain time of the lanes it will
    # queue on) is longer than this gets 503 overloaded before its body is read. Unset, it is
    # half of DB_DEADLINE_S: an admitted request then has the other half for its own work and
    # for an estimate that was short.
    admission_max_wait_s: Seconds | None = None

    # Transient errors (SQLITE_BUSY family) are retried with full-jitter exponential backoff,
    # bounded by attempts and by the call's remaining deadline.
    retry_max_attempts: PositiveInt = 5
    retry_backoff_initial_s: Seconds = 0.01
    retry_backoff_max_s: Seconds = 0.25
    # The retry budget (app/resilience.py, RetryBudget): a transient failure takes a token, a
    # success gives back RETRY_BUDGET_RATIO; retries stop while half the tokens are gone.
    # 0 tokens: no budget (every call may use RETRY_MAX_ATTEMPTS).
    retry_budget_tokens: float = Field(default=100.0, ge=0)
    retry_budget_ratio: float = Field(default=0.5, gt=0)
    # Seconds a client is told to wait (Retry-After) on a 503.
    retry_after_s: PositiveInt = 1

    # Deadline of the DB round trip behind GET /readyz and GET /.
    readyz_deadline_s: Seconds = 1.0

    # argon2id cost. The defaults are OWASP's minimum (m=19 MiB, t=2, p=1); tests and
    # benchmarks lower them.
    password_hash_time_cost: PositiveInt = 2
    password_hash_memory_kib: PositiveInt = 19456
    password_hash_parallelism: PositiveInt = 1
    # Password hashes computed at once (each one holds a CPU and memory_kib of memory).
    # Unset: one per CPU this process may run on, at most 4. More hashes than CPUs only
    # share them, and evict each other's 19 MiB from the caches: measured on one core, creates
    # a second went from 48.9 (one at a time) to 45.8 (four at once) at 16 clients.
    password_hash_concurrency: PositiveInt | None = None

    # Limits at the door (app/request_limits.py, app/serve.py). This API's bodies are a few
    # hundred bytes; its headers well under 1 KiB.
    http_max_body_bytes: PositiveInt = 16 * 1024
    http_body_timeout_s: Seconds = 10.0
    http_max_header_bytes: PositiveInt = 16 * 1024
    http_header_timeout_s: Seconds = 10.0
    # uvicorn: idle keep-alive connections are closed after this; past `limit_concurrency`
    # connections or requests at once, new requests get 503 at once.
    http_keep_alive_s: Seconds = 5.0
    # The event loop behind `python -m app.serve`. uvloop answers about 15 % more requests a
    # second at a few dozen clients and, busy, leaves new connections in the kernel's accept
    # queue (which spares a saturated loop the cost of accepting them, but can leave a
    # connection's first request unread for seconds); asyncio accepts them eagerly, which
    # under open-loop overload turns into a storm of connections refused and reopened
    # (docs/architecture.md, "Overload", has both measured).
    http_event_loop: Literal["asyncio", "uvloop"] = "uvloop"
    http_limit_concurrency: PositiveInt = 1024
    # On SIGTERM: requests in flight get this long to finish before their connections are
    # cut. Each is bounded by its own deadline, so it must be longer than DB_DEADLINE_S;
    # unset, it is DB_DEADLINE_S + 5 s.
    http_graceful_shutdown_s: Seconds | None = None

    @model_validator(mode="after")
    def _check_consistency(self) -> Settings:
        if self.retry_backoff_max_s < self.retry_backoff_initial_s:
            raise ValueError("retry_backoff_max_s must be >= retry_backoff_initial_s")
        graceful = self.http_graceful_shutdown_s
        if graceful is not None and graceful <= self.db_deadline_s:
            raise ValueError("http_graceful_shutdown_s must be longer than db_deadline_s, so a "
                             "request in flight at SIGTERM can reach its own deadline")
        if self.password_hash_memory_kib < 8 * self.password_hash_parallelism:
            raise ValueError("argon2 needs password_hash_memory_kib >= 8 * parallelism")
        return self

    @property
    def hash_concurrency(self) -> int:
        if self.password_hash_concurrency is not None:
            return self.password_hash_concurrency
        return min(4, len(os.sched_getaffinity(0)))

    @property
    def admission_wait_s(self) -> float:
        if self.admission_max_wait_s is not None:
            return self.admission_max_wait_s
        return self.db_deadline_s / 2

    @property
    def graceful_shutdown_s(self) -> float:
        if self.http_graceful_shutdown_s is not None:
            return self.http_graceful_shutdown_s
        return self.db_deadline_s + 5.0

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")
