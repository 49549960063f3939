"""Faults inside a service's own process, without touching its code: a SQLAlchemy
`CreateEnginePlugin` plus a small control server.

SQL errors and slow statements act on a SQLAlchemy engine, which lives in the service's
process; a harness drives that process from outside. SQLAlchemy loads a plugin named in the
database URL for every engine built from it (docs: "CreateEnginePlugin"; the `plugin` query
parameter is removed from the URL before the dialect sees it):

    DATABASE_URL=sqlite:////tmp/x/app.db?plugin=sqlite_faults
    SQLITE_FAULTS_CONTROL=127.0.0.1:41234

The plugin registers each engine built from such a URL and, once per process, starts a
control server on the address in SQLITE_FAULTS_CONTROL (a daemon thread, stdlib HTTP, JSON):

    GET    /engines     [{"id": 0, "url": "sqlite:///...", "dialect": "sqlite"}]
    GET    /faults      what each armed fault did so far (to synchronise on: "it started")
    GET    /diagnostics each engine's configuration as the service runs it (diagnostics.py)
    POST   /sql-error   {"kind": "busy", "probability": 0.05, "seed": 7, "match": null,
                         "times": null, "at": "statement", "engine": "any"}
    POST   /slow        {"seconds": 2.0, "match": "FROM users", "engine": "any"}
    POST   /stall       {"seconds": 2.0, "match": "^INSERT", "engine": "any"}
    POST   /change      {"pragmas": {"journal_mode": "WAL"}}: on every new connection of the
                        SQLite engines from now on (the pool is reopened); not undone
    DELETE /            remove every armed fault; answers what each injected

It runs on its own thread, so a service whose event loop is stalled still takes and drops
faults on time. `FaultControl` (below) is the client the battery and the report use.

Without SQLITE_FAULTS_CONTROL the plugin still registers engines (for tests in the same
process: `registered_engines()`) and opens no port.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import threading
import weakref
from collections.abc import AsyncIterator
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
from sqlalchemy import Engine, event
from sqlalchemy.engine import URL, CreateEnginePlugin

from .diagnostics import diagnose
from .errors import SqliteFaultsError
from .ports import free_port
from .slow import SlowStatements, StallAfterStatement
from .sql_errors import InjectSqlError

CONTROL_ENV = "SQLITE_FAULTS_CONTROL"
_PRAGMA_NAME = re.compile(r"[a-z_]+")
_PRAGMA_VALUE = re.compile(r"[A-Za-z0-9_]+")
PLUGIN_NAME = "sqlite_faults"


class FaultEnginePlugin(CreateEnginePlugin):
    """Registered under `sqlalchemy.plugins` as "sqlite_faults" (toolkit/pyproject.toml)."""

    def update_url(self, url: URL) -> URL:
        # SQLAlchemy's base raises NotImplementedError; the plugin takes no URL parameters of
        # its own (SQLAlchemy itself removes `plugin=`), so the URL passes on unchanged.
        return url

    def engine_created(self, engine: Engine) -> None:
        _registry.add(engine)
        address = os.environ.get(CONTROL_ENV)
        if address:
            _registry.serve(address)


def with_plugin(url: str) -> str:
    """`url` with `plugin=sqlite_faults` added to its query."""
    if f"plugin={PLUGIN_NAME}" in url:
        return url
    return url + ("&" if "?" in url else "?") + f"plugin={PLUGIN_NAME}"


class _Registry:
    def __init__(self) -> None:
        self._engines: list[weakref.ref[Engine]] = []
        self._lock = threading.Lock()
        self._armed = ExitStack()
        self._active: list[Any] = []
        self._server: ThreadingHTTPServer | None = None

    def add(self, engine: Engine) -> None:
        with self._lock:
            self._engines.append(weakref.ref(engine))

    def engines(self) -> list[Engine]:
        with self._lock:
            return [e for ref in self._engines if (e := ref()) is not None]

    def pick(self, which: Any) -> list[Engine]:
        engines = self.engines()
        if which in (None, "any"):
            return engines
        if isinstance(which, int) and 0 <= which < len(engines):
            return [engines[which]]
        raise ValueError(f"no engine {which!r}: {len(engines)} registered")

    def arm(self, kind: str, spec: dict[str, Any]) -> int:
        engines = self.pick(spec.get("engine"))
        if not engines:
            raise LookupError("no engine was built from a URL with ?plugin=sqlite_faults")
        with self._lock:
            for engine in engines:
                self._active.append(self._armed.enter_context(_make_fault(engine, kind, spec)))
            return len(self._active)

    def change(self, spec: dict[str, Any]) -> int:
        """Apply PRAGMAs to every new connection of each SQLite engine (a 'connect' listener)
        and reopen its pool, so every connection has them: a change the report can make
        from outside, to run a scenario again without a confirmed cause (a counterfactual).
        Not undone: the counterfactual runs on a service of its own."""
        pragmas = spec.get("pragmas") or {}
        if not isinstance(pragmas, dict) or not pragmas or not all(
                _PRAGMA_NAME.fullmatch(str(k)) and _PRAGMA_VALUE.fullmatch(str(v))
                for k, v in pragmas.items()):
            raise ValueError('a change is {"pragmas": {"name": "value", ...}} with plain '
                             "names and values")
        engines = [e for e in self.pick(spec.get("engine")) if e.dialect.name == "sqlite"]
        if not engines:
            raise LookupError("no SQLite engine was built from a URL with ?plugin=sqlite_faults")
        statements = [f"PRAGMA {name} = {value}" for name, value in pragmas.items()]

        def apply(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            try:
                for statement in statements:
                    cursor.execute(statement)
            finally:
                cursor.close()

        for engine in engines:
            event.listen(engine, "connect", apply)
            engine.dispose()  # connections in use are closed when they come back
        return len(engines)

    def diagnostics(self) -> list[dict[str, Any]]:
        answers = []
        for index, engine in enumerate(self.engines()):
            try:
                found: dict[str, Any] = diagnose(engine).as_dict()
            except Exception as exc:  # a database that cannot be opened is an answer too
                found = {"error": f"{type(exc).__name__}: {exc}"}
            answers.append({"id": index, **found})
        return answers

    def status(self) -> list[dict[str, Any]]:
        with self._lock:
            return [{"fault": type(f).__name__, "injected": getattr(f, "injected", None),
                     "started": getattr(f, "started", None),
                     "stalls": getattr(f, "stalls", None)} for f in self._active]

    def disarm(self) -> list[dict[str, Any]]:
        report = self.status()
        with self._lock:
            self._armed.close()
            self._armed = ExitStack()
            self._active.clear()
            return report

    def serve(self, address: str) -> None:
        with self._lock:
            if self._server is not None:
                return
            host, _, port = address.rpartition(":")
            server = ThreadingHTTPServer((host or "127.0.0.1", int(port)), _Handler)
            server.daemon_threads = True
            self._server = server
        threading.Thread(target=server.serve_forever, name="sqlite-faults-control",
                         daemon=True).start()


_registry = _Registry()


def registered_engines() -> list[Engine]:
    """Engines built in this process from a URL with ?plugin=sqlite_faults."""
    return _registry.engines()


def _make_fault(engine: Engine, kind: str, spec: dict[str, Any]) -> Any:
    match = spec.get("match")
    if kind == "sql-error":
        return InjectSqlError(
            engine, str(spec["kind"]), at=spec.get("at", "statement"), match=match,
            times=spec.get("times"), probability=float(spec.get("probability", 1.0)),
            rng=random.Random(spec.get("seed", 0)))
    if kind == "slow":
        return SlowStatements(engine, float(spec["seconds"]), match)
    if kind == "stall":
        return StallAfterStatement(engine, float(spec["seconds"]), match)
    raise ValueError(f"unknown fault {kind!r}")


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # the service's log is the service's

    def _answer(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/faults":
            return self._answer(200, _registry.status())
        if self.path == "/diagnostics":
            return self._answer(200, _registry.diagnostics())
        if self.path != "/engines":
            return self._answer(404, {"error": f"no {self.path}"})
        self._answer(200, [{"id": i, "url": e.url.render_as_string(hide_password=True),
                            "dialect": e.dialect.name}
                           for i, e in enumerate(_registry.engines())])

    def do_POST(self) -> None:
        kind = self.path.strip("/")
        try:
            length = int(self.headers.get("Content-Length") or 0)
            spec = json.loads(self.rfile.read(length) or b"{}")
            if kind == "change":
                return self._answer(200, {"changed": _registry.change(spec)})
            armed = _registry.arm(kind, spec)
        except (ValueError, KeyError, TypeError, LookupError) as exc:
            return self._answer(400, {"error": f"{type(exc).__name__}: {exc}"})
        self._answer(200, {"armed": armed})

    def do_DELETE(self) -> None:
        self._answer(200, {"disarmed": _registry.disarm()})


class NoEngineYet(SqliteFaultsError, RuntimeError):
    """A fault was armed before the service built an engine from its URL."""


class FaultControl:
    """The harness's side: arms and removes faults in a service started with the plugin.

        control = FaultControl.new()            # picks a free port
        env = {"SQLITE_FAULTS_CONTROL": control.address, "DATABASE_URL": with_plugin(url)}
        ...start the service with env...
        await control.arm("sql-error", kind="busy", probability=0.05, seed=7)
        await control.disarm()
    """

    def __init__(self, address: str, timeout_s: float = 2.0) -> None:
        self.address = address
        self.timeout_s = timeout_s  # a stalled control thread must not stretch a window

    @classmethod
    def new(cls) -> FaultControl:
        return cls(f"127.0.0.1:{free_port()}")

    @property
    def env(self) -> dict[str, str]:
        return {CONTROL_ENV: self.address}

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=f"http://{self.address}", timeout=self.timeout_s)

    async def engines(self) -> list[dict[str, Any]]:
        """The engines built from a URL with the plugin; [] before the first one (the
        control server starts with it: a service may build its engine lazily)."""
        async with self._client() as client:
            try:
                response = await client.get("/engines")
            except httpx.ConnectError:
                return []
            response.raise_for_status()
            result: list[dict[str, Any]] = response.json()
            return result

    async def diagnostics(self) -> list[dict[str, Any]]:
        """Each engine's configuration as its service runs it (diagnostics.EngineDiagnosis as
        a dict, with the engine's "id"; "error" when it could not be read); [] before the
        first engine."""
        async with self._client() as client:
            try:
                response = await client.get("/diagnostics")
            except httpx.ConnectError:
                return []
            response.raise_for_status()
            result: list[dict[str, Any]] = response.json()
            return result

    async def change(self, **pragmas: str) -> int:
        """Apply `pragmas` to every connection of the service's SQLite engines from now on
        (the number of engines changed); for a service started for it alone."""
        async with self._client() as client:
            response = await client.post("/change", json={"pragmas": pragmas})
            if response.status_code == 400:
                raise ValueError(response.json()["error"])
            response.raise_for_status()
            return int(response.json()["changed"])

    async def faults(self) -> list[dict[str, Any]]:
        """What each armed fault did so far ("injected", "started", "stalls")."""
        async with self._client() as client:
            response = await client.get("/faults")
            response.raise_for_status()
            result: list[dict[str, Any]] = response.json()
            return result

    async def arm(self, fault: str, **spec: Any) -> int:
        async with self._client() as client:
            try:
                response = await client.post(f"/{fault}", json=spec)
            except httpx.ConnectError:
                raise NoEngineYet(f"cannot arm {fault}: no engine has been built from a URL "
                                  f"with the plugin yet (no control server at "
                                  f"{self.address})") from None
            if response.status_code == 400:
                raise ValueError(response.json()["error"])
            response.raise_for_status()
            return int(response.json()["armed"])

    @contextlib.asynccontextmanager
    async def armed(self, fault: str, **spec: Any) -> AsyncIterator[None]:
        """The fault armed for the body of the `async with`; removed on the way out, also
        when the body fails."""
        await self.arm(fault, **spec)
        try:
            yield
        finally:
            await self.disarm()

    async def disarm(self) -> list[dict[str, Any]]:
        """Remove every armed fault; [] when no engine (so no fault) exists yet."""
        async with self._client() as client:
            try:
                response = await client.delete("/")
            except httpx.ConnectError:
                return []
            response.raise_for_status()
            result: list[dict[str, Any]] = response.json()["disarmed"]
            return result
