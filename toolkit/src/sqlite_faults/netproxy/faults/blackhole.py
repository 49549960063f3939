"""blackhole: while set, nothing is forwarded and nothing is answered. Bytes read on any
connection during the hole are discarded and that connection is condemned: it stays
silent until the client closes it, and nothing later is forwarded on it (a byte stream
with a hole in it cannot be resumed); its upstream side is closed at once. Connections
accepted during the hole are condemned too (their connect succeeds: the kernel completes
the handshake before any accept). An idle connection that sends nothing during the hole
survives it, as a TCP connection does through a short partition. After `clear`, new
connections work normally. This models a partition that outlasts the client's patience:
clients see read timeouts, not resets.
"""

from __future__ import annotations

from .base import Fault


class Blackhole(Fault):
    name = "blackhole"
    summary = ("nothing forwarded or answered; a connection with traffic in the hole stays silent "
               "until its client gives up (read timeouts, not resets)")
    swallows = True
