"""What one HTTP answer (or the lack of one) means, in one place: the ledger, the traffic
driver and the battery all classify through `outcome_of`.

The error code comes from the body when the service names one: `{"error": {"code": ...}}`
(the hardened service's shape), `{"code": ...}`, or FastAPI's `{"detail": "..."}` (a short
string detail is used as the code); otherwise it is `http-<status>`. No answer at all is the
exception's name (`ReadTimeout`, `ConnectError`, ...), with status 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

# Refusals that cannot have committed: never started (overloaded) or rejected as such.
# `storage_busy` is not among them: on PostgreSQL a connection lost during COMMIT is retried
# as transient, so a create that ends 503 storage_busy may still have committed.
DEFINITE_FAILURE_CODES = frozenset({"overloaded", "validation_error", "name_taken",
                                    "idempotency_key_reused"})


@dataclass(frozen=True)
class Outcome:
    status: int  # 0: no HTTP answer (timeout, refused, reset)
    code: str  # "" on success

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def answered(self) -> bool:
        return self.status != 0

    @property
    def definite_failure(self) -> bool:
        """True when the request cannot have taken effect: a 4xx (the service refused it as
        asked) or a refusal it names as never started. 5xx and no answer are indeterminate."""
        if self.code in DEFINITE_FAILURE_CODES:
            return True
        return 400 <= self.status < 500 and self.status not in (408, 429)


def error_code(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"http-{response.status_code}"
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("code"):
            return str(error["code"])
        if isinstance(body.get("code"), str):
            return str(body["code"])
        detail = body.get("detail")
        if isinstance(detail, str) and 0 < len(detail) <= 60:
            return detail
    return f"http-{response.status_code}"


def outcome_of(response: httpx.Response | None, exc: BaseException | None = None) -> Outcome:
    if response is None:
        return Outcome(0, type(exc).__name__ if exc is not None else "no-answer")
    if response.is_success:
        return Outcome(response.status_code, "")
    return Outcome(response.status_code, error_code(response))
