"""The door policy: refuse at once what the service cannot answer in time.

Past capacity a queue only turns "slow" into "late": every request admitted beyond what the
workers can drain within the deadline waits, is answered 504 at its deadline, and has cost a
parse, a task and a slot on the way (Fail at Scale's "a queue is only useful while it drains";
the SRE book's handling-overload chapter). So each request is judged when its head has arrived,
before a task is made for it or its body read (app/serve.py calls `admits` from the HTTP
protocol): a request is admitted when the time it has already spent since its first byte plus
the expected wait on every lane it will queue on (the password-hash lane, then a DB lane) stays
within `max_wait_s`; otherwise it gets a `503 overloaded` with `Retry-After`, built once, as
cheap as an answer can be.

The bound is on time, not on queue length: a lane's expected wait is the time the lane measures
it takes to run the calls ahead (app/resilience.py: per batch and per call), so the same bound
lets a thousand point reads wait (a fraction of a ms each) and a few dozen password hashes
(tens of ms each).

Requests the gate knows nothing about (health, metrics, the OpenAPI) are always admitted: they
touch no lane, and an operator needs them most when the service is overloaded.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Protocol

# Refusals a second whose connections are not held. Measured with wrk against app.serve on one
# core, every request refused at the door: 54,000 refusals a second, about 18.5 us each, so
# this many cost about 2 % of a core. Past it, a client that asks again at once without
# waiting for Retry-After (every closed-loop load generator) would spend the CPU the admitted
# requests need on refusals, and the refused connections are held.
UNHELD_REFUSALS_PER_S = 1000.0


class Lane(Protocol):
    """What the gate reads of a worker lane (app/resilience.py's WorkerLane)."""

    workers: int

    def wait_for(self, calls: int) -> float:
        """Seconds the lane takes to run `calls` more calls with all its workers busy."""

    @property
    def queued(self) -> int: ...


class Route:
    """A method and path whose requests queue on `lanes`, and how many of them are admitted
    and not yet answered. That count, not the lanes' queues, is what the next request waits
    behind: a burst of requests is admitted within one turn of the event loop, before any
    of their handlers has queued anything."""

    def __init__(self, method: bytes, path: bytes, lanes: tuple[Lane, ...],
                 prefix: bool) -> None:
        self.method = method
        self.path = path
        self.lanes = lanes
        self.prefix = prefix  # `path` is a prefix (a path parameter follows)
        self.admitted = 0

    def matches(self, method: bytes, path: bytes) -> bool:
        if method != self.method:
            return False
        return path.startswith(self.path) if self.prefix else path == self.path

    def expected_wait(self) -> float:
        """Seconds a request admitted now would wait for workers, lane after lane: the time
        the lane takes, as it measures it, to run the calls ahead of it (queued ones, or
        admitted requests that have not reached the lane yet, whichever are more)."""
        wait = 0.0
        for lane in self.lanes:
            wait += lane.wait_for(max(lane.queued, self.admitted - lane.workers))
        return wait

    def enter(self) -> None:
        self.admitted += 1

    def leave(self) -> None:
        self.admitted -= 1


class Admission:
    """Judges each request at the door; `on_refusal(reason)` counts what it refused (a
    metric): "overloaded" (it could not start in time) or "connections" (past the server's
    connection limit, app/serve.py)."""

    def __init__(self, max_wait_s: float, retry_after_s: int,
                 on_refusal: Callable[[str], None] = lambda reason: None,
                 unheld_refusals_per_s: float = UNHELD_REFUSALS_PER_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_wait_s = max_wait_s
        # How long a refused connection is not read again (app/serve.py), once refusals come
        # faster than `unheld_refusals_per_s`: the Retry-After its client was given, but at
        # most half the admission bound, so a request read after the hold can still be
        # admitted.
        self.refusal_hold_s = min(float(retry_after_s), max_wait_s / 2)
        self._unheld_per_s = unheld_refusals_per_s
        self._unheld_tokens = unheld_refusals_per_s  # a token bucket of one second's worth
        self._clock = clock
        self._tokens_at = clock()
        self._on_refusal = on_refusal
        self._routes: list[Route] = []
        # Seconds from a request's first byte to the app (tasks waiting for the event loop),
        # a moving average that StampArrival feeds: when the loop itself is the bottleneck
        # the lanes are short, and only this shows the wait.
        self.door_delay_s = 0.0
        self.refusal_bytes = _refusal_response(retry_after_s, max_wait_s, close=False)
        self.refusal_bytes_closing = _refusal_response(retry_after_s, max_wait_s, close=True)

    def route(self, method: str, path: str, lanes: Sequence[Lane], *,
              prefix: bool = False) -> None:
        self._routes.append(Route(method.encode(), path.encode(), tuple(lanes), prefix))

    def route_of(self, method: bytes, url: bytes) -> Route | None:
        """The route a request queues on, or None: it queues on no lane, and is admitted."""
        path = url.split(b"?", 1)[0]
        for route in self._routes:
            if route.matches(method, path):
                return route
        return None

    def observe_door_delay(self, seconds: float) -> None:
        self.door_delay_s += _DOOR_WEIGHT * (seconds - self.door_delay_s)

    def admits(self, route: Route, first_byte_at: float) -> bool:
        """Whether a request of `route` whose first byte came at `first_byte_at` can start its
        work within the bound: the time it has spent, the loop's recent delay before the app,
        and the wait on its lanes. The caller enters the route when admitted and leaves it
        when the request is answered."""
        spent = time.monotonic() - first_byte_at
        if spent + self.door_delay_s + route.expected_wait() <= self.max_wait_s:
            return True
        self._on_refusal("overloaded")
        return False

    def holds_after_refusal(self) -> bool:
        """Whether the connection of the request just refused is held (not read for
        `refusal_hold_s`): only once refusals come faster than the unheld rate. A hold costs
        whatever that connection carries next, and a pooled client's next request is often for
        another route that would have been admitted (seen in the report: a create behind a
        refused read on its keep-alive connection waited the whole 250 ms hold)."""
        now = self._clock()
        self._unheld_tokens = min(self._unheld_per_s, self._unheld_tokens
                                  + (now - self._tokens_at) * self._unheld_per_s)
        self._tokens_at = now
        if self._unheld_tokens >= 1.0:
            self._unheld_tokens -= 1.0
            return False
        return True

    def refuse_connection(self) -> None:
        """Counts a request refused because the server holds too many connections."""
        self._on_refusal("connections")


# Weight of the newest request in the door delay's moving average: the last hundred or so
# requests count (a few tens of ms at the rates where the loop is the bottleneck).
_DOOR_WEIGHT = 0.01


def _refusal_response(retry_after_s: int, max_wait_s: float, *, close: bool) -> bytes:
    """The whole answer to a refused request, headers and JSON body, made once."""
    body = json.dumps({"error": {
        "code": "overloaded",
        "message": f"the service cannot start this request within {max_wait_s:g} s; "
                   "try again after Retry-After",
    }}).encode()
    return b"".join([
        b"HTTP/1.1 503 Service Unavailable\r\n",
        b"content-type: application/json\r\n",
        b"retry-after: %d\r\n" % retry_after_s,
        b"content-length: %d\r\n" % len(body),
        b"connection: close\r\n" if close else b"",
        b"\r\n",
        body,
    ])
