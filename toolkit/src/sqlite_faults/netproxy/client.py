"""The parent's side of the fault proxy: `NetworkFaults` starts it in a child process and
drives it over its stdin, one acknowledged command at a time."""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import subprocess
import sys
import tempfile
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import IO, Any

from sqlite_faults.errors import SqliteFaultsError

from .proxy import parse_upstream


@dataclass(frozen=True)
class ForwardedRequest:
    """One logged request (X-Request-Id): when the service got it and answered, monotonic."""

    forwarded_at: float
    answered_at: float | None
    status: int | None

    @property
    def service_s(self) -> float | None:
        """The service's own time, whatever the network added around it."""
        return None if self.answered_at is None else self.answered_at - self.forwarded_at


class NetworkFaultsError(SqliteFaultsError, RuntimeError):
    """The proxy process did not start, died, or did not answer in time."""


class NetworkFaults:
    """The fault proxy in a child process, and its controls.

        with NetworkFaults("127.0.0.1:8000", seed=7) as faults:
            client = httpx.Client(base_url=faults.base_url)
            faults.set("latency", ms=50)          # returns once the proxy has it
            ...
            faults.clear()

        async with faults.during("blackhole"):    # from inside an event loop
            await asyncio.sleep(1.0)

    `set` raises ValueError for an unknown fault or parameter, with the proxy's own words.
    The async variants run the blocking call on a worker thread, so the caller's event loop
    goes on while the proxy acknowledges.
    """

    def __init__(self, upstream: str | tuple[str, int], seed: int = 0, listen_port: int = 0,
                 timeout_s: float = 10.0) -> None:
        self.upstream = parse_upstream(upstream)
        self.seed = seed
        self.timeout_s = timeout_s  # start-up and each ack; generous for a loaded machine
        self._lock = threading.Lock()
        self._next_id = 0
        self._answers: queue.Queue[str | None] = queue.Queue()
        # The proxy's stderr, for error messages; a file, since a pipe nobody reads could fill
        # and stall the proxy. It lives as long as this handle (closed in close()).
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        host, port = self.upstream
        try:
            self._proc: subprocess.Popen[str] = subprocess.Popen(
                [sys.executable, "-m", "sqlite_faults.netproxy", "--upstream", f"{host}:{port}",
                 "--seed", str(seed), "--listen-port", str(listen_port)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, text=True,
                bufsize=1)
        except BaseException:
            self._stderr.close()
            raise
        self._reader = threading.Thread(target=self._read_answers, name="netproxy-answers",
                                        daemon=True)
        self._reader.start()
        try:
            first = self._next_answer()
            if "port" not in first:
                raise NetworkFaultsError(f"the fault proxy said {first!r}, not its port")
            self.port = int(first["port"])
        except BaseException:
            self.close()
            raise

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The proxy process's id (its CPU is part of the instrument's)."""
        return self._proc.pid

    def _read_answers(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            self._answers.put(line)
        self._answers.put(None)

    def _next_answer(self) -> dict[str, Any]:
        try:
            line = self._answers.get(timeout=self.timeout_s)
        except queue.Empty:
            raise NetworkFaultsError(
                f"the fault proxy did not answer within {self.timeout_s} s") from None
        if line is None:
            self._answers.put(None)  # every later call sees the exit too
            raise NetworkFaultsError(f"the fault proxy exited: {self._stderr_tail()}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def _stderr_tail(self) -> str:
        with contextlib.suppress(OSError, ValueError):
            self._stderr.seek(0)
            return self._stderr.read().decode(errors="replace")[-2000:].strip() or "no output"
        return "no output"

    def _command(self, op: str, **fields: Any) -> dict[str, Any]:
        with self._lock:
            if self._proc.poll() is not None or self._proc.stdin is None:
                raise NetworkFaultsError(f"the fault proxy is not running: {self._stderr_tail()}")
            self._next_id += 1
            ident = self._next_id
            try:
                self._proc.stdin.write(json.dumps({**fields, "op": op, "id": ident}) + "\n")
                self._proc.stdin.flush()
            except (BrokenPipeError, ValueError) as exc:
                raise NetworkFaultsError(f"the fault proxy is gone: {exc}") from None
            while True:  # an answer that came too late to an earlier call is skipped
                answer = self._next_answer()
                if answer.get("id") == ident:
                    break
        if not answer.get("ok"):
            raise ValueError(str(answer.get("error")))
        return answer

    def set(self, fault: str, **params: float) -> None:
        """Make `fault` the one active fault (replacing any other); returns once acked."""
        if "op" in params or "id" in params:
            raise ValueError("'op' and 'id' are not fault parameters")
        self._command("set", fault=fault, **params)

    def clear(self) -> None:
        """No fault: forward as is (connections condemned by a black-hole stay silent)."""
        self._command("clear")

    def stats(self) -> dict[str, int]:
        """The proxy's counters since it started (keys: STATS_KEYS)."""
        counters: dict[str, int] = self._command("stats")["stats"]
        return counters

    def requests(self) -> dict[str, ForwardedRequest]:
        """The logged requests since the last call (module docstring), and the log emptied."""
        log: dict[str, list[Any]] = self._command("requests")["requests"]
        return {key: ForwardedRequest(*entry) for key, entry in log.items()}

    async def arequests(self) -> dict[str, ForwardedRequest]:
        return await asyncio.to_thread(self.requests)

    async def aset(self, fault: str, **params: float) -> None:
        await asyncio.to_thread(self.set, fault, **params)

    async def aclear(self) -> None:
        await asyncio.to_thread(self.clear)

    @contextlib.asynccontextmanager
    async def during(self, fault: str, **params: float) -> AsyncIterator[None]:
        """`fault` for the body of the `async with`; cleared on the way out, also when the
        body fails."""
        await self.aset(fault, **params)
        try:
            yield
        finally:
            await self.aclear()

    def close(self) -> None:
        """Stop the proxy (its connections close with it); kill it if it does not exit."""
        proc = self._proc
        if proc.poll() is None and proc.stdin is not None:
            with contextlib.suppress(NetworkFaultsError, ValueError, OSError):
                self._command("stop")
        with contextlib.suppress(OSError, ValueError):
            if proc.stdin is not None:
                proc.stdin.close()  # EOF stops it too, if "stop" never got through
        try:
            proc.wait(timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        self._reader.join(timeout=self.timeout_s)
        if proc.stdout is not None:
            proc.stdout.close()
        self._stderr.close()

    def __enter__(self) -> NetworkFaults:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
