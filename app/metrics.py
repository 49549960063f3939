"""Prometheus metrics, one registry per app so tests can build many apps side by side.

They cover the resilience report's monitoring list: DB call latency, retries, timeouts (504),
transient-error and lock-timeout counts, work-queue depth and in-flight calls, WAL size and
checkpoint lag.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.db_call_seconds = Histogram(
            "db_call_duration_seconds",
            "DB call latency, queueing and retries included, by outcome",
            ["operation", "outcome"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.db_calls = Counter(
            "db_calls", "DB calls by operation and outcome", ["operation", "outcome"], registry=r
        )
        self.db_retries = Counter(
            "db_retries", "Transactions retried after a transient error, by the call's outcome",
            ["operation", "outcome"], registry=r,
        )
        self.db_transient_errors = Counter(
            "db_transient_errors", "Transient DB errors seen (retried or not)",
            ["operation", "error"], registry=r,
        )
        self.db_lock_timeouts = Counter(
            "db_lock_timeouts", "Busy waits for a lock that ended without the lock",
            ["operation"], registry=r,
        )
        self.db_timeouts = Counter(
            "db_timeouts", "DB calls that outlived their deadline (answered 504)",
            ["operation"], registry=r,
        )
        self.db_queue_depth = Gauge(
            "db_queue_depth", "DB calls waiting for a worker", ["lane"], registry=r
        )
        self.db_inflight = Gauge(
            "db_inflight", "DB calls running on a worker", ["lane"], registry=r
        )
        self.wal_bytes = Gauge("sqlite_wal_bytes", "Size of the -wal file", registry=r)
        self.checkpoint_lag_frames = Gauge(
            "sqlite_checkpoint_lag_frames",
            "WAL frames not yet copied into the database at the last checkpoint", registry=r,
        )
        self.checkpoint_age_seconds = Gauge(
            "sqlite_checkpoint_age_seconds", "Seconds since the last completed checkpoint",
            registry=r,
        )
        self._last_checkpoint: float | None = None

    def watch_wal(self, wal_bytes: Callable[[], int]) -> None:
        self.wal_bytes.set_function(wal_bytes)
        self.checkpoint_age_seconds.set_function(
            lambda: -1.0 if self._last_checkpoint is None
            else time.monotonic() - self._last_checkpoint
        )

    def record_checkpoint(self, lag_frames: int) -> None:
        self.checkpoint_lag_frames.set(lag_frames)
        self._last_checkpoint = time.monotonic()

    def render(self) -> bytes:
        return generate_latest(self.registry)
