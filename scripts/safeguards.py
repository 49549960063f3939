"""The safeguard inventory: every safeguard in app/, the mutant that removes it, and the tests
that must go red when it is gone.

One row per safeguard. Each edit names the function or class its anchor lives in, so rows
survive code moving and reformatting (scripts/anchors.py). `scripts/check_mutants.py` applies
each row's edits to a scratch copy of the tree and runs the row's tests (quick mode) or the
whole unit and fault suites (full mode); `--write-inventory` renders this table as
docs/safeguards.md. A safeguard without a row is a hole in the suite; a row whose mutant no
test kills is a hole too.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Edit:
    path: str
    old: str  # the anchor: once in `within` (scripts/anchors.py), whitespace free
    new: str
    # The definition the anchor lives in ("Class.method", "function"); None: module level.
    within: str | None = None


@dataclass(frozen=True)
class Safeguard:
    name: str  # the mutant's name
    family: str
    what: str  # the safeguard, as a reader of app/ would name it
    edits: tuple[Edit, ...]
    tests: tuple[str, ...]  # pytest node ids that must go red without it
    backend: str = "sqlite"  # "postgres": the mutant runs with --backend postgres
    append: dict[str, str] = field(default_factory=dict)  # path -> code appended (helpers)


def one(path: str, old: str, new: str, within: str | None = None) -> tuple[Edit, ...]:
    return (Edit(path, old, new, within),)


F = "tests/fault/"
U = "tests/unit/"
D = "tests/durability/"
SLOW = F + "test_slow_statements.py::"
LOCKED = F + "test_locked_database.py::"
CANCEL = F + "test_cancellation.py::"
ACCOUNT = F + "test_deadline_accounting.py::"
WIRING = F + "test_settings_reach_their_mechanism.py::"
LOGS = F + "test_log_hygiene.py::"
SQLERR = F + "test_sql_errors.py::"
ROUTES = U + "test_routes.py::"
HTTP = U + "test_http_errors.py::"
CLASSIFY = U + "test_error_classification.py::"
RETRY = U + "test_retry_policy.py::"
LANE = U + "test_worker_lane.py::"
DB = U + "test_database.py::"
SCHEMAS = U + "test_schemas.py::"
SETTINGS = U + "test_settings.py::"
PG = F + "test_postgres.py::"
SERIES = F + "test_metric_series.py::"
ANSWERS = F + "test_error_answers.py::"
DOOR = F + "test_limits_at_the_door.py::"
GROUP = F + "test_group_commit.py::"
READ_BOUNDS = U + "test_read_lock_wait_bounds.py::"
TK = "tests/toolkit/"
CONTROL = ("tests/report/test_report_controls.py::test_each_verdict_is_breached_by_a_service_"
           "built_to_breach_it_and_met_by_the_hardened")
OVERLOAD = F + "test_overload.py::"
BATTERY = "toolkit/src/sqlite_faults/battery/test_battery.py"
LOAD = "toolkit/src/sqlite_faults/traffic.py"
RETRY_POLICY = "toolkit/src/sqlite_faults/retry.py"
PROXY = "toolkit/src/sqlite_faults/netproxy/proxy.py"
PACKET_LOSS = "toolkit/src/sqlite_faults/netproxy/faults/packet_loss.py"
INSTRUMENT = "toolkit/src/sqlite_faults/report/instrument.py"
NAIVE_VERDICT = (TK + "test_battery_verdicts.py::test_the_battery_judges_the_naive_service_for_"
                 "the_seed_reports_reasons[{}]")
CLEANUP = TK + "test_plugin_cleanup.py::test_faults_are_removed_after_a_failing_test"
# The negative control of a check every naive service passes: a service with one mistake.
FLAW_CONTROL = (TK + "test_battery_verdicts.py::test_a_check_the_naive_services_pass_fails_a_"
                "service_with_that_mistake[{}]")

_BLOCKING_HELPER = '''

def _blocking(call):
    # Waits for the worker on the event loop's own thread, as a blocking call there would
    # (after waking the workers itself: the loop cannot run its scheduled wake-up).
    call.lane._wake_workers()
    while call.state not in (_DONE, _WITHDRAWN):
        time.sleep(0.001)
    if call.error is not None:
        raise call.error
    return call.result
'''

SAFEGUARDS: tuple[Safeguard, ...] = (
    # -- deadlines -------------------------------------------------------------------------
    Safeguard("no-deadline", "deadlines", "the event loop waits for a DB call only until its "
              "deadline (504), not until the worker finishes",
              one("app/resilience.py", "    timer = (None if math.isinf(remaining)",
                  "    timer = (None if True",
                  within="await_until"),
              (SLOW + "test_slow_read_gets_504_at_the_deadline_and_is_interrupted",
               LOCKED + "test_write_held_past_its_deadline_gets_504_at_the_deadline")),
    Safeguard("deadline-from-handler", "deadlines", "the deadline counts from the request's "
              "arrival (StampArrival), not from when the handler starts",
              one("app/main.py", "    app.add_middleware(StampArrival, metrics=metrics, "
                  "admission=admission)\n", "",
                  within="create_app"),
              (ACCOUNT + "test_time_before_the_handler_runs_is_inside_the_budget",)),
    Safeguard("db-deadline-setting-ignored", "deadlines", "DB_DEADLINE_S sets the deadline "
              "of user requests",
              one("app/api.py", "request.app.state.settings.db_deadline_s,", "5.0,",
                  within="request_deadline"),
              (SLOW + "test_slow_read_gets_504_at_the_deadline_and_is_interrupted",)),
    Safeguard("readyz-deadline-setting-ignored", "deadlines", "READYZ_DEADLINE_S (not "
              "DB_DEADLINE_S) bounds /readyz and GET /",
              one("app/api.py", "request.app.state.settings.readyz_deadline_s)",
                  "request.app.state.settings.db_deadline_s)",
                  within="_ready_deadline"),
              (ACCOUNT + "test_readyz_answers_within_its_own_deadline_not_the_db_deadline",)),
    Safeguard("commit-after-deadline", "deadlines", "a transaction past its deadline is "
              "rolled back before COMMIT (the client already has its 504)",
              one("app/db.py", "committing = [c for c, _ in done if c.handle.begin_commit()]",
                  "committing = [c for c, _ in done if c.handle.begin_commit() or True]",
                  within="Database._commit_group"),
              (SLOW + "test_a_write_stalled_past_its_deadline_before_commit_is_not_committed",)),
    Safeguard("statements-after-deadline", "deadlines", "no statement starts after the "
              "deadline (checked before every statement, not only at COMMIT)",
              one("app/db.py", 'event.listen(engine, "before_cursor_execute", '
                  '_stop_if_cancelled)', "pass",
                  within="Database.__init__"),
              (CANCEL + "test_no_statement_starts_after_the_deadline_between_statements",)),
    Safeguard("queued-call-not-dropped", "deadlines", "a call whose deadline passed while "
              "it waited (even with the loop too busy to withdraw it) runs no statement: "
              "dropped when its worker reaches it, and refused by the statement hook (removed "
              "together: since the group-commit rewrite either one alone stops it)",
              (Edit("app/db.py", "handle.raise_if_cancelled()  # dropped at its deadline while "
                    "still queued", "pass",
                    within="Database._read_on"),
               Edit("app/db.py", "                if call.handle.stopping:  # its deadline "
                    "passed while it waited", "                if False:",
                    within="Database._commit_group"),
               Edit("app/db.py", "            if handle.stopping:\n                call.fail("
                    "DeadlineExceeded(\"the DB call outlived its deadline\"))\n"
                    "                continue\n            self._attach(",
                    "            self._attach(",
                    within="Database._commit_group"),
               Edit("app/db.py", 'event.listen(engine, "before_cursor_execute", '
                    '_stop_if_cancelled)', "pass",
                    within="Database.__init__")),
              (ACCOUNT + "test_a_call_whose_deadline_passed_in_the_queue_never_runs",)),
    Safeguard("checkpoint-deadline-ignored", "deadlines", "a checkpoint call has a deadline "
              "too (DB_DEADLINE_S), so shutdown and the loop are never stuck behind one",
              one("app/db.py", "        deadline = Deadline.after(self.settings.db_deadline_s)"
                  "\n        result = await self._call(",
                  "        deadline = Deadline.after(3600)\n        result = await self._call(",
                  within="Database.checkpoint"),
              (CANCEL + "test_a_cancelled_checkpoint_leaves_nothing_behind_so_a_clean_close_"
               "removes_the_wal",)),
    # -- cancellation ----------------------------------------------------------------------
    Safeguard("no-interrupt", "cancellation", "a running statement is stopped at the "
              "deadline (interrupt(), and the progress handler reading the cancel flag)",
              (Edit("app/sqlite_backend.py", "            dbapi_conn.interrupt()",
                    "            pass",
                    within="SqliteBackend.interrupt"),
               Edit("app/sqlite_backend.py", "dbapi_conn.set_progress_handler(cancelled, "
                    "PROGRESS_OPCODES)", "pass",
                    within="SqliteBackend.watch")),
              (SLOW + "test_slow_read_gets_504_at_the_deadline_and_is_interrupted",
               SLOW + "test_slow_write_is_interrupted_and_rolled_back")),
    Safeguard("no-cancel-when-caller-leaves", "cancellation", "when the awaiting task is "
              "cancelled (outer timeout, shutdown) its queued work is dropped and its "
              "running statement interrupted",
              one("app/resilience.py", "    except asyncio.CancelledError:\n"
                  "        _stop(call, interrupter)\n        raise",
                  "    except asyncio.CancelledError:\n        raise",
                  within="await_until"),
              (CANCEL + "test_a_cancelled_caller_s_queued_write_never_runs",
               CANCEL + "test_a_cancelled_caller_s_running_statement_is_interrupted")),
    Safeguard("cancel-flag-waits-for-interrupter", "cancellation", "the cancel flag is set "
              "on the event loop at once; only the interrupt waits for the interrupter thread",
              one("app/resilience.py", "    handle.mark_cancelled()  # now: no statement and "
                  "no COMMIT after this\n", "",
                  within="_cancel"),
              (ACCOUNT + "test_a_cancelled_caller_s_work_stops_even_while_the_interrupter_is_"
               "busy",)),
    Safeguard("lost-interrupt", "cancellation", "SQLite: a progress handler reads the "
              "cancel flag inside long statements, so a cancel that lands just before a "
              "statement starts (when an interrupt is a no-op) still stops it",
              one("app/sqlite_backend.py", "dbapi_conn.set_progress_handler(cancelled, "
                  "PROGRESS_OPCODES)", "pass",
                  within="SqliteBackend.watch"),
              (CANCEL + "test_a_cancel_that_lands_just_before_a_statement_starts_still_stops_"
               "it",)),
    Safeguard("late-interrupt", "cancellation", "an interrupt is sent under the handle's "
              "lock, so none is in flight or can start once the attempt has detached (it "
              "would hit the connection's next call)",
              one("app/resilience.py", "            self._cancelled = True\n"
                  "            if self._interrupt is not None:\n"
                  "                self._interrupt()",
                  "            self._cancelled = True\n            interrupt = self._interrupt\n"
                  "        if interrupt is not None:\n            interrupt()",
                  within="CallHandle.cancel"),
              (LANE + "test_detach_waits_for_an_interrupt_in_flight",)),
    Safeguard("interrupt-flag-left-set", "cancellation", "SQLite: a cancelled attempt's "
              "interrupt flag is cleared before the connection is reused or closed (else "
              "the close-time checkpoint stops and the WAL outlives a clean stop)",
              one("app/sqlite_backend.py",
                  'conn.connection.dbapi_connection.execute("SELECT 1").fetchall()', "pass",
                  within="SqliteBackend.reset_after_cancel"),
              (CANCEL + "test_a_cancelled_checkpoint_leaves_nothing_behind_so_a_clean_close_"
               "removes_the_wal",)),
    Safeguard("cancelled-connection-discarded", "cancellation", "SQLite: a cancelled "
              "attempt's connection is reset and kept, not thrown away (no reconnect storm "
              "after a burst of timeouts)",
              one("app/sqlite_backend.py", '            conn.connection.dbapi_connection.execute('
                  '"SELECT 1").fetchall()\n        except self.driver_error:\n'
                  '            conn.invalidate()',
                  '            conn.invalidate()\n        except self.driver_error:\n'
                  '            pass',
                  within="SqliteBackend.reset_after_cancel"),
              (CANCEL + "test_a_cancelled_attempt_keeps_its_connection_and_the_next_call_runs_"
               "on_it",)),
    Safeguard("pg-cancelled-connection-reused", "cancellation", "PostgreSQL: a connection "
              "sent a cancel is discarded (a late cancel would hit its next query)",
              one("app/postgres_backend.py", "the next query.\"\"\"\n        conn.invalidate()",
                  "the next query.\"\"\"\n        pass",
                  within="PostgresBackend.reset_after_cancel"),
              (SLOW + "test_a_connection_that_was_sent_a_cancel_is_not_reused",),
              backend="postgres"),
    Safeguard("pg-invalidated-connection-touched", "cancellation", "PostgreSQL: an "
              "attempt whose connection was invalidated (lost mid-call) leaves it alone, so it "
              "is not reconnected inside the failed attempt",
              one("app/db.py", "        if conn.invalidated:  # touching an invalidated one would "
                  "reconnect\n            return\n", "",
                  within="Database._detach"),
              (PG + "test_a_connection_lost_mid_call_is_retried_on_a_new_one",),
              backend="postgres"),
    Safeguard("cancel-on-event-loop", "cancellation", "interrupts are sent from the "
              "interrupter thread, not the event loop (a PostgreSQL cancel is a network round "
              "trip): a slow cancel delays neither the 504 nor other requests",
              one("app/db.py", "await await_until(call, self.interrupter)",
                  "await await_until(call)",
                  within="Database._attempt"),
              (SLOW + "test_a_slow_cancel_delays_neither_the_504_nor_the_event_loop",)),
    # -- lock waits ------------------------------------------------------------------------
    Safeguard("unbounded-lock-wait", "lock waits", "a write's wait for the lock ends once "
              "every call of its group is past its deadline or gone, lock still held",
              one("app/sqlite_backend.py", "                if abandoned():",
                  "                if False:",
                  within="SqliteBackend.begin_write"),
              (LOCKED + "test_write_held_past_its_deadline_gets_504_at_the_deadline",)),
    Safeguard("write-lock-wait-gives-up-early", "lock waits", "a write waits for the lock "
              "while a call of its group still wants its answer, not one busy wait only",
              one("app/sqlite_backend.py", "                if abandoned():",
                  "                if True:",
                  within="SqliteBackend.begin_write"),
              (LOCKED + "test_write_waits_out_a_lock_shorter_than_its_deadline",)),
    Safeguard("write-lock-one-long-busy-wait", "lock waits", "the writer waits in short busy "
              "waits, so a released lock is taken within one, not up to 100 ms late (SQLite's "
              "busy handler's growing steps)",
              one("app/sqlite_backend.py", "LOCK_POLL_MS = 20", "LOCK_POLL_MS = 60_000"),
              (LOCKED + "test_a_waiting_write_takes_the_lock_soon_after_its_release",)),
    Safeguard("unbounded-read-lock-wait", "lock waits", "a read's lock wait is bounded by the "
              "call's remaining budget (busy_timeout set before the call)",
              one("app/sqlite_backend.py", 'seat.dbapi.execute(f"PRAGMA busy_timeout = '
                  '{seat.busy_ms}")', "pass",
                  within="SqliteBackend.bound_lock_wait"),
              (READ_BOUNDS + "test_a_read_s_lock_wait_ends_just_after_its_deadline",
               READ_BOUNDS + "test_a_busy_timeout_set_for_a_long_budget_does_not_outlast_a_"
               "short_one")),
    Safeguard("lock-wait-ends-early", "lock waits", "a read's busy wait ends a little after "
              "the deadline, so the answer is the 504, not a 503 from an exhausted retry",
              one("app/sqlite_backend.py", "        low = remaining_ms + LOCK_WAIT_MARGIN_MS",
                  "        low = max(1, remaining_ms - 200)",
                  within="SqliteBackend.bound_lock_wait"),
              (READ_BOUNDS + "test_a_read_s_lock_wait_ends_just_after_its_deadline",)),
    Safeguard("unbounded-connect-wait", "lock waits", "a new connection's set-up pragmas "
              "wait no longer than the call's deadline",
              one("app/sqlite_backend.py", "deadline = self._connecting.current",
                  "deadline = None",
                  within="SqliteBackend.make_engine._configure"),
              (LOCKED + "test_exclusive_locking_mode_makes_reads_time_out_cleanly",)),
    Safeguard("busy-timeout-setting-ignored", "lock waits", "SQLITE_BUSY_TIMEOUT_MS bounds "
              "waits outside requests (start-up's schema creation)",
              one("app/sqlite_backend.py", "busy_ms = self.settings.sqlite_busy_timeout_ms",
                  "busy_ms = 0",
                  within="SqliteBackend.make_engine._configure"),
              (WIRING + "test_start_up_waits_out_a_lock_shorter_than_the_busy_timeout",)),
    Safeguard("deferred-begin", "lock waits", "writes take the write lock first (BEGIN "
              "IMMEDIATE), so a concurrent commit never fails them with BUSY_SNAPSHOT",
              one("app/sqlite_backend.py", 'BEGIN_SQL = {"writer": "BEGIN IMMEDIATE",',
                  'BEGIN_SQL = {"writer": "BEGIN",'),
              (LOCKED + "test_write_transactions_take_the_lock_first_so_a_concurrent_commit_"
               "costs_no_retry",)),
    Safeguard("pg-no-server-side-bounds", "lock waits", "PostgreSQL: statement_timeout, "
              "lock_timeout and a cancel end a query past its deadline on the server",
              (Edit("app/postgres_backend.py", 'cursor.execute(f"SET LOCAL statement_timeout'
                    ' = {remaining_ms + 25}")', "pass",
                    within="PostgresBackend.bound_lock_wait"),
               Edit("app/postgres_backend.py", 'cursor.execute(f"SET LOCAL lock_timeout = '
                    '{remaining_ms + 25}")', "pass",
                    within="PostgresBackend.bound_lock_wait"),
               Edit("app/postgres_backend.py", "            cancel()\n", "            pass\n",
                    within="PostgresBackend.interrupt")),
              (PG + "test_a_query_past_its_deadline_is_cancelled_on_the_server",),
              backend="postgres"),
    Safeguard("pg-lost-cancel-runs-on", "lock waits", "PostgreSQL: when the client's cancel "
              "is lost, the attempt's statement_timeout still ends its query (a slow statement "
              "or a lock wait) on the server at the deadline",
              one("app/postgres_backend.py", 'cursor.execute(f"SET LOCAL statement_timeout'
                  ' = {remaining_ms + 25}")', "pass",
                  within="PostgresBackend.bound_lock_wait"),
              (PG + "test_a_query_whose_cancel_is_lost_still_ends_at_its_deadline",),
              backend="postgres"),
    # -- retries ---------------------------------------------------------------------------
    Safeguard("no-retry", "retries", "transient errors are retried",
              one("app/resilience.py", "state.attempt_number >= self.max_attempts", "True",
                  within="RetryPolicy.retrying.stop"),
              (SQLERR + "test_transient_errors_below_the_budget_are_retried_exactly_that_often",)),
    Safeguard("retry-everything", "retries", "only transient errors are retried (never "
              "integrity, schema, programming or deadline errors)",
              one("app/resilience.py", "isinstance(exc, TransientStorageError)",
                  "isinstance(exc, Exception)",
                  within="RetryPolicy.retrying"),
              (SQLERR + "test_non_transient_errors_are_never_retried",
               SQLERR + "test_a_non_transient_error_on_a_retry_is_not_retried_again")),
    Safeguard("unbounded-attempts", "retries", "attempts are bounded by RETRY_MAX_ATTEMPTS",
              one("app/resilience.py", "state.attempt_number >= self.max_attempts",
                  "state.attempt_number >= 10**6",
                  within="RetryPolicy.retrying.stop"),
              (SQLERR + "test_transient_errors_past_the_budget_are_503_and_write_nothing",)),
    Safeguard("retry-past-deadline", "retries", "no retry starts whose backoff would end "
              "past the deadline",
              one("app/resilience.py", "                    or deadline.remaining() <= "
                  "state.upcoming_sleep):", "                    ):",
                  within="RetryPolicy.retrying.stop"),
              (RETRY + "test_deadline_stops_a_retry_whose_backoff_would_outlast_it",)),
    Safeguard("retry-gets-a-new-budget", "retries", "a retried attempt runs under the "
              "request's deadline, not a budget of its own (which would answer a whole budget "
              "late, or finish work for a client already answered)",
              one("app/db.py", "return await self._attempt(operation, lane, work, deadline)",
                  "return await self._attempt(operation, lane, work, "
                  "Deadline.after(self.settings.db_deadline_s))", within="Database._retry"),
              (SQLERR + "test_a_retried_attempt_runs_under_the_request_s_deadline_not_a_new_"
               "one",)),
    Safeguard("retry-at-an-expired-deadline", "retries", "the deadline's boundary: with no "
              "budget left, not even a retry without backoff starts",
              one("app/resilience.py", "deadline.remaining() <= state.upcoming_sleep",
                  "deadline.remaining() < state.upcoming_sleep",
                  within="RetryPolicy.retrying.stop"),
              (RETRY + "test_expired_deadline_stops_even_a_retry_with_no_backoff",)),
    Safeguard("backoff-uncapped", "retries", "the backoff ceiling is capped at "
              "RETRY_BACKOFF_MAX_S",
              one("app/resilience.py", "min(self.maximum, self.initial * 2 ** "
                  "(retry_state.attempt_number - 1))",
                  "self.initial * 2 ** (retry_state.attempt_number - 1)",
                  within="wait_full_jitter.__call__"),
              (WIRING + "test_backoff_settings_shape_the_waits_between_attempts",)),
    Safeguard("backoff-not-growing", "retries", "the backoff ceiling doubles per retry",
              one("app/resilience.py", "min(self.maximum, self.initial * 2 ** "
                  "(retry_state.attempt_number - 1))", "min(self.maximum, self.initial)",
                  within="wait_full_jitter.__call__"),
              (WIRING + "test_backoff_settings_shape_the_waits_between_attempts",)),
    Safeguard("backoff-global-rng", "retries", "jitter draws from the policy's seeded RNG, "
              "so a run replays from its seed",
              one("app/resilience.py", "return self.rng.uniform(0, ceiling)",
                  "return random.uniform(0, ceiling)",
                  within="wait_full_jitter.__call__"),
              (RETRY + "test_same_seed_gives_the_same_delays",)),
    Safeguard("retry-attempts-setting-ignored", "retries", "RETRY_MAX_ATTEMPTS reaches the "
              "retry policy",
              one("app/main.py", "max_attempts=settings.retry_max_attempts",
                  "max_attempts=5",
                  within="retry_policy"),
              (SQLERR + "test_transient_errors_past_the_budget_are_503_and_write_nothing",)),
    Safeguard("backoff-initial-setting-ignored", "retries", "RETRY_BACKOFF_INITIAL_S reaches "
              "the retry policy",
              one("app/main.py", "backoff_initial_s=settings.retry_backoff_initial_s",
                  "backoff_initial_s=0.01",
                  within="retry_policy"),
              (WIRING + "test_backoff_settings_shape_the_waits_between_attempts",)),
    Safeguard("backoff-max-setting-ignored", "retries", "RETRY_BACKOFF_MAX_S reaches the "
              "retry policy",
              one("app/main.py", "backoff_max_s=settings.retry_backoff_max_s",
                  "backoff_max_s=0.25",
                  within="retry_policy"),
              (WIRING + "test_backoff_settings_shape_the_waits_between_attempts",)),
    Safeguard("retries-not-counted", "retries", "every retry is counted "
              "(db_retries_total), also under concurrency",
              one("app/resilience.py", "on_retry(error)", "pass",
                  within="RetryPolicy.retrying.before_sleep"),
              (SQLERR + "test_transient_errors_below_the_budget_are_retried_exactly_that_often",)),
    # -- back-pressure and the event loop ----------------------------------------------------
    Safeguard("unbounded-queue", "back-pressure", "a full DB work queue refuses new calls "
              "at once (503 overloaded)",
              one("app/resilience.py", "if self._pending >= self.capacity:", "if False:",
                  within="WorkerLane.submit"),
              (F + "test_backpressure_and_leaks.py::test_full_queue_is_refused_at_once_and_"
               "recovers",)),
    Safeguard("capacity-freed-at-deadline", "back-pressure", "an abandoned call holds its "
              "place until its worker really finishes",
              one("app/resilience.py", "            elif call.state != _TAKEN:\n",
                  "            elif call.state not in (_TAKEN, _RUNNING):\n",
                  within="WorkerLane.withdraw"),
              (LANE + "test_capacity_is_given_back_when_work_finishes",
               LANE + "test_await_until_gives_up_at_the_deadline_and_interrupts")),
    Safeguard("queue-limit-setting-ignored", "back-pressure", "DB_QUEUE_LIMIT sizes the "
              "lanes' queues",
              one("app/db.py", "queue = settings.db_queue_limit", "queue = 64",
                  within="Database.__init__"),
              (WIRING + "test_read_workers_and_queue_limit_size_the_reader_lane",)),
    Safeguard("read-workers-setting-ignored", "back-pressure", "DB_READ_WORKERS sizes the "
              "reader lane and its pool",
              one("app/db.py", "readers = settings.db_read_workers", "readers = 4",
                  within="Database.__init__"),
              (WIRING + "test_read_workers_and_queue_limit_size_the_reader_lane",)),
    Safeguard("hash-concurrency-unbounded", "back-pressure", "PASSWORD_HASH_CONCURRENCY "
              "bounds the hashes computed at once",
              one("app/passwords.py", 'WorkerLane("hash", settings.hash_concurrency,',
                  'WorkerLane("hash", 64,',
                  within="PasswordHasher.__init__"),
              (WIRING + "test_hash_concurrency_bounds_the_hashes_computed_at_once",)),
    Safeguard("blocking-on-event-loop", "event loop", "a handler awaits its DB call without "
              "blocking the event loop",
              one("app/resilience.py",
                  "        return await call.future  # type: ignore[no-any-return]",
                  "        return _blocking(call)",
                  within="await_until"),
              (LOCKED + "test_event_loop_answers_while_db_calls_wait_on_a_lock",),
              append={"app/resilience.py": _BLOCKING_HELPER}),
    Safeguard("hash-on-event-loop", "event loop", "password hashing runs off the event loop",
              one("app/passwords.py", "        return await self._run(partial(self._hash, "
                  "password), deadline)", "        return self._hash(password)",
                  within="PasswordHasher.hash"),
              (WIRING + "test_hashing_runs_off_the_event_loop",)),
    Safeguard("checkpoint-on-writer-lane", "event loop", "checkpoints run on their own lane "
              "and connection, never in front of writes",
              (Edit("app/db.py", 'await self._call("checkpoint", self.maintenance,',
                    'await self._call("checkpoint", self.writer,',
                    within="Database.checkpoint"),
               Edit("app/db.py",
                    '        seat = self._seats["writer"][worker]\n        while calls:',
                    '        seat = self._seats["writer"][worker]\n'
                    '        if calls[0].fn == self.backend.checkpoint:\n'
                    '            return self._run_maintenance(0, calls)\n        while calls:',
                    within="Database._run_writes")),
              (WIRING + "test_checkpoints_run_beside_writes_not_in_front_of_them",)),
    # -- errors to HTTP --------------------------------------------------------------------
    Safeguard("busy-not-transient", "error mapping", "SQLITE_BUSY (any extended code) is a "
              "transient lock timeout",
              one("app/sqlite_backend.py", "        if primary == SQLITE_BUSY:",
                  "        if primary == -1:",
                  within="SqliteBackend.classify"),
              (CLASSIFY + "test_result_code_selects_the_error_class",
               CLASSIFY + "test_real_busy_from_a_second_writer")),
    Safeguard("extended-codes-unmasked", "error mapping", "errors are classified by their "
              "primary result code (extended codes masked)",
              one("app/sqlite_backend.py", "primary = code & 0xFF", "primary = code",
                  within="SqliteBackend.classify"),
              (CLASSIFY + "test_result_code_selects_the_error_class",)),
    Safeguard("interrupt-always-deadline", "error mapping", "an interrupt is a 504 only when "
              "the call was cancelled; otherwise it is a defect",
              one("app/sqlite_backend.py", "        if primary == SQLITE_INTERRUPT:\n"
                  "            if cancelled:", "        if primary == SQLITE_INTERRUPT:\n"
                  "            if True:",
                  within="SqliteBackend.classify"),
              (CLASSIFY + "test_interrupt_is_a_deadline_only_when_the_call_was_cancelled",)),
    Safeguard("schema-change-not-transient", "error mapping", "SQLITE_SCHEMA and "
              "SQLITE_LOCKED are retried",
              one("app/sqlite_backend.py", "_TRANSIENT = {SQLITE_LOCKED, SQLITE_SCHEMA}",
                  "_TRANSIENT = {SQLITE_LOCKED}"),
              (CLASSIFY + "test_result_code_selects_the_error_class",)),
    Safeguard("deadline-maps-to-503", "error mapping", "a missed deadline is 504 "
              "deadline_exceeded",
              one("app/http_errors.py", 'HttpError(504, "deadline_exceeded")',
                  'HttpError(503, "deadline_exceeded")'),
              (HTTP + "test_error_maps_to_its_status",)),
    Safeguard("busy-without-retry-after", "error mapping", "every 503 carries Retry-After",
              one("app/http_errors.py", 'HttpError(503, "storage_busy", retry_after=True)),\n'
                  "    # A transient", 'HttpError(503, "storage_busy")),\n    # A transient'),
              (HTTP + "test_every_503_tells_the_client_when_to_retry",)),
    Safeguard("integrity-is-500", "error mapping", "a constraint violation is 409, not 500",
              one("app/http_errors.py", 'HttpError(409, "conflict")',
                  'HttpError(500, "conflict")'),
              (HTTP + "test_error_maps_to_its_status",)),
    Safeguard("pg-lost-connection-not-transient", "error mapping", "PostgreSQL: a lost "
              "connection or a server shutting down is transient (retried, then 503)",
              one("app/postgres_backend.py", "if exc.connection_invalidated or state."
                  'startswith("08") or state in _SERVER_GONE:', "if False:",
                  within="PostgresBackend.classify"),
              (U + "test_postgres_backend.py::test_sqlstate_selects_the_error_class",
               U + "test_postgres_backend.py::test_a_connection_lost_mid_call_is_"
               "transient_whatever_its_error")),
    # -- log hygiene and secrets -------------------------------------------------------------
    Safeguard("log-driver-text", "log hygiene", "a 5xx is logged by class and result code "
              "only, never the driver's text (SQL)",
              one("app/http_errors.py", 'detail = getattr(exc, "error_name", None) or '
                  "type(exc.__cause__).__name__", "detail = str(exc.__cause__)",
                  within="install_error_handlers.service_error"),
              (LOGS + "test_a_real_schema_error_leaves_no_sql_or_parameters_in_logs_or_"
               "response",)),
    Safeguard("no-hide-parameters", "log hygiene", "SQLAlchemy hides bound parameters "
              "(names, hashes) in every driver error it raises",
              one("app/sqlite_backend.py", "hide_parameters=True,", "hide_parameters=False,",
                  within="SqliteBackend.make_engine"),
              (LOGS + "test_the_driver_error_kept_for_logs_quotes_sql_but_never_its_"
               "parameters",)),
    Safeguard("pg-no-hide-parameters", "log hygiene", "PostgreSQL: the same, on its engines",
              one("app/postgres_backend.py", "            pool_pre_ping=True,\n"
                  "            hide_parameters=True,",
                  "            pool_pre_ping=True,\n            hide_parameters=False,",
                  within="PostgresBackend.make_engine"),
              (LOGS + "test_the_driver_error_kept_for_logs_quotes_sql_but_never_its_"
               "parameters",), backend="postgres"),
    Safeguard("internal-error-text-public", "log hygiene", "a 500 gets a fixed message, "
              "never the error's own text",
              one("app/http_errors.py", "message = _PUBLIC_MESSAGES.get(error.status, str(exc))",
                  "message = str(exc.__cause__ or exc)",
                  within="install_error_handlers.service_error"),
              (ROUTES + "test_schema_error_is_500_without_sql_or_trace",)),
    Safeguard("unexpected-error-text-public", "log hygiene", "an unexpected exception is a "
              "bare 500",
              one("app/http_errors.py", 'return error_response(500, "internal_error", '
                  '"internal error")', 'return error_response(500, "internal_error", str(exc))',
                  within="install_error_handlers.unexpected"),
              (ROUTES + "test_unexpected_exception_is_a_bare_500",)),
    Safeguard("readyz-driver-text", "log hygiene", "/readyz names the error class only",
              one("app/api.py", "{type(exc).__name__}", "{exc.__cause__}",
                  within="readyz"),
              (LOGS + "test_readiness_failure_names_the_error_class_only",)),
    Safeguard("validation-echoes-input", "log hygiene", "a 422 never echoes what was sent "
              "(a rejected password)",
              one("app/http_errors.py", '"type": err.get("type")}',
                  '"type": err.get("type"), "input": err.get("input")}',
                  within="install_error_handlers.validation_error"),
              (HTTP + "test_validation_error_never_echoes_the_password",)),
    Safeguard("password-in-repr", "secrets", "a request body's repr never shows the password",
              one("app/schemas.py", "max_length=128, repr=False)", "max_length=128)",
                  within="UserCreate"),
              (SCHEMAS + "test_repr_and_str_never_show_the_password",)),
    Safeguard("password-stored-plain", "secrets", "only an argon2id hash is stored",
              one("app/users.py", "work = _insert_user(name, password_hash, key)",
                  "work = _insert_user(name, password, key)",
                  within="create_user"),
              (ROUTES + "test_password_is_stored_only_as_a_salted_argon2_hash",)),
    # -- idempotency and data --------------------------------------------------------------
    Safeguard("replay-ignores-password", "idempotency", "a replay under a key must carry the "
              "same password (checked against the hash)",
              one("app/users.py", "same = outcome.user.name == name and await hasher.verify(\n"
                  "            outcome.password_hash, password, deadline)",
                  "same = outcome.user.name == name",
                  within="create_user"),
              (ROUTES + "test_same_idempotency_key_with_another_body_is_422",)),
    Safeguard("key-not-stored", "idempotency", "the key is stored with the user, in the same "
              "transaction",
              one("app/users.py", '            conn.execute(_INSERT_KEY, {"key": key, '
                  '"user_id": user_id, "created_at": now})', "            pass",
                  within="_insert_user.work"),
              (ROUTES + "test_repeated_idempotency_key_returns_the_original_user",)),
    Safeguard("power-loss-create-drifts", "idempotency", "the power-loss simulation writes "
              "the rows the service's create writes (the same statements, the same schema)",
              one("app/users.py", "CREATE_STATEMENTS = (_SELECT_BY_KEY, _INSERT_USER, "
                  "_INSERT_KEY)", "CREATE_STATEMENTS = (_SELECT_BY_KEY, _INSERT_USER)"),
              (U + "test_crash_service.py::test_the_simulated_create_leaves_what_the_service_"
               "leaves",)),
    Safeguard("pg-key-race-not-relooked", "idempotency", "PostgreSQL: a create that lost a "
              "race for its key looks the key up again and replays the winner",
              one("app/users.py", "if key is None or db.serialises_writes:", "if True:",
                  within="create_user"),
              (PG + "test_two_creates_that_both_miss_the_key_make_one_user",
               PG + "test_concurrent_creates_with_one_key_make_one_user"), backend="postgres"),
    Safeguard("pg-serializable-writers", "idempotency", "PostgreSQL: writers run at READ "
              "COMMITTED, so concurrent creates of different users never fail each other",
              one("app/postgres_backend.py", 'isolation_level="READ COMMITTED"',
                  'isolation_level="SERIALIZABLE"',
                  within="PostgresBackend.make_engine"),
              (PG + "test_concurrent_keyed_creates_of_different_users_never_conflict",),
              backend="postgres"),
    Safeguard("names-not-unique", "idempotency", "names are unique (409 name_taken)",
              one("app/models.py", "String(64), unique=True)", "String(64))",
                  within="User"),
              (ROUTES + "test_duplicate_name_is_409_and_leaves_one_row",)),
    Safeguard("ids-reused", "idempotency", "an id is never handed out twice "
              "(AUTOINCREMENT)",
              one("app/models.py", '{"sqlite_autoincrement": True}',
                  '{"sqlite_autoincrement": False}',
                  within="User"),
              (DB + "test_an_id_is_never_handed_out_twice",)),
    # -- input -----------------------------------------------------------------------------
    Safeguard("control-characters-in-names", "input", "names with C0/C1 control characters "
              "are refused (422)",
              one("app/schemas.py", r'_NAME_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]+$"',
                  r'_NAME_PATTERN = r"^.+$"'),
              (SCHEMAS + "test_c1_control_characters_in_names_are_rejected",)),
    Safeguard("unknown-fields-accepted", "input", "unknown body fields are refused",
              one("app/schemas.py", 'ConfigDict(extra="forbid")', 'ConfigDict(extra="ignore")',
                  within="UserCreate"),
              (SCHEMAS + "test_extra_fields_are_forbidden",)),
    Safeguard("short-passwords", "input", "passwords have at least 8 characters",
              one("app/schemas.py", "min_length=8, max_length=128", "min_length=1, "
                  "max_length=128",
                  within="UserCreate"),
              (SCHEMAS + "test_invalid_passwords_are_rejected",)),
    Safeguard("ids-past-int64", "input", "an id past 2^63-1 is a 422, not a 500",
              one("app/api.py", "Path(gt=0, le=MAX_USER_ID,", "Path(gt=0,"),
              (ROUTES + "test_read_with_a_bad_id_is_422",)),
    Safeguard("idempotency-key-unchecked", "input", "an Idempotency-Key must be 1-255 "
              "visible ASCII characters",
              one("app/api.py", "        pattern=IDEMPOTENCY_KEY_PATTERN,\n", ""),
              (ROUTES + "test_malformed_idempotency_key_is_422",)),
    # -- SQLite set-up and start-up refusals ---------------------------------------------------
    Safeguard("no-wal", "start-up", "every connection runs in WAL",
              (Edit("app/sqlite_backend.py", '_JOURNAL_MODE = "WAL"',
                    '_JOURNAL_MODE = "DELETE"'),
               Edit("app/sqlite_backend.py",
                    'if name == "journal_mode" and str(row[0]).upper() != value:',
                    "if False:",
                    within="SqliteBackend.make_engine._configure")),
              (DB + "test_every_connection_gets_the_pragmas",)),
    Safeguard("synchronous-setting-ignored", "start-up", "SQLITE_SYNCHRONOUS reaches every "
              "connection",
              one("app/sqlite_backend.py", '("synchronous", settings.sqlite_synchronous)',
                  '("synchronous", "NORMAL")',
                  within="SqliteBackend.connection_pragmas"),
              (DB + "test_every_connection_gets_the_pragmas",)),
    Safeguard("foreign-keys-off", "start-up", "foreign keys are enforced",
              one("app/sqlite_backend.py", '("foreign_keys", "ON")',
                  '("foreign_keys", "OFF")',
                  within="SqliteBackend.connection_pragmas"),
              (DB + "test_every_connection_gets_the_pragmas",)),
    Safeguard("journal-size-limit-ignored", "start-up", "SQLITE_JOURNAL_SIZE_LIMIT_BYTES "
              "reaches every connection",
              one("app/sqlite_backend.py",
                  '("journal_size_limit", str(settings.sqlite_journal_size_limit_bytes))',
                  '("journal_size_limit", "-1")',
                  within="SqliteBackend.connection_pragmas"),
              (DB + "test_every_connection_gets_the_pragmas",)),
    Safeguard("affected-sqlite-accepted", "start-up", "start-up refuses WAL with several "
              "connections on an SQLite with the WAL-reset bug",
              one("app/sqlite_backend.py", "if connections > 1 and has_wal_reset_bug("
                  "self.version):", "if False:",
                  within="SqliteBackend.check_version"),
              (DB + "test_an_affected_sqlite_is_refused_at_start_up",)),
    Safeguard("memory-database-accepted", "start-up", "a DATABASE_URL without a file "
              "(:memory:, file: URIs) is refused",
              one("app/sqlite_backend.py", 'if not database or database == ":memory:" or '
                  'database.startswith("file:"):', "if not database:",
                  within="SqliteBackend.__init__"),
              (CLASSIFY + "test_database_url_without_a_file_is_refused",)),
    Safeguard("infinite-durations-accepted", "start-up", "durations must be finite "
              "(inf would break every deadline)",
              one("app/settings.py", "Field(gt=0, allow_inf_nan=False)]", "Field(gt=0)]"),
              (SETTINGS + "test_infinite_durations_are_rejected",)),
    Safeguard("synchronous-off-accepted", "start-up", "SQLITE_SYNCHRONOUS=OFF is refused",
              one("app/settings.py", 'Literal["NORMAL", "FULL", "EXTRA"]',
                  'Literal["OFF", "NORMAL", "FULL", "EXTRA"]',
                  within="Settings"),
              (SETTINGS + "test_synchronous_rejects_off_and_unknown_modes",)),
    # -- checkpoints -----------------------------------------------------------------------
    Safeguard("checkpoint-loop-dies", "checkpoints", "a failed checkpoint (a storage "
              "error) never ends the checkpoint loop",
              one("app/main.py", "        except ServiceError as exc:\n            log.warning(",
                  "        except ServiceError as exc:\n            raise\n"
                  "            log.warning(",
                  within="_checkpoint_loop"),
              (DB + "test_the_checkpoint_loop_outlives_a_failed_checkpoint",)),
    Safeguard("checkpoint-loop-dies-on-a-defect", "checkpoints", "an unexpected exception "
              "in a checkpoint is logged and the loop goes on",
              one("app/main.py", "        except Exception:\n            log.exception(",
                  "        except Exception:\n            raise\n            log.exception(",
                  within="_checkpoint_loop"),
              (DB + "test_the_checkpoint_loop_outlives_a_failed_checkpoint",)),
    Safeguard("autocheckpoint-left-on", "checkpoints", "with the service's own checkpoints, "
              "SQLite's automatic checkpoint (inside some request's COMMIT) is off",
              one("app/sqlite_backend.py", '("wal_autocheckpoint", "0")',
                  '("wal_autocheckpoint", "1000")',
                  within="SqliteBackend.connection_pragmas"),
              (DB + "test_sqlite_s_own_checkpoint_is_off_only_while_the_service_checkpoints",)),
    Safeguard("no-truncate-past-limit", "checkpoints", "a WAL past the journal size limit is "
              "truncated",
              one("app/sqlite_backend.py", 'mode = "TRUNCATE" if self.wal_bytes() > limit '
                  'else "PASSIVE"', 'mode = "PASSIVE"',
                  within="SqliteBackend.checkpoint"),
              (DB + "test_checkpoint_truncates_a_wal_past_the_limit_and_reports_lag",)),
    Safeguard("truncate-below-limit", "checkpoints", "a WAL up to the journal size limit "
              "gets a PASSIVE checkpoint (never waits for readers or writers); TRUNCATE only "
              "past it",
              one("app/sqlite_backend.py", 'mode = "TRUNCATE" if self.wal_bytes() > limit ',
                  'mode = "TRUNCATE" if self.wal_bytes() >= limit ',
                  within="SqliteBackend.checkpoint"),
              (DB + "test_checkpoint_is_passive_up_to_the_limit_and_truncates_only_past_it",)),
    Safeguard("lane-workers-gauge-wrong", "metrics", "db_lane_workers is the lane's real "
              "worker count (the alert compares db_inflight with it)",
              one("app/metrics.py", "self.db_lane_workers.labels(lane).set(workers)",
                  "self.db_lane_workers.labels(lane).set(workers + 1)",
                  within="Metrics.watch_lane"),
              (WIRING + "test_read_workers_and_queue_limit_size_the_reader_lane",)),
    Safeguard("lane-queue-limit-gauge-wrong", "metrics", "db_lane_queue_limit is how many "
              "calls really wait before a 503",
              one("app/metrics.py", "self.db_lane_queue_limit.labels(lane).set(queue_limit)",
                  "self.db_lane_queue_limit.labels(lane).set(0)", within="Metrics.watch_lane"),
              (WIRING + "test_read_workers_and_queue_limit_size_the_reader_lane",)),
    Safeguard("hash-slots-gauge-wrong", "metrics", "password_hash_slots is how many hashes "
              "really run at once",
              one("app/metrics.py", "self.password_hash_slots.set(slots)",
                  "self.password_hash_slots.set(slots + 1)",
                  within="Metrics.watch_password_hashing"),
              (WIRING + "test_hash_concurrency_bounds_the_hashes_computed_at_once",)),
    Safeguard("checkpoint-interval-gauge-wrong", "metrics", "sqlite_checkpoint_interval_seconds "
              "is the configured interval",
              one("app/metrics.py",
                  "self.checkpoint_interval_seconds.set(checkpoint_interval_s)",
                  "self.checkpoint_interval_seconds.set(0)", within="Metrics.watch_wal"),
              (SERIES + "test_the_wal_limits_the_alerts_compare_against_are_the_configured_"
               "ones",)),
    Safeguard("wal-size-of-missing-file", "metrics", "sqlite_wal_bytes reads 0 while there "
              "is no -wal file (after a clean close), instead of failing /metrics",
              one("app/sqlite_backend.py", "        except FileNotFoundError:\n            "
                  "return 0", "        except ZeroDivisionError:\n            return 0",
                  within="SqliteBackend.wal_bytes"),
              (DB + "test_wal_size_of_a_database_with_no_wal_file_is_zero",)),
    Safeguard("truncate-waits-for-readers", "checkpoints", "a TRUNCATE checkpoint never "
              "waits for a pinned reader while holding the WAL write lock",
              one("app/sqlite_backend.py", '            dbapi_conn.execute("PRAGMA '
                  'busy_timeout = 0")', "            pass",
                  within="SqliteBackend.checkpoint"),
              (D + "test_checkpoint_starvation.py::test_writes_go_on_while_a_reader_pins_a_"
               "snapshot",
               DB + "test_a_truncate_checkpoint_gives_up_at_once_on_a_pinned_reader")),
    # -- resources, start-up and shutdown ----------------------------------------------------
    Safeguard("failed-start-leaks-threads", "resources", "a start-up that fails after the "
              "lanes exist (the schema cannot be made) stops their threads",
              one("app/db.py", "        except BaseException:\n            db.close()\n",
                  "        except BaseException:\n",
                  within="Database.open"),
              (DB + "test_a_failed_start_up_leaves_no_thread_behind",)),
    Safeguard("cold-pools", "resources", "every pooled connection is opened at start-up, so "
              "no request pays for (or waits on a lock in) a connection's set-up",
              one("app/db.py", "            db._open_seats()\n", "",
                  within="Database.open"),
              (DB + "test_no_request_opens_a_connection",)),
    Safeguard("interrupter-started-late", "resources", "the interrupter thread starts with "
              "the service, so a burst of timeouts adds no thread",
              one("app/db.py", "        self.interrupter.submit(lambda: None).result()\n", "",
                  within="Database.__init__"),
              (F + "test_backpressure_and_leaks.py::test_burst_of_timeouts_and_failures_leaves_"
               "nothing_behind",)),
    Safeguard("shutdown-keeps-database-open", "resources", "shutdown closes the database "
              "(lanes and connections)",
              one("app/main.py", "                    await checkpoints\n            db.close()",
                  "                    await checkpoints\n            pass",
                  within="create_app.lifespan"),
              (DB + "test_lifespan_runs_checkpoints_and_closes_the_database",)),
    Safeguard("shutdown-runs-queued-calls", "resources", "closing the service drops calls "
              "still queued on a lane instead of starting them",
              one("app/resilience.py", "            dropped = list(self._queue)\n"
                  "            self._queue.clear()\n", "            dropped = []\n",
                  within="WorkerLane.shutdown"),
              (LANE + "test_shutdown_drops_queued_calls_and_lets_the_running_one_finish",)),
    Safeguard("connect-error-unclassified", "error mapping", "a driver error while the pool "
              "opens a connection (before any statement) is classified like a statement's "
              "(SQLITE_CANTOPEN: 503, not 500)",
              one("app/db.py", "        except DBAPIError as exc:  # a new connection's set-up "
                  "failed", "        except ZeroDivisionError as exc:  # a new connection's "
                  "set-up failed",
                  within="Database._connect"),
              (ANSWERS + "test_a_new_connection_that_cannot_open_the_database_gets_503_not_"
               "500",)),
    Safeguard("cross-thread-connections", "resources", "pooled connections may be used by "
              "the worker threads (opened on the main thread at start-up)",
              one("app/sqlite_backend.py", '{"check_same_thread": False}',
                  '{"check_same_thread": True}',
                  within="SqliteBackend.make_engine"),
              (ROUTES + "test_create_then_read_a_user",)),
    Safeguard("no-data-folder", "start-up", "the database's folder is created on first run",
              one("app/sqlite_backend.py", "        self.path.parent.mkdir(parents=True, "
                  "exist_ok=True)\n", "",
                  within="SqliteBackend.make_engine"),
              (DB + "test_the_database_folder_is_created_on_first_run",)),
    # -- limits at the door --------------------------------------------------------------
    Safeguard("body-limit-not-installed", "limits", "request bodies are bounded "
              "(LimitRequestBody in the app)",
              one("app/main.py", "    app.add_middleware(LimitRequestBody, max_bytes=settings."
                  "http_max_body_bytes,\n                       timeout_s=settings."
                  "http_body_timeout_s)\n", "",
                  within="create_app"),
              (DOOR + "test_a_chunked_body_is_refused_once_it_passes_the_bound",)),
    Safeguard("declared-body-read-anyway", "limits", "a declared Content-Length past the "
              "bound is refused (413) before the body is read",
              one("app/request_limits.py", "if value.isdigit() and int(value) > self.max_bytes:",
                  "if False:",
                  within="LimitRequestBody.__call__"),
              (DOOR + "test_a_declared_oversized_body_is_refused_before_it_is_sent",)),
    Safeguard("chunked-body-uncounted", "limits", "a body without Content-Length is counted "
              "as it arrives and refused past the bound",
              one("app/request_limits.py", "                if received > self.max_bytes:",
                  "                if False:",
                  within="LimitRequestBody.__call__.limited_receive"),
              (DOOR + "test_a_chunked_body_is_refused_once_it_passes_the_bound",)),
    Safeguard("slow-body-unbounded", "limits", "a body must arrive within "
              "HTTP_BODY_TIMEOUT_S (408)",
              one("app/request_limits.py", "async with asyncio.timeout_at(give_up_at):",
                  "async with asyncio.timeout_at(None):",
                  within="LimitRequestBody.__call__.limited_receive"),
              (DOOR + "test_a_body_that_trickles_in_is_answered_408",)),
    Safeguard("body-time-per-read", "limits", "HTTP_BODY_TIMEOUT_S bounds the whole body, "
              "not each read (a client sending a byte at a time would hold a task forever)",
              one("app/request_limits.py", "async with asyncio.timeout_at(give_up_at):",
                  "async with asyncio.timeout(self.timeout_s):",
                  within="LimitRequestBody.__call__.limited_receive"),
              (DOOR + "test_a_body_that_trickles_in_steadily_is_bounded_as_a_whole",)),
    Safeguard("mid-body-refusal-keeps-connection", "limits", "a body refused while it is read "
              "says Connection: close and the connection is closed (its rest is never read)",
              one("app/request_limits.py",
                  'super().__init__(413, _too_large(max_bytes), headers={"Connection": "close"})',
                  "super().__init__(413, _too_large(max_bytes))",
                  within="RequestTooLarge.__init__"),
              (DOOR + "test_a_chunked_body_is_refused_once_it_passes_the_bound",)),
    Safeguard("second-head-unbounded", "limits", "the head of a second request on a kept-alive "
              "connection is bounded in time like the first",
              one("app/serve.py", "        if self._head_timer is None:\n"
                  "            self._arm_head_timer()\n", "",
                  within="GuardedHttpTools.on_message_begin"),
              (DOOR + "test_the_limits_hold_for_a_second_request_on_a_kept_alive_connection"
               "[unfinished-head]",)),
    Safeguard("head-size-unbounded", "limits", "a request head past HTTP_MAX_HEADER_BYTES "
              "gets 431 (httptools alone reads any size)",
              one("app/serve.py", "        if self._head_bytes > self.max_head_bytes:",
                  "        if False:",
                  within="GuardedHttpTools._count"),
              (DOOR + "test_an_oversized_request_head_gets_431",)),
    Safeguard("slow-head-unbounded", "limits", "a client that sends no head, or half of "
              "one, is answered 408 and closed after HTTP_HEADER_TIMEOUT_S",
              one("app/serve.py", "        self._head_timer = self.loop.call_later("
                  "self.head_timeout_s, self._head_timed_out)",
                  "        self._head_timer = None",
                  within="GuardedHttpTools._arm_head_timer"),
              (DOOR + "test_a_client_that_never_finishes_its_head_is_answered_408_and_closed",)),
    Safeguard("keep-alive-setting-ignored", "limits", "HTTP_KEEP_ALIVE_S closes idle "
              "keep-alive connections",
              one("app/serve.py", '"timeout_keep_alive": settings.http_keep_alive_s,',
                  '"timeout_keep_alive": 3600,',
                  within="uvicorn_options"),
              (DOOR + "test_an_idle_keep_alive_connection_is_closed",)),
    Safeguard("concurrency-unlimited", "limits", "HTTP_LIMIT_CONCURRENCY caps connections "
              "and requests at once (503 past it)",
              one("app/serve.py", '"limit_concurrency": settings.http_limit_concurrency,',
                  '"limit_concurrency": None,',
                  within="uvicorn_options"),
              (DOOR + "test_connections_past_the_concurrency_limit_get_503_at_once",)),
    Safeguard("graceful-shutdown-cuts-in-flight", "limits", "on SIGTERM, requests in "
              "flight finish (HTTP_GRACEFUL_SHUTDOWN_S) before the server exits",
              one("app/serve.py", '"timeout_graceful_shutdown": settings.graceful_shutdown_s,',
                  '"timeout_graceful_shutdown": 0.001,',
                  within="uvicorn_options"),
              (D + "test_graceful_restart.py::test_a_request_in_flight_at_sigterm_gets_its_"
               "answer_and_its_commit",)),
    Safeguard("graceful-default-too-short", "limits", "unset, the graceful window is "
              "DB_DEADLINE_S + 5 s: a request in flight at SIGTERM reaches its own deadline "
              "at the settings production runs with",
              one("app/settings.py", "return self.db_deadline_s + 5.0", "return 0.5",
                  within="Settings.graceful_shutdown_s"),
              (D + "test_graceful_restart.py::test_a_request_in_flight_at_sigterm_gets_its_"
               "answer_and_its_commit",)),
    # -- batches and group commit ------------------------------------------------------------
    Safeguard("group-savepoint-not-undone", "group commit", "a failed call of a group is "
              "rolled back to its own savepoint; the group's other calls commit in the same "
              "transaction and nothing runs twice",
              one("app/db.py", "            if not (savepoints and self._undo_savepoint(seat)):",
                  "            if True:",
                  within="Database._commit_group"),
              (GROUP + "test_a_duplicate_name_fails_only_its_own_request_in_one_transaction",)),
    Safeguard("group-half-done-call-committed", "group commit", "a call of a group that "
              "fails after its first statement succeeded leaves nothing of it: its savepoint "
              "takes the first statement back too",
              one("app/db.py", "            seat.dbapi.execute(_ROLLBACK_TO)\n"
                  "            seat.dbapi.execute(_RELEASE)\n",
                  "            seat.dbapi.execute(_RELEASE)\n",
                  within="Database._undo_savepoint"),
              (GROUP + "test_a_call_that_fails_after_its_first_statement_leaves_nothing_of_"
               "it",)),
    Safeguard("group-gives-up-at-earliest-deadline", "group commit", "a group waits for the "
              "write lock while any of its calls still has time: a short call's 504 does not "
              "fail a long call of the same group",
              one("app/db.py", "lambda: all(call.handle.stopping for call in live))",
                  "lambda: any(call.handle.stopping for call in live))",
                  within="Database._commit_group"),
              (GROUP + "test_a_group_waits_for_the_lock_while_any_of_its_calls_still_can",)),
    Safeguard("group-rerun-dropped", "group commit", "when one call's interrupted INSERT "
              "ends the group's transaction, the calls whose work it held run again",
              one("app/db.py", "                return [c for c, _ in done] + live[index + 1:]",
                  "                return []",
                  within="Database._commit_group"),
              (GROUP + "test_an_interrupted_insert_runs_the_rest_of_its_group_again",)),
    Safeguard("group-ack-before-commit", "group commit", "no call of a group is acknowledged "
              "before the COMMIT that holds it: a failed COMMIT fails them all",
              one("app/db.py", "            self._fail_all(seat, [c for c, _ in done], exc)",
                  "            self._fail_all(seat, [], exc)",
                  within="Database._commit_group"),
              (GROUP + "test_a_failed_commit_fails_every_call_of_its_group",)),
    Safeguard("group-key-lookup-outside-transaction", "group commit", "idempotency keys "
              "stay exact within a group: each call's key lookup runs in the group's "
              "transaction, after the earlier calls' inserts",
              one("app/users.py", '            earlier = conn.execute(_SELECT_BY_KEY, {"key": key})'
                  '.first()', "            earlier = None",
                  within="_insert_user.work"),
              (GROUP + "test_two_creates_with_one_key_in_one_group_make_one_user",
               ROUTES + "test_repeated_idempotency_key_returns_the_original_user")),
    Safeguard("busy-timeout-kept-too-long", "lock waits", "a busy timeout already set on a "
              "connection is kept only while it ends the wait just past this call's "
              "deadline: one set for a long budget never outlasts a short one",
              one("app/sqlite_backend.py",
                  "        if low <= seat.busy_ms <= low + LOCK_WAIT_SLACK_MS:",
                  "        if low <= seat.busy_ms:",
                  within="SqliteBackend.bound_lock_wait"),
              (READ_BOUNDS + "test_a_busy_timeout_set_for_a_long_budget_does_not_outlast_a_"
               "short_one",)),
    Safeguard("lock-wait-taken-for-call-cost", "back-pressure", "a batch's wait for another "
              "process's lock is left out of the lane's cost per call (else the calls queued "
              "behind one lock pulse are refused as seconds of work)",
              one("app/resilience.py", "time.monotonic() - began - self._lock_waited_s[worker])",
                  "time.monotonic() - began)",
                  within="WorkerLane._work"),
              (LANE + "test_a_lock_wait_counts_while_it_lasts_not_as_the_cost_of_the_calls",)),
    Safeguard("lock-wait-under-way-ignored", "back-pressure", "while every worker waits for "
              "a lock, the expected wait counts that wait as it lasts",
              one("app/resilience.py", "                + self.lock_wait_ahead())",
                  "                )",
                  within="WorkerLane.wait_for"),
              (LANE + "test_a_lock_wait_counts_while_it_lasts_not_as_the_cost_of_the_calls",)),
    Safeguard("taken-call-not-withdrawn", "back-pressure", "a call taken into a worker's "
              "batch but not started is withdrawn at its deadline: it never runs and its "
              "place is given back at once",
              one("app/resilience.py", "            elif call.state != _TAKEN:\n",
                  "            elif True:\n",
                  within="WorkerLane.withdraw"),
              (LANE + "test_a_call_withdrawn_from_a_taken_batch_never_runs_and_frees_its_"
               "capacity",)),
    # -- metrics ---------------------------------------------------------------------------
    Safeguard("timeouts-not-counted", "metrics", "every 504 is counted (db_timeouts_total)",
              one("app/db.py", "                self.metrics.db_timeouts.labels(operation)"
                  ".inc()\n", "                pass\n",
                  within="Database._call"),
              (SLOW + "test_slow_read_gets_504_at_the_deadline_and_is_interrupted",)),
    Safeguard("lock-timeouts-not-counted", "metrics", "every busy wait that ended without "
              "the lock is counted (db_lock_timeouts_total)",
              one("app/db.py", "            self.metrics.db_lock_timeouts.labels(operation)"
                  ".inc()\n", "            pass\n",
                  within="Database._count_transient"),
              (SQLERR + "test_transient_errors_below_the_budget_are_retried_exactly_that_often",)),
    Safeguard("lane-gauges-frozen", "metrics", "db_queue_depth and db_inflight follow the "
              "lanes",
              one("app/db.py", '_reading(lane, "queued"), _reading(lane, "running"))',
                  "lambda: 0, lambda: 0)",
                  within="Database.__init__"),
              (WIRING + "test_read_workers_and_queue_limit_size_the_reader_lane",)),
    Safeguard("alerted-metric-renamed", "metrics", "every metric ops/alerts.yml names is "
              "exported (a renamed metric breaks a test, not an alert)",
              one("app/metrics.py", '"db_lane_workers", "Worker threads',
                  '"db_lane_threads", "Worker threads',
                  within="Metrics.__init__"),
              (U + "test_alert_rules.py::test_every_metric_a_rule_names_is_exported",)),
    Safeguard("transient-error-unlabelled", "metrics", "db_transient_errors_total names the "
              "result code (error=SQLITE_BUSY, ...), not the exception class",
              one("app/db.py", "labels(operation, _error_name(exc))",
                  "labels(operation, type(exc).__name__)",
                  within="Database._count_transient"),
              (SERIES + "test_a_transient_error_is_counted_under_its_result_code",)),
    Safeguard("failed-call-outcome-lost", "metrics", "a call that ends in a defect or is "
              "cancelled is counted with outcome=error (not dropped, not ok)",
              one("app/db.py", '        outcome = "error"\n        retries = 0',
                  '        outcome = "ok"\n        retries = 0',
                  within="Database._call"),
              (SERIES + "test_a_defect_and_a_cancelled_call_count_under_the_error_outcome",)),
    Safeguard("call-duration-unobserved", "metrics", "db_call_duration_seconds observes "
              "every call under its operation and outcome",
              one("app/db.py", "            seconds.observe(time.monotonic() - started)",
                  '            self._series(operation, "ok")[1].observe(0.0)',
                  within="Database._call"),
              (SERIES + "test_each_call_is_counted_once_under_its_operation_and_outcome",)),
    Safeguard("lane-label-wrong", "metrics", "the lane gauges carry the lane's name "
              "(writer, reader, maintenance)",
              one("app/db.py", 'WorkerLane("maintenance", 1, 0, run_batch=',
                  'WorkerLane("checkpoint", 1, 0, run_batch=',
                  within="Database.__init__"),
              (SERIES + "test_lane_gauges_name_the_lane_that_is_busy",)),
    Safeguard("checkpoint-error-unclassified", "metrics", "a driver error from a checkpoint "
              "(raw driver connection, outside SQLAlchemy) is classified like any other "
              "(503 unavailable for an I/O error, counted under its outcome)",
              one("app/db.py", "        except self.backend.driver_error as exc:\n"
                  "            # Raised by the driver directly",
                  "        except ZeroDivisionError as exc:\n"
                  "            # Raised by the driver directly",
                  within="Database._maintain_on"),
              (SERIES + "test_a_driver_error_in_a_checkpoint_is_classified_and_counted",)),
    # -- answers ---------------------------------------------------------------------------
    Safeguard("deadline-message-vague", "error mapping", "a 504 says the DB call outlived "
              "its deadline (README's error table), with no Retry-After",
              one("app/resilience.py", '    call.future.set_exception(DeadlineExceeded('
                  '"the DB call outlived its deadline"))',
                  '    call.future.set_exception(DeadlineExceeded("timeout"))',
                  within="_expire"),
              (ANSWERS + "test_a_deadline_answer_says_so_without_retry_after",)),
    Safeguard("busy-message-vague", "error mapping", "a 503 storage_busy says the retry "
              "budget ran out",
              one("app/db.py", '"transient database errors outlasted the retry budget"',
                  '"busy"',
                  within="Database._call"),
              (ANSWERS + "test_a_driver_error_gets_its_code_message_and_one_log_line",)),
    Safeguard("queue-full-message-vague", "error mapping", "a 503 overloaded names the lane "
              "whose queue is full and its capacity",
              one("app/resilience.py", 'f"the {self.name} queue is full ({self.capacity} calls '
                  'pending)"', '"overloaded"',
                  within="WorkerLane.submit"),
              (ANSWERS + "test_a_full_queue_is_refused_at_once_naming_the_lane",)),
    Safeguard("5xx-log-without-result-code", "log hygiene", "a 5xx's log line names the driver's "
              "result code (SQLITE_BUSY, ...), so an operator sees which failure it was",
              one("app/http_errors.py", 'detail = getattr(exc, "error_name", None) or '
                  'type(exc.__cause__).__name__', 'detail = type(exc.__cause__).__name__',
                  within="install_error_handlers.service_error"),
              (ANSWERS + "test_a_driver_error_gets_its_code_message_and_one_log_line",)),
    Safeguard("root-fails-with-the-database", "error mapping", "GET / answers 200 with "
              "database \"unavailable\" when the database does not answer in time",
              one("app/api.py", "    except ServiceError:\n        database", "    except "
                  "QueueFull:\n        database",
                  within="service_info"),
              (ACCOUNT + "test_readyz_answers_within_its_own_deadline_not_the_db_deadline",),
              append={"app/api.py": "\nfrom .errors import QueueFull  # noqa: E402\n"}),
    Safeguard("readyz-without-retry-after", "error mapping", "/readyz's 503 carries "
              "Retry-After",
              one("app/api.py", '            headers={"Retry-After": str(settings.retry_after_s)'
                  '},\n', "",
                  within="readyz"),
              (ACCOUNT + "test_readyz_answers_within_its_own_deadline_not_the_db_deadline",)),
    Safeguard("disk-full-is-500", "error mapping", "disk full is 503 storage_unavailable "
              "(not a defect)",
              one("app/sqlite_backend.py", "SQLITE_IOERR, SQLITE_FULL, SQLITE_CANTOPEN",
                  "SQLITE_IOERR, SQLITE_CANTOPEN"),
              (CLASSIFY + "test_result_code_selects_the_error_class",)),
    Safeguard("routing-errors-not-json", "error mapping", "unknown routes and methods get "
              "the JSON error shape (404 not_found, 405 method_not_allowed)",
              one("app/http_errors.py", '{404: "not_found", 405: "method_not_allowed", 408: '
                  '"request_timeout",', '{408: "request_timeout",',
                  within="install_error_handlers.http_exception"),
              (ROUTES + "test_unknown_route_and_method_are_json_errors",)),
    Safeguard("name-taken-is-generic", "error mapping", "a duplicate name is 409 name_taken",
              one("app/users.py", '            raise NameTaken(f"a user named {name!r} '
                  'already exists") from exc', "            raise",
                  within="create_user"),
              (ROUTES + "test_duplicate_name_is_409_and_leaves_one_row",)),
    Safeguard("wrong-password-replay-is-500", "error mapping", "a replay with a wrong "
              "password is 422, not an argon2 exception (500)",
              one("app/passwords.py", "        except (VerificationError, InvalidHashError):",
                  "        except InvalidHashError:",
                  within="PasswordHasher._verify"),
              (ROUTES + "test_same_idempotency_key_with_another_body_is_422",)),
    Safeguard("long-names", "input", "names have at most 64 characters",
              one("app/schemas.py", "min_length=1, max_length=64,", "min_length=1,",
                  within="UserCreate"),
              (SCHEMAS + "test_invalid_names_are_rejected",)),
    Safeguard("backoff-order-unchecked", "start-up", "RETRY_BACKOFF_MAX_S below "
              "RETRY_BACKOFF_INITIAL_S is refused",
              one("app/settings.py", "if self.retry_backoff_max_s < self.retry_backoff_initial_s:",
                  "if False:",
                  within="Settings._check_consistency"),
              (SETTINGS + "test_backoff_max_below_initial_is_rejected",)),
    Safeguard("pg-start-up-hangs", "lock waits", "PostgreSQL: start-up against a server "
              "that accepts and never answers fails in bounded time",
              one("app/postgres_backend.py", 'connect_args={"connect_timeout": _connect_timeout('
                  '\n                                   self.settings.db_deadline_s)}',
                  "connect_args={}",
                  within="PostgresBackend.check_version"),
              (U + "test_postgres_backend.py::test_start_up_against_a_silent_server_fails_in_"
               "bounded_time",)),
    Safeguard("hash-cost-not-wired", "secrets", "PASSWORD_HASH_TIME_COST, _MEMORY_KIB and "
              "_PARALLELISM reach argon2 (a hash made at a test's cheap cost in production "
              "would be cheap to crack)",
              one("app/passwords.py",
                  "time_cost=settings.password_hash_time_cost,\n"
                  "            memory_cost=settings.password_hash_memory_kib,",
                  "time_cost=1,\n            memory_cost=8,", within="PasswordHasher.__init__"),
              (F + "test_production_settings.py::test_the_hash_is_computed_at_the_default_"
               "cost",)),
    Safeguard("pg-url-password-logged", "log hygiene", "PostgreSQL: the start-up line shows "
              "the database URL with its password hidden",
              one("app/postgres_backend.py", "self.url.render_as_string(hide_password=True)",
                  "self.url.render_as_string(hide_password=False)",
                  within="PostgresBackend.check_version"),
              (F + "test_production_settings.py::test_start_up_says_what_runs_and_never_a_"
               "secret",), backend="postgres"),
    Safeguard("pg-connect-unbounded", "lock waits", "PostgreSQL: a connection opened for a "
              "call waits no longer than the call's budget (connect_timeout)",
              one("app/postgres_backend.py", '            cparams["connect_timeout"] = '
                  "_connect_timeout(budget)", "            pass",
                  within="PostgresBackend.make_engine._connect_within_deadline"),
              (U + "test_postgres_backend.py::test_a_connection_opened_for_a_call_waits_no_"
               "longer_than_its_budget",)),
    Safeguard("affected-sqlite-refused-even-when-allowed", "start-up",
              "SQLITE_ALLOW_AFFECTED_VERSION=true lets an affected SQLite run (with a warning)",
              one("app/sqlite_backend.py", "            if not self.settings.sqlite_allow_"
                  "affected_version:", "            if True:",
                  within="SqliteBackend.check_version"),
              (DB + "test_an_affected_sqlite_runs_when_explicitly_allowed",)),
    Safeguard("driver-setting-ignored", "start-up", "SQLITE_DRIVER selects the driver "
              "(and so the SQLite library the version gate judges)",
              one("app/sqlite_backend.py", '"pysqlite3.dbapi2" if name == "pysqlite3" else '
                  '"sqlite3"', '"pysqlite3.dbapi2"',
                  within="load_driver"),
              (DB + "test_an_affected_sqlite_is_refused_at_start_up",)),

    # Overload (app/admission.py, app/serve.py): every answer by its deadline at any load,
    # and no work for clients who have gone.
    Safeguard("hash-without-deadline", "overload", "a password hash waits under the "
              "request's deadline and is never computed past it",
              one("app/passwords.py", "self._lane.submit(work, CallHandle(deadline))",
                  "self._lane.submit(work)",
                  within="PasswordHasher._run"),
              (OVERLOAD + "test_a_hash_queued_past_its_deadline_is_never_computed",)),
    Safeguard("hash-lane-starts-late-calls", "overload", "the hash lane's worker skips a call "
              "already past its deadline (the loop's timer may be late)",
              one("app/passwords.py", "skip_late=True,", "skip_late=False,",
                  within="PasswordHasher.__init__"),
              (OVERLOAD + "test_a_late_call_is_skipped_by_the_worker_when_the_loop_is_too_"
               "busy_to_withdraw_it",)),
    Safeguard("client-gone-ignored", "overload", "queued work of a client who disconnected "
              "is withdrawn, never started",
              one("app/resilience.py", "        gone.add_done_callback(on_gone)",
                  "        pass",
                  within="await_until"),
              (OVERLOAD + "test_a_queued_call_whose_client_went_away_is_never_started",
               OVERLOAD + "test_a_create_whose_client_disconnected_while_queued_is_never_"
               "started")),
    Safeguard("disconnect-not-signalled", "overload", "the protocol tells a request's "
              "handler when its connection is lost",
              one("app/serve.py", "                gone.set_result(None)",
                  "                pass",
                  within="GuardedHttpTools.connection_lost"),
              (OVERLOAD + "test_a_create_whose_client_disconnected_while_queued_is_never_"
               "started",)),
    Safeguard("deadline-from-asgi-call", "overload", "the deadline counts from the request's "
              "first byte as the server reads it, not from the ASGI call",
              one("app/serve.py", '        state["arrived"] = self._first_byte_at\n', "",
                  within="GuardedHttpTools.on_headers_complete"),
              (OVERLOAD + "test_time_before_the_handler_counts_against_the_deadline",)),
    Safeguard("refusal-holds-every-connection", "overload", "a refused connection is held "
              "only while refusals come fast: the next request on it (a pooled client's, for "
              "any route) is not delayed by a lone refusal",
              one("app/serve.py", "        if not gate.holds_after_refusal():\n"
                  "            return\n", "",
                  within="GuardedHttpTools._refuse"),
              (OVERLOAD + "test_a_request_behind_a_lone_refusal_on_its_connection_is_not_held",)),
    Safeguard("refusal-never-held", "overload", "past the unheld rate, refused connections "
              "are held (a client that asks again at once costs no more than the rate)",
              one("app/admission.py", "            return False\n        return True\n",
                  "            return False\n        return False\n",
                  within="Admission.holds_after_refusal"),
              (U + "test_admission.py::test_a_refused_connection_is_held_only_once_refusals_"
               "come_fast",)),
    Safeguard("gc-walks-start-up-objects", "overload", "the served process freezes what "
              "start-up made, so a full collection does not stop the event loop for 70 ms",
              one("app/serve.py", "        gc.freeze()\n", "        pass\n",
                  within="FrozenAtStartServer.startup"),
              (U + "test_serve_gc.py::test_the_server_freezes_every_object_alive_once_it_has_"
               "started",)),
    Safeguard("no-admission", "overload", "requests that cannot start in time are refused at "
              "the door, before their body is read",
              one("app/main.py", 'yield {"admission": admission}', "yield {}",
                  within="create_app.lifespan"),
              (OVERLOAD + "test_a_refusal_is_sent_before_the_body_is_read",
               OVERLOAD + "test_a_burst_far_past_capacity_is_answered_by_the_deadline")),
    Safeguard("admission-blind-to-a-burst", "overload", "the door counts the requests it "
              "admitted that have not reached their lane yet",
              one("app/admission.py",
                  "lane.wait_for(max(lane.queued, self.admitted - lane.workers))",
                  "lane.wait_for(lane.queued)",
                  within="Route.expected_wait"),
              # The unit test kills it every time; the burst on a real server only when the
              # burst is read within one turn of the loop, which the machine decides.
              (U + "test_admission.py::test_admitted_requests_count_before_they_reach_the_lane",
               OVERLOAD + "test_a_burst_far_past_capacity_is_answered_by_the_deadline")),
    Safeguard("connection-limit-refused-by-uvicorn", "overload", "past HTTP_LIMIT_CONCURRENCY "
              "the protocol refuses at once (JSON, no task) and sheds the connection",
              one("app/serve.py", "if gate is not None and in_order and self._past_"
                  "connection_limit():", "if False:",
                  within="GuardedHttpTools.on_headers_complete"),
              (DOOR + "test_connections_past_the_concurrency_limit_get_503_at_once",)),
    Safeguard("admission-blind-to-the-loop", "overload", "the door counts the event loop's "
              "recent delay before the app (the loop as the bottleneck)",
              one("app/admission.py", "if spent + self.door_delay_s + route.expected_wait()",
                  "if spent + route.expected_wait()",
                  within="Admission.admits"),
              (U + "test_admission.py::test_a_loop_that_is_behind_makes_the_door_refuse",)),
    Safeguard("refused-large-body-read", "overload", "a refused request announcing a large "
              "body gets its connection closed rather than read",
              one("app/serve.py", "return not value.isdigit() or int(value) > "
                  "self.max_body_bytes", "return False",
                  within="GuardedHttpTools._body_to_skip_is_large"),
              (OVERLOAD + "test_a_refused_request_announcing_a_large_body_closes_the_"
               "connection",)),

    # The fault toolkit's own safeguards: a fault suite is worth what it catches, so each
    # check of the battery and each fixture's clean-up has a mutant of its own.
    Safeguard("fixture-error-left-armed", "fault toolkit", "inject_sql_error removes its "
              "fault when the test ends, also when it failed",
              one("toolkit/src/sqlite_faults/plugin.py",
                  "return stack.enter_context(InjectSqlError(engine, kind, **options))",
                  "return InjectSqlError(engine, kind, **options).__enter__()",
                  within="inject_sql_error"),
              (CLEANUP,)),
    Safeguard("fixture-lock-left-held", "fault toolkit", "lock_holder lets go of its lock "
              "when the test ends, also when it failed",
              one("toolkit/src/sqlite_faults/plugin.py", "        for holder in holders:\n"
                  "            holder.close()", "        pass",
                  within="lock_holder"),
              (CLEANUP,)),
    Safeguard("context-error-left-armed", "fault toolkit", "leaving an InjectSqlError "
              "context removes its error from the engine",
              one("toolkit/src/sqlite_faults/sql_errors.py",
                  "event.remove(self.engine, target, listener)", "pass",
                  within="InjectSqlError.__exit__"),
              (CLEANUP,)),
    Safeguard("context-slow-left-armed", "fault toolkit", "leaving a SlowStatements context "
              "stops slowing the engine's statements",
              one("toolkit/src/sqlite_faults/slow.py",
                  'event.remove(self.engine, "before_cursor_execute", self._before)', "pass",
                  within="SlowStatements.__exit__"),
              (CLEANUP,)),
    Safeguard("battery-finding-without-cause", "fault toolkit", "a failed battery check "
              "names its cause and fix from the catalogue (causes.toml)",
              one("toolkit/src/sqlite_faults/battery/test_battery.py",
                  'f"cause: {found.title} [{found.id}]\\nfix: {found.fix}"',
                  'f"cause: {found.title}"', within="finding"),
              (TK + "test_battery_verdicts.py::test_the_battery_judges_the_naive_service_for_"
               "the_seed_reports_reasons[test_wal_is_on]",)),
    Safeguard("diagnosis-wal-reset-range-open", "fault toolkit", "the WAL-reset bug is "
              "diagnosed for SQLite 3.7.0 to 3.51.2 only (a fixed library is not flagged)",
              one("toolkit/src/sqlite_faults/diagnostics.py", "return low <= parts <= high",
                  "return low <= parts", within="wal_reset_bug"),
              (TK + "test_diagnostics.py::test_the_wal_reset_bug_spans_3_7_0_to_3_51_2",)),
    Safeguard("diagnosis-uses-the-services-pool", "fault toolkit", "a diagnosis opens its own "
              "connection through a copy of the pool, never one of the service's",
              one("toolkit/src/sqlite_faults/diagnostics.py",
                  "copy = engine.pool.recreate()", "copy = engine.pool",
                  within="_read_settings"),
              (TK + "test_diagnostics.py::test_diagnosis_leaves_the_services_pool_alone",)),
    Safeguard("diagnosis-journal-unread", "fault toolkit", "the journal mode is read from a "
              "connection the service's pool would make",
              one("toolkit/src/sqlite_faults/diagnostics.py",
                  '"journal_mode": str(_one(cursor, "PRAGMA journal_mode")).lower(),',
                  '"journal_mode": "wal",', within="_sqlite"),
              (TK + "test_diagnostics.py::test_the_naive_service_has_each_configuration_"
               "cause",)),
    Safeguard("analysis-breach-ignored", "fault toolkit", "a cause is confirmed by a breach "
              "of a check in a scenario that stages it",
              one("toolkit/src/sqlite_faults/report/analysis.py", "    if breached:\n",
                  "    if False:\n", within="_staged"),
              (U + "test_report_analysis.py::test_a_staged_cause_is_confirmed_by_its_breach_"
               "refuted_by_its_met_check_untested_unrun",)),
    Safeguard("analysis-configuration-trusted", "fault toolkit", "a rollback journal read from "
              "the engine confirms the rollback-journal cause",
              one("toolkit/src/sqlite_faults/report/analysis.py", 'lambda m: m != "wal"',
                  "lambda m: False", within="rollback_journal"),
              (U + "test_report_analysis.py::test_configuration_causes_follow_the_engines_"
               "diagnosis",)),
    Safeguard("analysis-counterfactual-unchecked", "fault toolkit", "only a target in which "
              "the cause is refuted is offered as the counterfactual",
              one("toolkit/src/sqlite_faults/report/analysis.py",
                  "if not any(h.cause.id == hypothesis.cause.id and h.verdict == REFUTED",
                  "if not any(h.cause.id == hypothesis.cause.id",
                  within="counterfactual"),
              (U + "test_report_analysis.py::test_the_counterfactual_is_another_target_without_"
               "the_cause_meeting_the_same_checks",)),
    Safeguard("counterfactual-change-not-applied", "fault toolkit", "a counterfactual run "
              "applies the cause's change through the engine plugin before its scenarios",
              one("toolkit/src/sqlite_faults/report/runner.py",
                  "await control.change(**change)", "await control.diagnostics()",
                  within="run_target"),
              ("tests/report/test_report_run.py::test_a_confirmed_cause_with_a_change_is_run_"
               "again_with_it_applied",)),
    Safeguard("counterfactual-claims-unfixed", "fault toolkit", "a counterfactual credits its "
              "change only with the breaches the run with it met",
              one("toolkit/src/sqlite_faults/report/analysis.py",
                  "removed = [v for v in breached if _met_there(v, theirs)]",
                  "removed = breached", within="with_counterfactual"),
              (U + "test_report_analysis.py::test_a_counterfactual_reruns_the_breached_"
               "scenarios_of_its_change_and_keeps_what_it_fixed",)),
    Safeguard("change-pragma-unchecked", "fault toolkit", "the control server applies only "
              "PRAGMAs with plain names and values",
              one("toolkit/src/sqlite_faults/engine_plugin.py",
                  "_PRAGMA_VALUE.fullmatch(str(v))", "True", within="_Registry.change"),
              (TK + "test_engine_plugin.py::test_a_change_applies_its_pragmas_to_every_"
               "connection_from_then_on",)),
    Safeguard("analysis-loop-judged-by-the-loads-probe", "fault toolkit", "a blocked event "
              "loop is confirmed only by the DB-free loop probe, not by the load's probe "
              "(which may wait for the database)",
              one("toolkit/src/sqlite_faults/report/analysis.py",
                  "blocked = [name for name, s in worst.items() if s > LOOP_BLOCKED_S]",
                  "blocked = list(worst)", within="blocking_event_loop"),
              (U + "test_report_analysis.py::test_the_loop_is_judged_by_the_db_free_loop_probe_"
               "not_the_loads_probe",)),
    Safeguard("diagnosis-async-engine-unbridged", "fault toolkit", "an async engine "
              "(aiosqlite) is diagnosed inside SQLAlchemy's greenlet bridge",
              one("toolkit/src/sqlite_faults/diagnostics.py", "    if engine.dialect.is_async:",
                  "    if False:", within="_connection_settings"),
              (TK + "test_diagnostics.py::test_an_async_engine_is_diagnosed_through_"
               "sqlalchemys_greenlet_bridge",)),
    Safeguard("analysis-failed-diagnosis-called-foreign", "fault toolkit", "an engine whose "
              "diagnosis failed is an engine seen, not a foreign engine",
              one("toolkit/src/sqlite_faults/report/analysis.py", "    if ev.diagnostics:",
                  "    if ev.engines():", within="foreign_engine"),
              (U + "test_report_analysis.py::test_a_diagnosis_that_failed_is_an_engine_seen_not_"
               "a_foreign_one",)),
    Safeguard("analysis-inconclusive-refutes", "fault toolkit", "checks the instrument may "
              "explain neither confirm nor refute a cause",
              one("toolkit/src/sqlite_faults/report/analysis.py",
                  "unsure = [v for v in judged if not v.passed]", "unsure = []",
                  within="_staged"),
              (U + "test_report_analysis.py::test_a_check_the_instrument_may_explain_neither_"
               "confirms_nor_refutes",)),
    Safeguard("analysis-experiment-failure-ignored", "fault toolkit", "a battery check that "
              "failed as the report's experiment confirms its cause",
              one("toolkit/src/sqlite_faults/report/analysis.py",
                  'if outcome.outcome == "failed":', "if False:",
                  within="battery_experiment.rule"),
              ("tests/report/test_report_run.py::test_the_causes_no_scenario_stages_are_tested_"
               "by_the_batterys_checks",)),
    Safeguard("engine-plugin-registers-nothing", "fault toolkit", "the engine plugin "
              "registers every engine built from a ?plugin=sqlite_faults URL",
              one("toolkit/src/sqlite_faults/engine_plugin.py", "        _registry.add(engine)",
                  "        pass",
                  within="FaultEnginePlugin.engine_created"),
              (TK + "test_engine_plugin.py::test_an_engine_from_a_plugin_url_is_registered_"
               "and_the_dialect_never_sees_the_plugin",
               NAIVE_VERDICT.format("test_the_engine_is_built_from_the_url_it_is_given"))),
    Safeguard("outcome-5xx-definite", "fault toolkit", "a 5xx is indeterminate (it may have "
              "committed), never a definite failure",
              one("toolkit/src/sqlite_faults/outcome.py",
                  "return 400 <= self.status < 500 and self.status not in (408, 429)",
                  "return 400 <= self.status and self.status not in (408, 429)",
                  within="Outcome.definite_failure"),
              (TK + "test_outcome.py::test_only_refusals_that_cannot_have_committed_are_"
               "definite",)),
    Safeguard("battery-foreign-engine-accepted", "fault toolkit", "the battery fails a "
              "service whose engine is not built from the URL it is given",
              one(BATTERY, "    if not engines:\n        pytest.fail(finding(",
                  "    if False:\n        pytest.fail(finding(", within="_engine_reached"),
              (FLAW_CONTROL.format("test_the_engine_is_built_from_the_url_it_is_given"),)),
    Safeguard("battery-unwaited-lock-accepted", "fault toolkit", "the battery fails a service "
              "that does not wait out a lock shorter than the deadline",
              one(BATTERY, "assert answer.outcome.ok, finding(",
                  "assert answer.outcome.answered, finding(",
                  within="test_a_lock_shorter_than_the_deadline_is_waited_out"),
              (FLAW_CONTROL.format("test_a_lock_shorter_than_the_deadline_is_waited_out"),)),
    Safeguard("battery-lost-ack-accepted", "fault toolkit", "the battery fails a service that "
              "loses an acknowledged write to a SIGKILL",
              one(BATTERY, "if r.lost or r.duplicated or r.phantoms or r.integrity_failures]",
                  "if r.duplicated or r.phantoms or r.integrity_failures]",
                  within="test_nothing_acknowledged_is_lost_across_sigkills"),
              (FLAW_CONTROL.format("test_nothing_acknowledged_is_lost_across_sigkills"),)),
    Safeguard("battery-first-write-not-killed", "fault toolkit", "the battery kills a "
              "service inside its slow first write (where it migrates its schema), on new "
              "databases",
              one(BATTERY, "if first_write_s > SLOW_FIRST_WRITE_S:", "if False:",
                  within="test_nothing_acknowledged_is_lost_across_sigkills"),
              (TK + "test_battery_verdicts.py::test_a_service_killed_inside_a_migration_at_"
               "its_first_write_fails_for_not_coming_back",)),
    Safeguard("battery-not-back-accepted", "fault toolkit", "the battery fails a service "
              "that does not serve writes again after a kill inside its first write",
              one(BATTERY, "            if not_back:", "            if False:",
                  within="test_nothing_acknowledged_is_lost_across_sigkills"),
              (TK + "test_battery_verdicts.py::test_a_service_killed_inside_a_migration_at_"
               "its_first_write_fails_for_not_coming_back",)),
    Safeguard("analysis-any-failure-confirms", "fault toolkit", "a battery experiment "
              "confirms only the cause its failed check's finding names",
              one("toolkit/src/sqlite_faults/report/analysis.py",
                  'if outcome.outcome == "failed" and outcome.cause not in ("", cause_id):',
                  "if False:", within="battery_experiment"),
              (U + "test_report_analysis.py::test_a_check_that_names_two_causes_confirms_only_"
               "the_one_its_finding_names",)),
    Safeguard("experiment-cause-unread", "fault toolkit", "a battery experiment's outcome "
              "carries the cause its failure's finding names",
              one("toolkit/src/sqlite_faults/report/experiments.py",
                  'return named[1] if named else ""', 'return ""', within="named_cause"),
              (U + "test_report_analysis.py::test_an_experiments_cause_is_the_id_its_finding_"
               "names",)),
    Safeguard("report-unstarted-traceback", "fault toolkit", "a service that never starts "
              "ends the report with a clear error (exit 2, the service's log), not a traceback",
              one("toolkit/src/sqlite_faults/report/__main__.py",
                  "except ServerNotReady as exc:", "except ZeroDivisionError as exc:",
                  within="run"),
              ("tests/report/test_report_run.py::test_a_service_that_never_starts_is_a_clear_"
               "error_not_a_traceback",)),
    Safeguard("battery-leak-accepted", "fault toolkit", "the battery fails a service that "
              "leaves a thread behind per failed request",
              one(BATTERY, "asyncio.run(settles(fresh.server.pid, baseline, timeout_s=15))",
                  "Resources.of(fresh.server.pid)",
                  within="test_threads_and_fds_return_to_the_steady_state_after_failures"),
              (FLAW_CONTROL.format("test_threads_and_fds_return_to_the_steady_state_after_"
                                   "failures"),)),
    Safeguard("battery-wal-unchecked", "fault toolkit", "the battery fails a service not in "
              "WAL mode", one(BATTERY, 'assert mode == [("wal",)], finding(',
                              "assert mode, finding(", within="test_wal_is_on"),
              (NAIVE_VERDICT.format("test_wal_is_on"),)),
    Safeguard("battery-5xx-on-bad-input-accepted", "fault toolkit", "the battery fails a "
              "service answering malformed input with a 5xx",
              one(BATTERY, "if answer.outcome.status >= 500 or not answer.outcome.answered]",
                  "if not answer.outcome.answered]",
                  within="test_bad_input_never_gets_a_500"),
              (NAIVE_VERDICT.format("test_bad_input_never_gets_a_500"),)),
    Safeguard("battery-late-answers-accepted", "fault toolkit", "the battery fails a service "
              "that answers a lock past its deadline late, or with a 500 or a success",
              (Edit(BATTERY, "    late = [a for a in answers if a.seconds > budget]",
                    "    late: list[Answer] = []",
                    within="test_a_lock_past_the_deadline_is_answered_in_time"),
               Edit(BATTERY, "    unclear = [a for a in answers if a.outcome.status in (0, 500) "
                    "or a.outcome.ok]", "    unclear = [a for a in answers "
                    "if a.outcome.status == 0]",
                    within="test_a_lock_past_the_deadline_is_answered_in_time")),
              (NAIVE_VERDICT.format("test_a_lock_past_the_deadline_is_answered_in_time"),)),
    Safeguard("battery-transient-500-accepted", "fault toolkit", "the battery fails a service "
              "that turns one transient error into a failed request",
              one(BATTERY, "              if not answer.outcome.ok]",
                  "              if not answer.outcome.answered]",
                  within="test_transient_errors_are_retried_not_turned_into_500s"),
              (NAIVE_VERDICT.format("test_transient_errors_are_retried_not_turned_into_"
                                    "500s"),)),
    Safeguard("battery-blocked-loop-accepted", "fault toolkit", "the battery fails a service "
              "whose event loop stops answering while DB calls are stuck",
              one(BATTERY, "assert during.outcome.ok and during.seconds < GRACE_S, finding(",
                  "assert during.outcome.status != 500, finding(",
                  within="test_the_event_loop_keeps_answering_while_db_calls_are_stuck"),
              (NAIVE_VERDICT.format("test_the_event_loop_keeps_answering_while_db_calls_are_"
                                    "stuck"),)),
    # The report as an instrument: its load model, its retrying client and its verdicts.
    Safeguard("slow-statement-busy-loop", "fault toolkit", "a slowed statement waits off the "
              "CPU, as a scan waiting on the disk: a busy loop per slowed statement starved the "
              "service and the load generator of a 2-core machine",
              one("toolkit/src/sqlite_faults/slow.py", "STEP_S = 0.005", "STEP_S = 0.0"),
              (TK + "test_fixture_examples.py::test_a_slowed_statement_waits_off_the_cpu",)),
    Safeguard("load-coordinated-omission", "fault toolkit", "open-loop latency is measured "
              "from the intended send time, so a stall that holds requests back counts in full",
              one(LOAD, "client, endpoint, profile, intended, started,",
                  "client, endpoint, profile, time.monotonic(), started,",
                  within="LoadGenerator._open_loop"),
              (TK + "test_report_load.py::test_open_loop_counts_a_stall_in_full_from_the_"
               "intended_send_times",)),
    Safeguard("retry-new-key", "fault toolkit", "the retrying client resends a write with the "
              "first attempt's idempotency key",
              one(LOAD, "response = await ledger.send(client, create)",
                  "response = await ledger.send(\n                    client, create if "
                  "attempt == 1 else ledger.new_create())",
                  within="LoadGenerator._exchange"),
              (TK + "test_report_load.py::test_the_retrying_client_resends_a_write_with_the_"
               "same_key_after_a_503",)),
    Safeguard("report-exit-gate-ignores-scope", "fault toolkit", "--fail-on "
              "non-network-breach leaves the seed's network scenarios out of the exit gate",
              one("toolkit/src/sqlite_faults/report/__main__.py",
                  'if fail_on == "breach" or not r.scenario.network]', "]",
                  within="gate_fails"),
              (TK + "test_report_verdicts.py::test_the_exit_gate_is_opt_in_and_scoped",)),
    Safeguard("report-generator-pool-grows-with-connections", "fault toolkit", "the report's "
              "load generator sends through the lean transport, whose cost per request does "
              "not grow with the connections a network fault left open",
              one(LOAD, "transport = self.transport or Http11Transport()",
                  "transport = self.transport or httpx.AsyncHTTPTransport("
                  "limits=httpx.Limits(max_connections=None))",
                  within="LoadGenerator.run"),
              (TK + "test_instrument_recovery.py::test_latency_returns_to_steady_state_after_"
               "every_network_fault",)),
    Safeguard("report-inconclusive-excuses-service-errors", "fault toolkit", "only a client "
              "timeout the instrument ate into leaves the service's view; a 500 is the "
              "service's however late the generator was",
              one(INSTRUMENT, 'if sample.code == "ClientTimeout" and delay > ',
                  "if delay > ",
                  within="service_view"),
              (U + "test_report_instrument.py::test_a_met_check_stays_met_and_a_service_error_"
               "is_never_excused",)),
    Safeguard("report-network-view-excuses-held-requests", "fault toolkit", "a request the "
              "service got through the proxy and never answered stays its client timeout in "
              "a network scenario",
              one(INSTRUMENT, "        if (service_s is None or forwarded.status is None\n",
                  "        if service_s is None:\n            continue\n"
                  "        if (forwarded.status is None\n",
                  within="service_time_view"),
              (U + "test_report_instrument.py::test_requests_the_service_got_and_never_"
               "answered_stay_its_timeouts",)),
    Safeguard("report-judges-the-clients-figure", "fault toolkit", "every check is judged on "
              "the service's own time at the proxy, not on what the generator and the proxy "
              "added to it",
              one("toolkit/src/sqlite_faults/report/runner.py",
                  "    judged = instrument.service_time_view(result.samples, result.forwarded,\n"
                  "                                          network=scenario.network)",
                  "    judged = result.samples",
                  within="judge_scenario"),
              (U + "test_report_instrument.py::test_the_runner_judges_a_scenario_on_the_"
               "services_own_time",)),
    Safeguard("report-service-time-for-retries", "fault toolkit", "a retrying client's request "
              "of several attempts keeps the client's figure outside a network fault (the last "
              "attempt's time is not the request's)",
              one(INSTRUMENT, "                or (sample.attempts > 1 and not network_fault)):",
                  "                ):",
                  within="service_time_view"),
              (U + "test_report_instrument.py::test_a_retried_request_keeps_the_clients_"
               "figure",)),
    Safeguard("report-gate-fails-on-inconclusive", "fault toolkit", "the exit gate counts the "
              "service's breaches, not checks the instrument could have decided",
              one("toolkit/src/sqlite_faults/report/__main__.py",
                  "return any(v.breached for r in judged for v in r.verdicts)",
                  "return any(not v.passed for r in judged for v in r.verdicts)",
                  within="gate_fails"),
              (TK + "test_report_verdicts.py::test_the_exit_gate_is_opt_in_and_scoped",)),
    Safeguard("http11-ignores-connection-close", "fault toolkit", "the generators' transport "
              "does not reuse a connection the server said it closes",
              one("toolkit/src/sqlite_faults/http11.py",
                  'keep = fields.get(b"connection", b"").lower() != b"close"', "keep = True",
                  within="Http11Transport._read_response"),
              (TK + "test_http11.py::test_connection_close_header_is_honoured",)),
    Safeguard("door-refuses-root-for-slow-reads", "overload", "the root and readiness are "
              "not refused because the reader lane is full: they answer by their own deadline "
              "whatever they find",
              one("app/main.py", 'gate.route("GET", "/", [])',
                  'gate.route("GET", "/", [db.readers])',
                  within="admission_gate"),
              (U + "test_admission.py::test_the_root_and_readiness_are_not_refused_for_a_"
               "reader_lane_full_of_slow_reads",)),
    Safeguard("door-charges-group-lock-wait-per-call", "overload", "the door's expected wait "
              "counts a group commit's fixed cost (a lock wait, the commit) once per batch, "
              "not once per call it carried",
              one("app/resilience.py",
                  "wall = math.ceil(share / self.batch_limit) * fixed + share * per_call",
                  "wall = share * (fixed + per_call)",
                  within="WorkerLane.wait_for"),
              (U + "test_worker_lane.py::test_a_groups_lock_wait_is_paid_once_per_batch_in_"
               "the_expected_wait",)),
    Safeguard("deadline-answers-over-a-commit", "deadlines", "a write whose COMMIT began "
              "before its deadline is answered by its outcome, never 504 for what committed",
              one("app/resilience.py", "if not call.handle.expire():",
                  "if not (call.handle.expire() or True):",
                  within="_expire"),
              (SLOW + "test_a_write_whose_commit_began_before_its_deadline_is_answered_by_"
               "its_outcome",)),
    Safeguard("proxy-charges-the-hole-to-the-service", "fault toolkit", "a request a black "
              "hole cut off from its answer is the network's, not the service's held request",
              one(PROXY, "            self.proxy.requests.pop(self.awaiting.popleft(), None)",
                  "            self.awaiting.popleft()",
                  within="_Connection.condemn"),
              (TK + "test_netproxy.py::test_a_request_the_hole_cut_off_before_its_answer_"
               "leaves_the_log",)),
    Safeguard("no-retry-budget", "retries", "retries stop while most attempts fail (the "
              "retry budget), and resume once successes give the tokens back",
              one("app/main.py", "    budget = (RetryBudget(settings.retry_budget_tokens, "
                  "settings.retry_budget_ratio)", "    budget = (None",
                  within="retry_policy"),
              (F + "test_sql_errors.py::test_retries_stop_while_most_attempts_fail_and_resume_"
               "after",)),
    Safeguard("retry-after-ignored", "fault toolkit", "the retrying client waits at least "
              "the Retry-After the service sent",
              one(RETRY_POLICY, "wait = max(wait, min(told, self.retry_after_cap_s))",
                  "wait = wait",
                  within="RetryPolicy.backoff_s"),
              (TK + "test_report_load.py::test_the_retrying_client_resends_a_write_with_the_"
               "same_key_after_a_503",
               TK + "test_report_load.py::test_backoff_is_full_jitter_under_a_growing_cap_and_"
               "honours_retry_after")),
    Safeguard("retry-unkeyed-write", "fault toolkit", "the retrying client never resends a "
              "write without a key that may have committed",
              one(RETRY_POLICY, "return not is_write or keyed or outcome.code in NEVER_SENT",
                  "return True",
                  within="RetryPolicy.should_retry"),
              (TK + "test_report_load.py::test_only_retries_that_cannot_write_twice",)),
    Safeguard("committed-error-uncounted", "fault toolkit", "the ledger counts a write told "
              "5xx that committed anyway",
              one("toolkit/src/sqlite_faults/ledger.py",
                  "report.committed_after_error += 1", "pass",
                  within="WriteLedger.check"),
              (TK + "test_report_verdicts.py::test_the_ledger_counts_a_500_whose_write_"
               "committed",)),
    # -- the report's verdicts against their controls (tests/report/test_report_controls.py):
    # each weakened verdict is judged met for a service built to breach it.
    Safeguard("report-p95-unjudged", "fault toolkit", "the report breaches an available "
              "endpoint whose p95 latency is over the objective",
              one("toolkit/src/sqlite_faults/report/slo.py",
                  "p95_ok = stats.p95_ms < objectives.p95_latency_ms", "p95_ok = True",
                  within="_available"),
              (CONTROL + "[no-deadline]",)),
    Safeguard("report-error-rate-unjudged", "fault toolkit", "the report breaches an available "
              "endpoint whose error rate is over the objective",
              one("toolkit/src/sqlite_faults/report/slo.py",
                  "errors_ok = stats.error_rate < objectives.error_rate", "errors_ok = True",
                  within="_available"),
              (CONTROL + "[committed-500s]",)),
    Safeguard("report-fail-fast-accepts-anything", "fault toolkit", "the report breaches a "
              "fail-fast endpoint answered late or with anything but 503/504",
              one("toolkit/src/sqlite_faults/report/slo.py",
                  "passed = bool(samples) and not unclean and stats.max_ms <= limit_ms",
                  "passed = bool(samples)", within="_fail_fast"),
              (CONTROL + "[no-deadline]",)),
    Safeguard("report-unrecovered-passes", "fault toolkit", "the report breaches a service "
              "that has not recovered when the fault ends",
              one("toolkit/src/sqlite_faults/report/slo.py",
                  '"not recovered", "n/a", False,', '"not recovered", "n/a", True,',
                  within="_recovery"),
              (CONTROL + "[no-recovery]",)),
    Safeguard("report-retry-duplicate-uncounted", "fault toolkit", "a write the ledger's keyed "
              "retry wrote a second time is a duplicate of the scenario whose write it was",
              one("toolkit/src/sqlite_faults/ledger.py",
                  "report.duplicated += 1\n            report.problems.append(f\"duplicated "
                  "{create.name}", "pass\n            report.problems.append(f\"duplicated "
                  "{create.name}", within="WriteLedger._resolve"),
              (CONTROL + "[committed-500s]",)),
    Safeguard("report-unresolved-uncounted", "fault toolkit", "an indeterminate write whose "
              "keyed retry did not end in one row is unresolved",
              one("toolkit/src/sqlite_faults/ledger.py",
                  'report.unresolved += 1\n            report.problems.append(\n'
                  '                f"unresolved {create.name}: retry answered {retry}, rows=',
                  'pass\n            report.problems.append(\n'
                  '                f"unresolved {create.name}: retry answered {retry}, rows=',
                  within="WriteLedger._resolve"),
              (CONTROL + "[committed-500s]",)),
    Safeguard("report-lost-row-unnoticed", "fault toolkit", "an acknowledged write missing "
              "from the table, or not read back, is lost",
              (Edit("toolkit/src/sqlite_faults/ledger.py",
                    "if rows is not None and str(ids.get(create.name)) != str(create.new_id):",
                    "if False:", within="WriteLedger.check"),
               Edit("toolkit/src/sqlite_faults/ledger.py",
                    "report.lost += 1\n            report.problems.append(\n"
                    '                f"lost {create.name}: {response.status_code}',
                    "pass\n            report.problems.append(\n"
                    '                f"lost {create.name}: {response.status_code}',
                    within="WriteLedger._check_acknowledged")),
              (CONTROL + "[write-behind]",)),
    Safeguard("report-client-timeout-judged", "fault toolkit", "the report refuses clients "
              "whose timeout ends before a service's deadline plus the grace (their timeouts "
              "would be judged the service's unclean failures)",
              one("toolkit/src/sqlite_faults/report/__main__.py", "if timeout_s <= limit_s:",
                  "if False:", within="_timeout_too_short"),
              ("tests/report/test_report_run.py::test_a_client_timeout_inside_the_services_"
               "deadline_is_refused",)),
    # -- holes the mutation tool found in the report's judging (docs/safeguards.md) ---------
    Safeguard("report-judge-ledger-replaces", "fault toolkit", "the ledger's verdicts come "
              "beside a create endpoint's latency, error and recovery verdicts, not instead",
              one("toolkit/src/sqlite_faults/report/slo.py",
                  "verdicts += ledger_verdicts(scenario, endpoint, ledger, objectives)",
                  "verdicts = ledger_verdicts(scenario, endpoint, ledger, objectives)",
                  within="judge"),
              (U + "test_report_slo.py::test_judge_keeps_every_phases_verdicts_beside_the_"
               "ledgers",)),
    Safeguard("report-judge-steady-dropped", "fault toolkit", "the fault window's verdicts "
              "come beside the steady state's, not instead",
              one("toolkit/src/sqlite_faults/report/slo.py",
                  'verdicts += _available(scenario, endpoint, "fault", by_phase["fault"], '
                  "objectives)",
                  'verdicts = _available(scenario, endpoint, "fault", by_phase["fault"], '
                  "objectives)", within="judge"),
              (U + "test_report_slo.py::test_judge_keeps_every_phases_verdicts_beside_the_"
               "ledgers",)),
    Safeguard("report-503-unclean", "fault toolkit", "a 503 is a clean refusal where the "
              "service cannot succeed",
              one("toolkit/src/sqlite_faults/report/slo.py",
                  "unclean = [s for s in samples if not s.ok and s.status not in (503, 504)]",
                  "unclean = [s for s in samples if not s.ok and s.status not in (504, 504)]",
                  within="_fail_fast"),
              (U + "test_report_slo.py::test_a_503_is_a_clean_refusal_and_one_error_is_not_a_"
               "breach_of_a_large_sample",)),
    Safeguard("agreement-inconclusive-as-breached", "fault toolkit", "runs that differ between "
              "inconclusive and breached disagree",
              one("toolkit/src/sqlite_faults/report/agreement.py",
                  'status = v.get("status") or ("met" if v["passed"] else "breached")',
                  'status = "met" if v["passed"] else "breached"', within="verdicts_of"),
              (U + "test_report_agreement.py::test_a_flip_between_inconclusive_and_breached_is_"
               "a_disagreement_and_says_so",)),
    Safeguard("ledger-resolves-without-key", "fault toolkit", "the ledger resolves an "
              "indeterminate write by a retry with its key by default (without it, a committed "
              "write of a service with keys is written twice)",
              one("toolkit/src/sqlite_faults/ledger.py",
                  "self, base_url: str, db: Path | str, resolve_with_key: bool = True,",
                  "self, base_url: str, db: Path | str, resolve_with_key: bool = False,",
                  within="WriteLedger.check"),
              (TK + "test_ledger_resolve.py::test_indeterminate_keyed_writes_are_resolved_by_a_"
               "retry_with_their_key",)),
    Safeguard("ledger-recovered-as-resolved", "fault toolkit", "a retry replayed (the first "
              "attempt had committed) counts as recovered, one that created as resolved",
              one("toolkit/src/sqlite_faults/ledger.py", 'if create.detail == "replayed":',
                  'if create.detail != "replayed":', within="WriteLedger._resolve"),
              (TK + "test_ledger_resolve.py::test_indeterminate_keyed_writes_are_resolved_by_a_"
               "retry_with_their_key",)),
    Safeguard("proxy-misspelt-parameter-ignored", "fault toolkit", "a fault model refuses a "
              "parameter it does not take (a misspelt knob would measure the default)",
              one("toolkit/src/sqlite_faults/netproxy/faults/__init__.py",
                  "unknown = sorted(set(given) - set(cls.params))", "unknown = None",
                  within="make_fault"),
              (TK + "test_netproxy_models.py::test_a_misspelt_or_missing_parameter_is_named_and_"
               "a_left_out_one_has_its_default",)),
    Safeguard("lanes-unjudged", "fault toolkit", "the report fails a service whose DB lanes "
              "are held while clients are slow",
              one("toolkit/src/sqlite_faults/report/slo.py",
                  "passed = sampled and lanes.capacity > 0 and fault_mean < limit",
                  "passed = sampled",
                  within="lanes_verdict"),
              (TK + "test_report_verdicts.py::test_lanes_held_by_slow_clients_fail_and_free_"
               "lanes_pass",)),
    Safeguard("ledger-check-unbounded", "fault toolkit", "the write ledger's check of a "
              "service that stopped answering ends within its budget, and says what it left "
              "unchecked",
              one("toolkit/src/sqlite_faults/ledger.py",
                  "if give_up is None or asyncio.get_running_loop().time() < give_up:",
                  "if True:", within="WriteLedger.check.out_of_time"),
              (TK + "test_report_verdicts.py::test_the_check_of_a_service_that_stopped_"
               "answering_ends_within_its_budget",)),
    Safeguard("ledger-partial-check-judged", "fault toolkit", "a ledger check that could not "
              "read every write back is inconclusive, never a pass",
              one("toolkit/src/sqlite_faults/report/slo.py",
                  "count <= limit and not (partial and name in read_back),",
                  "count <= limit,", within="ledger_verdicts"),
              (TK + "test_report_verdicts.py::test_a_check_that_could_not_read_every_write_"
               "back_claims_nothing",)),
    Safeguard("ledger-retry-rewrites-what-was-told", "fault toolkit", "the ledger judges "
              "what a client was told: a refused retry of an indeterminate write leaves it "
              "indeterminate (never a failure, whose committed row would count as a phantom)",
              one("toolkit/src/sqlite_faults/ledger.py",
                  "create.outcome, create.status, create.detail = told", "pass",
                  within="WriteLedger._resolve"),
              (TK + "test_ledger_resolve.py::test_a_committed_write_whose_retry_is_refused_"
               "is_no_phantom",)),
    Safeguard("target-path-values-unquoted", "fault toolkit", "a value filled into a "
              "request's path is percent-encoded (a unique value with a slash or a space "
              "stays one path segment)",
              one("toolkit/src/sqlite_faults/target.py",
                  'lambda m: quote(str(_lookup(m.group(1), values)), safe="") if in_path',
                  "lambda m: str(_lookup(m.group(1), values)) if in_path", within="_fill"),
              (TK + "test_target_file.py::test_every_part_of_a_request_is_a_template",)),
    Safeguard("ledger-read-back-accepts-anything", "fault toolkit", "a read-back judged by "
              "the unique value must carry that value",
              one("toolkit/src/sqlite_faults/target.py", "return unique in _strings(read)",
                  "return True", within="WriteContract.reads_back"),
              (TK + "test_target_file.py::test_the_new_id_comes_from_a_nested_field_or_a_"
               "header",)),
    Safeguard("control-without-engine-crashes", "fault toolkit", "before a service builds its "
              "first engine, the fault control answers no engines and nothing to remove",
              one("toolkit/src/sqlite_faults/engine_plugin.py",
                  "            except httpx.ConnectError:\n                return []\n"
                  "            response.raise_for_status()\n"
                  "            result: list[dict[str, Any]] = response.json()\n",
                  "            except httpx.ConnectError:\n                raise\n"
                  "            response.raise_for_status()\n"
                  "            result: list[dict[str, Any]] = response.json()\n",
                  within="FaultControl.engines"),
              (TK + "test_engine_plugin.py::test_before_the_first_engine_there_is_nothing_to_"
               "list_or_remove",)),
    Safeguard("report-sigkill-restart-unguarded", "fault toolkit", "the SIGKILL scenario's "
              "restart is tried again, and a service that stays down is the scenario's "
              "finding, not the end of the report",
              one("toolkit/src/sqlite_faults/report/scenarios.py",
                  "await restart(ctx.server, ctx.notes)",
                  "ctx.server.kill()\n    await asyncio.to_thread(ctx.server.start, "
                  "same_port=True)", within="sigkill_and_restart"),
              ("tests/unit/test_report_wedged_service.py::test_a_sigkill_restart_that_does_"
               "not_come_back_keeps_its_window_and_says_so",)),
    Safeguard("ledger-findings-charged-again", "fault toolkit", "a wrong answer (a lost "
              "write, a phantom row, a duplicate) is reported by the check that found it, "
              "not again by every later scenario's",
              one("toolkit/src/sqlite_faults/ledger.py",
                  "if (kind, name) in self._reported:\n            return False",
                  "if False:\n            return False", within="WriteLedger._first_time"),
              (TK + "test_ledger_resolve.py::test_each_wrong_answer_is_charged_to_the_check_"
               "that_found_it",)),
    Safeguard("ledger-indeterminate-resolved-again", "fault toolkit", "an indeterminate write "
              "is resolved (resent) once, by the check after it",
              one("toolkit/src/sqlite_faults/ledger.py",
                  "if index >= self._checked:  # resolved once, by the check after it",
                  "if True:", within="WriteLedger.check"),
              (TK + "test_ledger_resolve.py::test_each_wrong_answer_is_charged_to_the_check_"
               "that_found_it",)),
    Safeguard("proxy-latency-units", "fault toolkit", "the latency fault adds its `ms` in "
              "milliseconds",
              one("toolkit/src/sqlite_faults/netproxy/faults/latency.py",
                  'return Plan(self.values["ms"] / 1000)', 'return Plan(self.values["ms"] / 100)',
                  within="Latency.plan"),
              (TK + "test_netproxy_models.py::test_latency_adds_its_milliseconds_exactly",)),
    Safeguard("proxy-jitter-range", "fault toolkit", "jitter draws across its whole range",
              one("toolkit/src/sqlite_faults/netproxy/faults/jitter.py",
                  'self.rng.uniform(0, self.values["ms"])',
                  'self.rng.uniform(0, self.values["ms"] / 2)', within="Jitter.plan"),
              (TK + "test_netproxy_models.py::test_jitter_draws_across_its_whole_range_and_"
               "never_past_it",)),
    Safeguard("proxy-pulses-without-gaps", "fault toolkit", "latency pulses add nothing in "
              "their gaps",
              one("toolkit/src/sqlite_faults/netproxy/faults/latency_pulses.py",
                  "        if into >= pulse:\n            return Plan()\n", "",
                  within="LatencyPulses.plan"),
              (TK + "test_netproxy_models.py::test_latency_pulses_hold_one_draw_per_pulse_"
               "inside_its_range_and_none_in_the_gaps",)),
    Safeguard("proxy-bandwidth-units", "fault toolkit", "the bandwidth cap is in KiB/s",
              one("toolkit/src/sqlite_faults/netproxy/faults/bandwidth.py",
                  'Plan(rate=self.values["kib_per_s"] * 1024)',
                  'Plan(rate=self.values["kib_per_s"] * 10240)', within="Bandwidth.plan"),
              (TK + "test_netproxy_models.py::test_bandwidth_paces_at_its_kibibytes_per_second",)),
    Safeguard("proxy-500-forwarded", "fault toolkit", "the fault proxy's injected 500 is "
              "answered by the proxy, never sent on to the service",
              one(PROXY, "                    await self._answer_500(now)",
                  "                    pass",
                  within="_Connection._read"),
              (TK + "test_netproxy.py::test_an_injected_500_never_reaches_the_service",)),
    Safeguard("proxy-loss-without-delay", "fault toolkit", "a lost packet waits a "
              "retransmission timeout (packet loss above TCP is delay)",
              one(PACKET_LOSS, 'return Plan(self.values["rto_ms"] / 1000 if lost else 0.0)',
                  "return Plan(0.0)",
                  within="PacketLoss.plan"),
              (TK + "test_netproxy.py::test_a_lost_packet_waits_one_retransmission_timeout",)),
)
