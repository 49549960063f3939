"""Restarting the service under test, one way for every restart the report makes: after a
scenario left it wedged, and in the SIGKILL scenario. A service that does not come back is a
finding, never a reason for the report to stop."""

from __future__ import annotations

import asyncio

from sqlite_faults.errors import SqliteFaultsError
from sqlite_faults.server import ServerNotReady, ServerProcess


class ServiceGone(SqliteFaultsError, RuntimeError):
    """The service did not come back after its restarts: its remaining scenarios are not run."""


# A restarted service has this long to answer its readiness check, this many times.
RESTART_TIMEOUT_S = 30.0
RESTARTS = 2


async def restart(server: ServerProcess, notes: list[str]) -> None:
    """Kill (whatever is left of) the service and start it on the same port, up to RESTARTS
    times; each failed start is noted with its log's last line. ServiceGone after the last."""
    for attempt in range(1, RESTARTS + 1):
        server.kill()
        try:
            await asyncio.to_thread(server.start, same_port=True, timeout_s=RESTART_TIMEOUT_S)
            return
        except ServerNotReady as exc:
            last_line = next((line for line in reversed(str(exc).splitlines()) if line.strip()
                              and not line.startswith("---")), "no output")
            notes.append(f"restart {attempt} was not ready within {RESTART_TIMEOUT_S:g} s "
                         f"(its log: {last_line.strip()[:160]})")
    raise ServiceGone(f"the service did not come back after {RESTARTS} restarts")
