"""The retrying client profile: what a client that uses what the service offers does.

A request is retried only when retrying cannot do harm:
- a read (GET) after any failure a retry may cure: no answer (timeout, reset, refused),
  429, 500, 502, 503, 504;
- a write that carries an idempotency key, after the same failures: the service replays the
  first attempt's answer instead of writing twice (the write ledger checks that it did);
- a write without a key only when it was never sent (the connection was refused or the
  client's pool had no connection for it) or the service says it never started it
  (`503 overloaded`): anything else might have committed, and resending it could write twice.

Backoff is "full jitter" (a uniform draw between 0 and an exponentially growing cap, as in
the AWS Architecture Blog's "Exponential Backoff And Jitter"), and a `Retry-After` the service
sends is honoured: the client waits at least that long, up to `retry_after_cap_s`.

The service's own retry policy (app/resilience.py) shares the backoff but not the shape: it
retries storage errors inside a deadline and a retry budget, through tenacity; this one
judges HTTP answers (what a client can know), and the toolkit works on services that are not
ours, so neither imports the other.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from sqlite_faults.outcome import Outcome

PLAIN = "plain"
RETRYING = "retrying"
PROFILES = (PLAIN, RETRYING)

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
# No byte of the request reached the service: safe to resend anything.
NEVER_SENT = frozenset({"ConnectError", "ConnectTimeout", "PoolTimeout"})


@dataclass(frozen=True)
class RetryPolicy:
    # Enough attempts and backoff to ride out a restart of a second or two; the budget keeps
    # a black-holed request from retrying for longer than a user would wait.
    max_attempts: int = 5
    base_s: float = 0.1
    cap_s: float = 2.0
    retry_after_cap_s: float = 2.0
    budget_s: float = 4.0  # no new attempt once this long has passed since the first

    def should_retry(self, outcome: Outcome, attempt: int, is_write: bool, keyed: bool,
                     elapsed_s: float = 0.0) -> bool:
        """After attempt number `attempt` (1-based) ended in `outcome`, `elapsed_s` after the
        exchange began."""
        if outcome.ok or attempt >= self.max_attempts or elapsed_s >= self.budget_s:
            return False
        if not outcome.answered:
            return not is_write or keyed or outcome.code in NEVER_SENT
        if outcome.status not in RETRYABLE_STATUSES:
            return False
        return not is_write or keyed or outcome.definite_failure

    def backoff_s(self, attempt: int, retry_after: str | None, rng: random.Random) -> float:
        """Seconds to wait before attempt number `attempt + 1`."""
        wait = rng.uniform(0.0, min(self.cap_s, self.base_s * 2 ** (attempt - 1)))
        told = _seconds(retry_after)
        if told is not None:
            wait = max(wait, min(told, self.retry_after_cap_s))
        return wait


def _seconds(retry_after: str | None) -> float | None:
    """Retry-After in its delta-seconds form (RFC 9110 10.2.3); an HTTP-date is not used by
    the services judged here and is ignored."""
    if retry_after is None:
        return None
    try:
        return max(0.0, float(retry_after))
    except ValueError:
        return None
