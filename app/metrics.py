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
        self.db_retries_denied = Counter(
            "db_retries_denied", "Retries not started because most attempts were failing "
            "(the retry budget, RETRY_BUDGET_TOKENS)", ["operation"], registry=r,
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
        # What the gauges above are measured against, so an alert can say "the queue is 80 %
        # full" without knowing this instance's settings.
        self.db_lane_workers = Gauge(
            "db_lane_workers", "Worker threads (and pooled connections) of a lane", ["lane"],
            registry=r,
        )
        self.db_lane_queue_limit = Gauge(
            "db_lane_queue_limit", "Calls a lane lets wait before refusing new ones (503)",
            ["lane"], registry=r,
        )
        self.password_hash_running = Gauge(
            "password_hash_running", "Password hashes being computed", registry=r
        )
        self.password_hash_waiting = Gauge(
            "password_hash_waiting", "Requests waiting for a password-hashing slot", registry=r
        )
        self.password_hash_slots = Gauge(
            "password_hash_slots", "Password hashes computed at once at most "
            "(PASSWORD_HASH_CONCURRENCY)", registry=r,
        )
        self.http_refusals = Counter(
            "http_refusals", "Requests refused at the door (503 overloaded before any work), "
            "by reason", ["reason"], registry=r,
        )
        for reason in ("overloaded", "connections"):  # present at 0 from the start
            self.http_refusals.labels(reason)
        self.http_queue_seconds = Histogram(
            "http_request_queue_seconds",
            "Seconds from a request's first byte to the app (the event loop's backlog)",
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.wal_bytes = Gauge("sqlite_wal_bytes", "Size of the -wal file", registry=r)
        self.journal_size_limit_bytes = Gauge(
            "sqlite_journal_size_limit_bytes",
            "WAL size past which a checkpoint truncates it (SQLITE_JOURNAL_SIZE_LIMIT_BYTES)",
            registry=r,
        )
        self.checkpoint_interval_seconds = Gauge(
            "sqlite_checkpoint_interval_seconds",
            "Seconds between the service's checkpoints (0: SQLite's own auto-checkpoint)",
            registry=r,
        )
        self.checkpoint_lag_frames = Gauge(
            "sqlite_checkpoint_lag_frames",
            "WAL frames not yet copied into the database at the last checkpoint", registry=r,
        )
        self.checkpoint_age_seconds = Gauge(
            "sqlite_checkpoint_age_seconds", "Seconds since the last completed checkpoint",
            registry=r,
        )
        self._last_checkpoint: float | None = None

    def watch_lane(self, lane: str, workers: int, queue_limit: int,
                   queued: Callable[[], float], running: Callable[[], float]) -> None:
        """The lane's depth and in-flight gauges are read at scrape time: free per call."""
        self.db_lane_workers.labels(lane).set(workers)
        self.db_lane_queue_limit.labels(lane).set(queue_limit)
        self.db_queue_depth.labels(lane).set_function(queued)
        self.db_inflight.labels(lane).set_function(running)

    def watch_password_hashing(self, running: Callable[[], float],
                               waiting: Callable[[], float], slots: int) -> None:
        """Read at scrape time (on the event loop, where the limiter lives): free per hash."""
        self.password_hash_running.set_function(running)
        self.password_hash_waiting.set_function(waiting)
        self.password_hash_slots.set(slots)

    def watch_wal(self, wal_bytes: Callable[[], int], journal_size_limit_bytes: int,
                  checkpoint_interval_s: float) -> None:
        self.journal_size_limit_bytes.set(journal_size_limit_bytes)
        self.checkpoint_interval_seconds.set(checkpoint_interval_s)
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
