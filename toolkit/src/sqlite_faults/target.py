"""A service under test, described as data: how to start it, where its database is, and one
write and one read request. The battery, the report and the harness all take this shape, so
they judge a stranger's service the way they judge ours.

A target file (TOML) is all a user writes; the smallest one:

    app = "myservice.main:app"          # module:app, or module:factory with factory = true
    database_url_env = "DATABASE_URL"   # the variable the service reads its database URL from
    ready = "GET /health"               # answers 2xx once the service is up

    [write]
    request = "POST /items/"
    json = { title = "{unique}", secret = "{secret}" }
    id_field = "id"                     # the response field that holds the new id

    [read]
    request = "GET /items/{id}"

Everything else is optional (see `docs/toolkit.md` for the whole table): `name`, `factory`,
`database_url` (the URL's shape, "{path}" for the file; default "sqlite:///{path}"),
`root` (the folder the app is imported from; default: the target file's folder), `env`,
`launcher` (a command taking uvicorn's --host/--port flags, in place of plain uvicorn),
`deadline_s` (the service's own DB deadline, if it states one), `probe` (the cheap request
the report's load mixes in; default: `ready`), `loop_probe` (a request that touches no
database; default `GET /openapi.json`), `io_threads`, `[write] idempotency_header`,
`[database]` (`table`, `unique_column`, `id_column`, `keys_table`, `key_column`,
`key_ref_column`) for the ledger's table-level checks (duplicates, phantom rows), and
`[metrics]` (`request`, `busy`, `capacity`: Prometheus gauges of DB calls in flight and of
lane workers) for the report's check that slow clients do not tie up the database lanes.

In the write body, "{unique}" becomes a fresh unique string per request and "{secret}" a
fresh password-like string; the read path's "{id}" becomes the id the write returned.
"""

from __future__ import annotations

import shlex
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import SqliteFaultsError


class TargetError(SqliteFaultsError, ValueError):
    """The target description is incomplete or inconsistent; the message says what to fix."""


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # may hold "{id}" (read)

    @classmethod
    def parse(cls, text: str, where: str) -> Request:
        parts = text.split(None, 1)
        if len(parts) != 2 or not parts[1].startswith("/"):
            raise TargetError(f"{where} must be 'METHOD /path', got {text!r}")
        return cls(parts[0].upper(), parts[1])

    @property
    def label(self) -> str:
        return f"{self.method} {self.path}"


@dataclass(frozen=True)
class Table:
    """Where the written rows live, for the ledger's checks that need the database itself."""

    table: str
    unique_column: str  # holds the write's "{unique}" value
    id_column: str = "id"
    keys_table: str | None = None  # idempotency keys, when the service keeps them
    key_column: str = "key"
    key_ref_column: str = "user_id"


@dataclass(frozen=True)
class WriteContract:
    """One write request and what its answer means; the ledger speaks only this."""

    request: Request
    body: dict[str, Any]
    id_field: str
    read: Request
    idempotency_header: str | None = None
    table: Table | None = None

    def body_for(self, unique: str, secret: str) -> dict[str, Any]:
        body: dict[str, Any] = _fill(self.body, unique, secret)
        return body

    def read_path(self, new_id: Any) -> str:
        return self.read.path.replace("{id}", str(new_id))

    @property
    def unique_field(self) -> str | None:
        """The top-level body field that carries "{unique}" (echoed in the answer, checked
        on read-back), if there is one."""
        for name, value in self.body.items():
            if value == "{unique}":
                return name
        return None


@dataclass(frozen=True)
class LaneMetrics:
    """Where the service says how busy its database lanes are (Prometheus text): the report
    samples these while a slow network holds the clients' connections open, to show the
    lanes are not tied up by them."""

    request: Request  # e.g. GET /metrics
    busy: str  # a gauge of DB calls in flight (summed over its labels)
    capacity: str  # a gauge of the lanes' workers (summed over its labels)


@dataclass(frozen=True)
class Target:
    name: str
    app: str | None  # import string; None when `launcher` starts the service itself
    write: WriteContract
    ready: Request = Request("GET", "/")
    # The cheap request the load mixes in beside writes and reads (default: `ready`).
    probe: Request | None = None
    # A request that touches no database, for "the event loop keeps answering while DB
    # calls are stuck" (FastAPI serves its schema at /openapi.json unless told not to).
    loop_probe: Request = Request("GET", "/openapi.json")
    factory: bool = False
    root: Path = field(default_factory=Path.cwd)
    database_url_env: str = "DATABASE_URL"
    # The URL the service is given, "{path}" standing for its database file: a service on
    # another driver says so here, e.g. "sqlite+aiosqlite:///{path}".
    database_url: str = "sqlite:///{path}"
    env: dict[str, str] = field(default_factory=dict)
    launcher: list[str] | None = None
    deadline_s: float | None = None
    # Which threads do the database I/O, for syscall faults aimed at them: "workers" (every
    # thread but the main one: a service that keeps its event loop free of I/O) or "all".
    io_threads: str = "all"
    metrics: LaneMetrics | None = None

    @property
    def read(self) -> Request:
        return self.write.read

    @property
    def probe_request(self) -> Request:
        return self.probe or self.ready

    @property
    def ready_path(self) -> str:
        return self.ready.path

    def launch_command(self) -> list[str] | None:
        """The launcher with the app's import string appended where it says "{app}"."""
        if self.launcher is None:
            return None
        return [sys.executable if part == "{python}" else part.replace("{app}", self.app or "")
                for part in self.launcher]


def load_target(path: str | Path) -> Target:
    """Read a target file; raises TargetError naming the missing or wrong key."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise TargetError(f"no target file at {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise TargetError(f"{path} is not valid TOML: {exc}") from None
    return target_from_dict(data, base=path.resolve().parent, where=str(path))


_TOP = {"name", "app", "factory", "root", "database_url_env", "database_url", "ready",
        "probe", "loop_probe",
        "env",
        "launcher",
        "deadline_s", "io_threads", "write", "read", "database", "metrics"}


def target_from_dict(data: dict[str, Any], base: Path, where: str = "target") -> Target:
    unknown = set(data) - _TOP
    if unknown:
        raise TargetError(f"{where}: unknown keys {sorted(unknown)}; known: {sorted(_TOP)}")
    app = data.get("app")
    launcher = data.get("launcher")
    if app is None and launcher is None:
        raise TargetError(f"{where}: 'app' is required ('module:app' or 'module:factory')")
    if isinstance(launcher, str):
        launcher = shlex.split(launcher)
    write = data.get("write")
    read = data.get("read")
    if not isinstance(write, dict) or "request" not in write:
        raise TargetError(f"{where}: [write] with request = 'POST /path' is required")
    if not isinstance(read, dict) or "request" not in read:
        raise TargetError(f"{where}: [read] with request = 'GET /path/{{id}}' is required")
    read_request = Request.parse(read["request"], f"{where}: [read] request")
    if "{id}" not in read_request.path:
        raise TargetError(f"{where}: [read] request must contain {{id}}, where the new id goes")
    if "id_field" not in write:
        raise TargetError(f"{where}: [write] id_field (the response field with the new id) "
                          "is required")
    database = data.get("database")
    table = Table(**database) if isinstance(database, dict) else None
    contract = WriteContract(
        request=Request.parse(write["request"], f"{where}: [write] request"),
        body=dict(write.get("json", {})), id_field=str(write["id_field"]), read=read_request,
        idempotency_header=write.get("idempotency_header"), table=table,
    )
    if contract.unique_field is None:
        raise TargetError(f"{where}: [write] json needs one field whose value is \"{{unique}}\" "
                          "(each write must be told apart, e.g. name = \"{unique}\")")
    io_threads = data.get("io_threads", "all")
    if io_threads not in ("all", "workers"):
        raise TargetError(f"{where}: io_threads must be 'all' or 'workers'")
    root = Path(data["root"]) if "root" in data else Path(".")
    metrics = _lane_metrics(data.get("metrics"), where)
    return Target(
        name=str(data.get("name") or (app or "service").split(":")[0].split(".")[-1]),
        app=app, write=contract,
        ready=Request.parse(data.get("ready", "GET /"), f"{where}: ready"),
        probe=Request.parse(data["probe"], f"{where}: probe") if "probe" in data else None,
        loop_probe=Request.parse(data.get("loop_probe", "GET /openapi.json"),
                                 f"{where}: loop_probe"),
        factory=bool(data.get("factory", False)),
        root=(base / root).resolve(),
        database_url_env=str(data.get("database_url_env", "DATABASE_URL")),
        database_url=_url_template(data.get("database_url", "sqlite:///{path}"), where),
        env={str(k): str(v) for k, v in data.get("env", {}).items()},
        launcher=launcher, deadline_s=data.get("deadline_s"), io_threads=io_threads,
        metrics=metrics,
    )


def _lane_metrics(data: Any, where: str) -> LaneMetrics | None:
    if data is None:
        return None
    if not isinstance(data, dict) or set(data) != {"request", "busy", "capacity"}:
        raise TargetError(f"{where}: [metrics] takes request = 'GET /metrics', busy = "
                          "'<gauge of DB calls in flight>' and capacity = '<gauge of lane "
                          f"workers>', got {data!r}")
    return LaneMetrics(Request.parse(data["request"], f"{where}: [metrics] request"),
                       str(data["busy"]), str(data["capacity"]))


def _url_template(url: str, where: str) -> str:
    if "{path}" not in url:
        raise TargetError(f"{where}: database_url must contain {{path}}, where the battery puts "
                          f"the database file (e.g. 'sqlite:///{{path}}'), got {url!r}")
    return url


def _fill(value: Any, unique: str, secret: str) -> Any:
    if isinstance(value, str):
        return value.replace("{unique}", unique).replace("{secret}", secret)
    if isinstance(value, dict):
        return {k: _fill(v, unique, secret) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, unique, secret) for v in value]
    return value
