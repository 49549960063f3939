"""A free TCP port on the loopback interface, for a server the toolkit is about to start.

Its own module because both sides use it: the test process (ServerProcess, the PostgreSQL
server) and the service's process, where the engine plugin opens its control port and must
not import the harness."""

from __future__ import annotations

import socket


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
