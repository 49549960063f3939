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

A request carries its data wherever the service takes it, each part a template: the path
(`request = "PUT /items/{unique}"`), `query = {...}`, a JSON body `json = {...}` (nested too),
a form body `form = {...}` (application/x-www-form-urlencoded) and `headers = {...}`. In
them "{unique}" becomes a fresh unique string per write, "{secret}" a fresh password-like
string, "{id}" the id the write returned, and "{env:NAME}" the value of the environment
variable NAME (a token for an Authorization header: read when the request is sent, never
written to a report). The new id comes from `id_field` (a dotted path for a nested field,
"data.id") or `id_header` (e.g. "Location": its last path segment).

Everything else is optional (see `docs/toolkit.md` for the whole table): `name`, `factory`,
`server` ("uvicorn" for an ASGI app, "waitress" for a WSGI one) and `threads` (waitress's
worker threads), `database_url` (the URL's
shape, "{path}" for the file; default "sqlite:///{path}"), `root` (the folder the app is
imported from; default: the target file's folder), `env`, `launcher` (a command taking
uvicorn's --host/--port flags, in place of plain uvicorn), `deadline_s` (the service's own DB
deadline, if it states one), `probe` (the cheap request the report's load mixes in; default:
`ready`), `loop_probe` (a request that touches no database; default `GET /openapi.json`),
`io_threads`, `[write] idempotency_header`, `[read] expect` ("same": the read answers what
the write did; "unique": the read's answer carries the write's unique value), `[database]`
(`table`, `unique_column`, `id_column`, `keys_table`, `key_column`, `key_ref_column`) for
the ledger's table-level checks (duplicates, phantom rows), and `[metrics]` (`request`,
`busy`, `capacity`: Prometheus gauges of DB calls in flight and of lane workers) for the
report's check that slow clients do not tie up the database lanes.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import httpx

from .errors import SqliteFaultsError


class TargetError(SqliteFaultsError, ValueError):
    """The target description is incomplete or inconsistent; the message says what to fix."""


# "{unique}", "{secret}", "{id}" and "{env:NAME}"; any other {word} is a mistake, named.
_PLACEHOLDER = re.compile(r"\{(unique|secret|id|env:[A-Za-z_][A-Za-z0-9_]*)\}")
_ANY_BRACES = re.compile(r"\{([^{}]*)\}")
JSON_TYPE = "application/json"
FORM_TYPE = "application/x-www-form-urlencoded"


def _lookup(name: str, values: Mapping[str, Any]) -> Any:
    if name.startswith("env:"):
        variable = name[4:]
        if variable not in os.environ:
            raise TargetError(f"the target's request needs ${variable}, which is not set")
        return os.environ[variable]
    return values[name]


def _fill(value: Any, values: Mapping[str, Any], in_path: bool = False) -> Any:
    """`value` with its placeholders filled in. A string that is one placeholder whole keeps
    the value's type (an integer id stays an integer in a JSON body)."""
    if isinstance(value, str):
        whole = _PLACEHOLDER.fullmatch(value)
        if whole and not in_path:
            return _lookup(whole.group(1), values)
        return _PLACEHOLDER.sub(
            lambda m: quote(str(_lookup(m.group(1), values)), safe="") if in_path
            else str(_lookup(m.group(1), values)), value)
    if isinstance(value, dict):
        return {k: _fill(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, values) for v in value]
    return value


def _strings(value: Any) -> Iterator[str]:
    """Every string inside `value` (keys of a body excluded)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


@dataclass(frozen=True)
class Sendable:
    """One request ready to go: the template with its values filled in."""

    method: str
    url: str
    params: dict[str, str]
    headers: dict[str, str]
    content: bytes | None

    async def send(self, client: httpx.AsyncClient, headers: Mapping[str, str] | None = None,
                   **kwargs: Any) -> httpx.Response:
        return await client.request(self.method, self.url, params=self.params or None,
                                    content=self.content,
                                    headers={**self.headers, **(headers or {})}, **kwargs)


@dataclass(frozen=True)
class Request:
    """A request template: where the service takes its data (path, query, JSON or form body,
    headers), with placeholders for the values each request gets."""

    method: str
    path: str
    query: Mapping[str, Any] = field(default_factory=dict)
    json: Any = None  # None: no JSON body (a JSON null body is `json = "null"`: not needed)
    form: Mapping[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str, where: str) -> Request:
        parts = text.split(None, 1)
        if len(parts) != 2 or not parts[1].startswith("/"):
            raise TargetError(f"{where} must be 'METHOD /path', got {text!r}")
        return cls(parts[0].upper(), parts[1])

    @classmethod
    def from_table(cls, table: Mapping[str, Any], where: str) -> Request:
        """[write] or [read]: `request` and the optional `query`, `json`, `form`, `headers`."""
        request = cls.parse(str(table["request"]), f"{where} request")
        for part in ("query", "form", "headers"):
            if part in table and not isinstance(table[part], dict):
                raise TargetError(f"{where} {part} must be a table, e.g. {part} = {{ name = "
                                  f"\"{{unique}}\" }}, got {table[part]!r}")
        if "json" in table and "form" in table:
            raise TargetError(f"{where} takes a json or a form body, not both")
        made = replace(request, query=dict(table.get("query", {})), json=table.get("json"),
                       form=table.get("form"),
                       headers={str(k): str(v) for k, v in table.get("headers", {}).items()})
        for name in _ANY_BRACES.findall(" ".join(made.templates())):
            if not _PLACEHOLDER.fullmatch("{" + name + "}"):
                raise TargetError(f"{where}: unknown placeholder {{{name}}}; known: {{unique}}, "
                                  "{secret}, {id}, {env:NAME}")
        return made

    @property
    def label(self) -> str:
        """METHOD /path as written (templates, never values: no token reaches a report)."""
        return f"{self.method} {self.path}"

    def templates(self) -> list[str]:
        """Every string the request carries, for finding placeholders."""
        return [self.path, *_strings(dict(self.query)), *_strings(self.json),
                *_strings(dict(self.form or {})), *_strings(dict(self.headers))]

    def carries(self, placeholder: str) -> bool:
        return any(placeholder in text for text in self.templates())

    def render(self, **values: Any) -> Sendable:
        headers = {k: str(v) for k, v in _fill(dict(self.headers), values).items()}
        content = None
        if self.json is not None:
            content = json.dumps(_fill(self.json, values)).encode()
            headers.setdefault("Content-Type", JSON_TYPE)
        elif self.form is not None:
            content = urlencode(_fill(dict(self.form), values), doseq=True).encode()
            headers.setdefault("Content-Type", FORM_TYPE)
        params = {k: str(v) for k, v in _fill(dict(self.query), values).items()}
        return Sendable(self.method, _fill(self.path, values, in_path=True), params, headers,
                        content)


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
    read: Request
    id_field: str | None = "id"  # dotted for a nested field: "data.id"
    id_header: str | None = None  # or the header that names the new resource ("Location")
    # What a read-back must show: "same" (the write's answer, whole) or "unique" (the
    # write's unique value, somewhere in the read's answer).
    expect: str = "same"
    idempotency_header: str | None = None
    table: Table | None = None

    def write_request(self, unique: str, secret: str) -> Sendable:
        return self.request.render(unique=unique, secret=secret)

    def read_request(self, new_id: Any) -> Sendable:
        return self.read.render(id=new_id)

    def new_id(self, response: httpx.Response) -> Any:
        """The id a successful write answered with; KeyError, ValueError or TypeError when
        the answer carries none."""
        if self.id_header is not None:
            location = response.headers[self.id_header]
            new_id = location.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
            if not new_id:
                raise ValueError(f"no id in {self.id_header}: {location!r}")
            return new_id
        value: Any = response.json()
        for part in (self.id_field or "").split("."):
            value = value[int(part)] if isinstance(value, list) else value[part]
        if value is None or isinstance(value, (dict, list)):
            raise ValueError(f"{self.id_field} is not an id: {value!r}")
        return value

    def reads_back(self, written: Any, unique: str, read: Any) -> bool:
        """Whether a read's answer shows the write as it was acknowledged."""
        if self.expect == "same":
            return bool(read == written)
        return unique in _strings(read)

    @property
    def unique_part(self) -> str:
        """Where the write carries "{unique}": "json", "form", "query", "path" or "headers"."""
        for part, texts in (("json", list(_strings(self.request.json))),
                            ("form", list(_strings(dict(self.request.form or {})))),
                            ("query", list(_strings(dict(self.request.query)))),
                            ("path", [self.request.path]),
                            ("headers", list(_strings(dict(self.request.headers))))):
            if any("{unique}" in text for text in texts):
                return part
        return ""


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
    # What serves `app`: "uvicorn" (an ASGI app) or "waitress" (a WSGI callable).
    server: str = "uvicorn"
    threads: int | None = None  # waitress's worker threads (None: its default, 4)
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


SERVERS = ("uvicorn", "waitress")
_TOP = {"name", "app", "factory", "server", "threads", "root", "database_url_env",
        "database_url", "ready", "probe", "loop_probe", "env", "launcher", "deadline_s",
        "io_threads", "write", "read", "database", "metrics"}
_WRITE = {"request", "query", "json", "form", "headers", "id_field", "id_header",
          "idempotency_header"}
_READ = {"request", "query", "json", "form", "headers", "expect"}


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
    server = data.get("server", "uvicorn")
    if server not in SERVERS:
        raise TargetError(f"{where}: server must be one of {list(SERVERS)} (uvicorn for an "
                          f"ASGI app, waitress for a WSGI callable), got {server!r}")
    contract = _write_contract(data.get("write"), data.get("read"), data.get("database"), where)
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
        factory=bool(data.get("factory", False)), server=server,
        threads=_threads(data.get("threads"), server, where),
        root=(base / root).resolve(),
        database_url_env=str(data.get("database_url_env", "DATABASE_URL")),
        database_url=_url_template(data.get("database_url", "sqlite:///{path}"), where),
        env={str(k): str(v) for k, v in data.get("env", {}).items()},
        launcher=launcher, deadline_s=data.get("deadline_s"), io_threads=io_threads,
        metrics=metrics,
    )


def _write_contract(write: Any, read: Any, database: Any, where: str) -> WriteContract:
    if not isinstance(write, dict) or "request" not in write:
        raise TargetError(f"{where}: [write] with request = 'POST /path' is required")
    if not isinstance(read, dict) or "request" not in read:
        raise TargetError(f"{where}: [read] with request = 'GET /path/{{id}}' is required")
    for section, table, known in (("write", write, _WRITE), ("read", read, _READ)):
        if set(table) - known:
            raise TargetError(f"{where}: [{section}] unknown keys {sorted(set(table) - known)}; "
                              f"known: {sorted(known)}")
    read_request = Request.from_table(read, f"{where}: [read]")
    if not read_request.carries("{id}"):
        raise TargetError(f"{where}: [read] request must contain {{id}}, where the new id goes "
                          "(in its path, query or body)")
    if ("id_field" in write) == ("id_header" in write):
        raise TargetError(f"{where}: [write] id_field (the response field with the new id, "
                          "dotted when nested) or id_header (e.g. 'Location') is required: "
                          "one of them")
    expect = read.get("expect", "unique" if "id_header" in write else "same")
    if expect not in ("same", "unique"):
        raise TargetError(f"{where}: [read] expect must be 'same' (the read answers what the "
                          "write did) or 'unique' (it carries the write's unique value)")
    contract = WriteContract(
        request=Request.from_table(write, f"{where}: [write]"), read=read_request,
        id_field=str(write["id_field"]) if "id_field" in write else None,
        id_header=write.get("id_header"), expect=expect,
        idempotency_header=write.get("idempotency_header"),
        table=Table(**database) if isinstance(database, dict) else None,
    )
    if not contract.unique_part:
        raise TargetError(f"{where}: [write] needs \"{{unique}}\" in its path, query or body "
                          "(each write must be told apart, e.g. json = { name = \"{unique}\" })")
    return contract


def _threads(threads: Any, server: str, where: str) -> int | None:
    if threads is None:
        return None
    if server != "waitress" or not isinstance(threads, int) or threads < 1:
        raise TargetError(f"{where}: threads (a positive integer) is waitress's worker count, "
                          f"for server = 'waitress'; got {threads!r} with server = {server!r}")
    return threads


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
