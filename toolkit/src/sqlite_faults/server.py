"""A real server process to crash: uvicorn (or waitress, for a WSGI app) on a free loopback
port, its own data folder.

Crashes and disk faults only mean something in a real process, so the durability suite drives
the service the way production runs it. The harness knows nothing of the app beyond its
import string, its environment, the folder it is imported from and its HTTP readiness endpoint.

    server = ServerProcess(data_dir, env={"SQLITE_SYNCHRONOUS": "FULL"})
    server.start()          # returns once GET /readyz answers 200
    server.kill()           # SIGKILL, no shutdown
    server.start()          # same data folder: SQLite recovers from the WAL
    server.log_tail()       # for failure reports
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from .engine_plugin import with_plugin
from .errors import SqliteFaultsError
from .ports import free_port

if TYPE_CHECKING:
    from .target import Target


# Between two readiness checks of a starting or recovering service.
READY_POLL_S = 0.02


class ServerNotReady(SqliteFaultsError, RuntimeError):
    pass


class ServerProcess:
    """One service process at a time on `data_dir/users.db`; restartable after a kill.

    `start(wrapper=...)` prefixes the command (e.g. `SyscallFault.wrapper()`); `pid` is then
    the wrapper's. Without one, `pid` is the service's own (uvicorn runs the app in-process).
    """

    def __init__(
        self,
        data_dir: Path,
        env: dict[str, str] | None = None,
        app: str | None = None,  # "module:factory" for `uvicorn --factory`; or a launcher
        ready_path: str = "/readyz",
        wrapper: list[str] | None = None,
        launcher: list[str] | None = None,
        cwd: Path | None = None,
        database_url_env: str = "DATABASE_URL",
        database_url: str | None = None,
        factory: bool = True,  # `app` names a factory (uvicorn --factory), not an app object
        server: str = "uvicorn",  # or "waitress": `app` is a WSGI callable (sqlite_faults.wsgi)
        threads: int | None = None,  # waitress's worker threads (its own default: 4)
    ) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.db_path = self.data_dir / "users.db"
        if app is None and launcher is None:
            raise ValueError("ServerProcess needs the app's import string or a launcher")
        self.app = app
        self.factory = factory
        self.server = server
        self.threads = threads
        self.ready_path = ready_path
        self.wrapper = wrapper  # the default command prefix of every start
        # A service's own entry point taking uvicorn's --host/--port/--log-level/
        # --no-access-log (e.g. [python, -m, app.serve]); None runs `uvicorn APP --factory`.
        self.launcher = launcher
        # The folder the app is imported from (and runs in): its import root, put first on
        # PYTHONPATH. Default: the current directory, as `uvicorn APP` would use.
        self.cwd = Path(cwd) if cwd is not None else Path.cwd()
        self.database_url_env = database_url_env  # the variable the service reads its URL from
        self.env = {database_url_env: database_url or f"sqlite:///{self.db_path}",
                    **(env or {})}
        self.database_url = self.env[database_url_env]
        self.log_path = self.data_dir / "server.log"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.ready_seconds: list[float] = []  # start-to-ready time of each start

    @classmethod
    def for_target(cls, target: Target, data_dir: Path, env: dict[str, str] | None = None,
                   database_url: str | None = None, with_faults: bool = True,
                   **kwargs: Any) -> ServerProcess:
        """The target's service on `data_dir/users.db` (or `database_url`). `with_faults`
        adds the engine plugin to its database URL, so FaultControl reaches its engines."""
        data_dir = Path(data_dir)
        url = database_url or target.database_url.replace("{path}", str(data_dir / "users.db"))
        return cls(data_dir, env={**target.env, **(env or {})}, app=target.app,
                   ready_path=target.ready_path, launcher=target.launch_command(),
                   cwd=target.root, database_url_env=target.database_url_env,
                   database_url=with_plugin(url) if with_faults else url,
                   factory=target.factory, server=target.server, threads=target.threads,
                   **kwargs)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def command(self) -> list[str]:
        common = ["--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning",
                  "--no-access-log"]
        if self.launcher is not None:
            return [*self.launcher, *common]
        assert self.app is not None
        serve = ["sqlite_faults.wsgi", *([f"--threads={self.threads}"] if self.threads else [])
                 ] if self.server == "waitress" else ["uvicorn"]
        return [sys.executable, "-m", *serve, self.app,
                *(["--factory"] if self.factory else []), *common]

    def start(self, wrapper: list[str] | None = None, timeout_s: float = 30.0,
              same_port: bool = False) -> float:
        """Start and wait until ready; returns the start-to-ready time in seconds.

        `same_port` restarts on the previous port (uvicorn binds with SO_REUSEADDR), so
        clients of a killed server reach the new one at the same address.
        """
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("the server is already running")
        if not (same_port and self.port):
            self.port = free_port()
        pythonpath = os.pathsep.join(
            p for p in (str(self.cwd), os.environ.get("PYTHONPATH", "")) if p)
        env = {**os.environ, **self.env, "PYTHONPATH": pythonpath}
        started = time.monotonic()
        with open(self.log_path, "ab") as log:
            log.write(f"--- start #{self.starts + 1} on port {self.port}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [*(wrapper or self.wrapper or []), *self.command()], cwd=self.cwd, env=env,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        self.starts += 1
        self._wait_ready(started + timeout_s)
        elapsed = time.monotonic() - started
        self.ready_seconds.append(elapsed)
        return elapsed

    # -- readiness: the one check every user of a server asks (its readiness path, 2xx) --

    def answers_ready_now(self, timeout_s: float = 2.0) -> bool:
        """Whether the running service answers its readiness check within `timeout_s`."""
        with httpx.Client(timeout=timeout_s) as client:
            return self._answers_ready_with(client)

    def _answers_ready_with(self, client: httpx.Client) -> bool:
        if not self.running:
            return False
        with contextlib.suppress(httpx.HTTPError):
            return client.get(self.base_url + self.ready_path).is_success
        return False

    async def answers_ready(self, timeout_s: float = 2.0) -> bool:
        """`answers_ready_now` without blocking the event loop (asked beside running load)."""
        if not self.running:
            return False
        with contextlib.suppress(httpx.HTTPError):
            async with httpx.AsyncClient(timeout=timeout_s) as client:
                return (await client.get(self.base_url + self.ready_path)).is_success
        return False

    async def wait_answering(self, timeout_s: float) -> float:
        """Seconds until the running service answers its readiness check again (after its
        database came back, say); ServerNotReady after `timeout_s`."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if await self.answers_ready(timeout_s=1.0):
                return time.monotonic() - started
            await asyncio.sleep(READY_POLL_S)  # polling: readiness has no event to wait on
        raise ServerNotReady(f"the service did not answer its readiness check within "
                             f"{timeout_s:g} s:\n" + self.log_tail())

    def _wait_ready(self, give_up_at: float) -> None:
        assert self.proc is not None
        # One client for every poll: building one costs milliseconds of CPU at each start.
        with httpx.Client(timeout=1.0) as client:
            while time.monotonic() < give_up_at:
                if self.proc.poll() is not None:
                    raise ServerNotReady(
                        f"the server exited with {self.proc.returncode} before it was ready:\n"
                        + self.log_tail()
                    )
                if self._answers_ready_with(client):
                    return
                time.sleep(READY_POLL_S)  # polling readiness: there is no event to wait on
        self.kill()
        raise ServerNotReady("the server was not ready in time:\n" + self.log_tail())

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (wrapper included) and reap it."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        """A clean shutdown (SIGTERM), falling back to SIGKILL."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()

    def wait_exit(self, timeout_s: float) -> int | None:
        """Wait for the process to end by itself (e.g. killed by an injected signal)."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no server log)"
