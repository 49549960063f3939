"""Network faults between clients and an HTTP service: a TCP proxy of our own, in its own
process, driven over its stdin.

Toxiproxy and `tc netem` are not available on the machines the report runs on, so the report
puts this proxy between its load generator and the service. It forwards HTTP/1.1 cleartext
on loopback and injects one fault at a time. It runs in a process of its own so that its CPU
never shares the load generator's event loop (a proxy starved by its own clients would add
latency nobody asked for):

    python -m sqlite_faults.netproxy --upstream 127.0.0.1:8000 --seed 7 [--listen-port 0]

It binds 127.0.0.1 (port 0: a free one), prints `{"port": N}` on stdout, then reads one JSON
command per line on stdin and answers each with one JSON line on stdout, so the parent can
wait for the ack before it measures anything:

    {"op": "set", "fault": "latency", "ms": 50}   -> {"ok": true, "fault": "latency", ...}
    {"op": "clear"}                                -> {"ok": true, ...}
    {"op": "stats"}                                -> {"ok": true, "stats": {...}}
    {"op": "requests"}                             -> {"ok": true, "requests": {...}}
    {"op": "stop"}                                 (EOF on stdin stops it too)

A refused command answers `{"ok": false, "error": "..."}`. `NetworkFaults` (client.py) is
the parent's side; the proxy itself is proxy.py.

How faults act. Each accepted client connection gets its own upstream connection (if that
connect fails the client connection is reset: SO_LINGER 0, then close; the proxy carries on,
so a service restarted on the same port is reached again by the next connection). A chunk is
one read() of up to 64 KiB from a socket; each direction of each connection has a queue and a
pump task that writes the chunks in the order they were read, each no earlier than its
release time. A delay therefore never reorders bytes within a connection and direction: a
chunk drawn a short delay behind one drawn a long delay waits for it, as TCP's in-order
delivery would. A fault applies to chunks read after it was set.

Each fault is a module of `faults/` (one class behind `faults.base.Fault`, its description
in the module's docstring, its one-line summary in `FAULTS`): latency, latency-pulses,
jitter, bandwidth, packet-loss, blackhole, http-500.

Requests that carry an `X-Request-Id` header are logged: when the proxy wrote the request's
first chunk to the service, when it read the first chunk of the service's answer, and the
answer's status (the proxy's clock is CLOCK_MONOTONIC, the same as `time.monotonic()` in any
process on the machine). `requests` returns the log and empties it:
`{id: [forwarded_at, answered_at, status]}`, null where it did not happen. What lies between
the two times is the service's own time, whatever the network faults added around it; a
request missing from the log never reached the service or was cut off from it (a black hole
took it, or its answer; or the proxy answered it). The report judges network scenarios by it.

Every random choice comes from `random.Random(seed)`: each `set` derives the fault's own
generator from it, so a run with the same seed, the same sequence of `set`s and the same
order of traffic (e.g. sequential requests) makes the same decisions.

What it cannot do: TLS, HTTP/2 (frames are not requests), pipelined requests, anything below
TCP (no real packet is dropped, no SYN is lost), anything but loopback.
"""

from __future__ import annotations

from .client import ForwardedRequest, NetworkFaults, NetworkFaultsError
from .faults import FAULTS, INJECTED_BODY
from .proxy import STATS_KEYS, Proxy, main, parse_upstream

__all__ = ["FAULTS", "INJECTED_BODY", "STATS_KEYS", "ForwardedRequest", "NetworkFaults",
           "NetworkFaultsError", "Proxy", "main", "parse_upstream"]
