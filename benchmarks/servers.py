"""The services the benchmark runs, where they run (which CPUs), and how they are started.

A *variant* is one server process to measure: a service (its app), a backend and, for the
hardened service, a synchronous level (`hardened-full` is the hardened service under
`SQLITE_SYNCHRONOUS=FULL`). A *CPU split* says which CPUs the servers get and which the load
generator gets: servers run under `taskset -c SERVER_CPUS` (taskset execs the server, so the
pid stays the server's own), wrk and everything else the benchmark starts on the others.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from sqlite_faults.postgres_server import PostgresServer
from sqlite_faults.server import ServerProcess

from examples.targets import QUICK_ENV

SERVICES = {
    # The hardened service with the hash-only reference route (benchmarks/bench_app.py).
    "hardened": "benchmarks.bench_app:create_app",
    # Peers: what a user would otherwise write, with the same API.
    "tutorial": "examples.tutorial_service.app:create_app",
    "async": "examples.async_service.app:create_app",
    # The seed report's baseline; it stalls at 16 clients (docs/performance.md).
    "naive": "examples.naive_service.app:create_app",
}
# Services written for SQLite alone: left out of other backends.
SQLITE_ONLY = frozenset({"tutorial", "async", "naive"})
SEED_USERS = 200
PASSWORD = "benchmark password"


@dataclass(frozen=True)
class Variant:
    service: str
    backend: str = "sqlite"
    synchronous: str = "NORMAL"  # SQLITE_SYNCHRONOUS of the hardened service on SQLite

    @property
    def label(self) -> str:
        return self.service if self.synchronous == "NORMAL" else f"{self.service}-full"

    @property
    def env(self) -> dict[str, str]:
        # Set even at the default, so an SQLITE_SYNCHRONOUS in the caller's shell cannot leak in.
        return {"SQLITE_SYNCHRONOUS": self.synchronous} if self.service == "hardened" else {}


@dataclass(frozen=True)
class CpuSplit:
    """Which CPUs the servers and the load generator get; None: not pinned."""

    server: tuple[int, ...] | None
    client: tuple[int, ...] | None

    @property
    def pinned(self) -> bool:
        return self.server is not None

    @property
    def server_cpus(self) -> str:
        return "unpinned" if self.server is None else _cpu_list(self.server)

    @property
    def client_cpus(self) -> str | None:
        return None if self.client is None else _cpu_list(self.client)

    @property
    def wrapper(self) -> list[str] | None:
        return None if self.server is None else ["taskset", "-c", self.server_cpus]

    def describe(self) -> str:
        if self.server is None:
            return "unpinned: servers and wrk share every CPU"
        return (f"server on CPU {self.server_cpus} ({len(self.server)} core"
                f"{'s' if len(self.server) > 1 else ''}), wrk on CPU {self.client_cpus}")

    def one_core(self) -> CpuSplit:
        assert self.server is not None
        return CpuSplit(self.server[:1], self.client)


def _cpu_list(cpus: tuple[int, ...]) -> str:
    return ",".join(str(c) for c in cpus)


def plan_cpus(spec: str) -> CpuSplit:
    """`auto`: the last usable CPU for wrk, the others for the server (on 2 CPUs: server on
    one core, wrk on the other); `off`: no pinning; else the server's CPUs (`0` or `0,1` or
    `0-2`), wrk on the rest."""
    usable = tuple(sorted(os.sched_getaffinity(0)))
    if spec == "off":
        return CpuSplit(None, None)
    if spec == "auto":
        if len(usable) < 2:
            print("only one usable CPU: servers and wrk are not pinned", file=sys.stderr)
            return CpuSplit(None, None)
        return CpuSplit(usable[:-1], usable[-1:])
    server = _parse_cpus(spec)
    client = tuple(c for c in usable if c not in server)
    if not set(server) <= set(usable) or not client:
        raise SystemExit(f"--server-cpus {spec}: choose among CPUs {_cpu_list(usable)} and "
                         "leave at least one for wrk")
    return CpuSplit(server, client)


def _parse_cpus(spec: str) -> tuple[int, ...]:
    cpus: set[int] = set()
    for part in spec.split(","):
        first, _, last = part.strip().partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return tuple(sorted(cpus))


def cpu_sets(split: CpuSplit) -> list[CpuSplit]:
    """The split asked for, then, unless it already gives the server exactly one core, the
    same with the server on one core (the peers' comparison is run again there)."""
    if split.server is not None and len(split.server) == 1:
        return [split]
    base = split if split.pinned else plan_cpus("auto")
    if not base.pinned:
        return [split]  # a single usable CPU: there is nothing to pin to
    return [split, base.one_core()]


@contextlib.contextmanager
def affinity(cpus: tuple[int, ...] | None) -> Iterator[None]:
    """Run the block (and every process it starts) on `cpus`; restores the old set."""
    if cpus is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


# How each service is started when it is served "as deployed" (`serving(deployed=True)`): the
# hardened service through its own launcher, app/serve.py, which adds the limits at the door
# and admission control that bare `uvicorn APP --factory` leaves out. The others have no
# launcher of their own: bare uvicorn is how they are deployed.
DEPLOYED_LAUNCHERS = {
    "hardened": [sys.executable, "-m", "app.serve", "--app", SERVICES["hardened"]],
}


@contextlib.contextmanager
def serving(variant: Variant, database_url: str | None = None,
            wrapper: list[str] | None = None, env: dict[str, str] | None = None,
            deployed: bool = False) -> Iterator[ServerProcess]:
    """A server on an SQLite file in a temporary folder, or on `database_url`. `env` replaces
    QUICK_ENV (the cheap hash and quiet log every other benchmark uses); `deployed` starts the
    service through its own launcher where it has one (DEPLOYED_LAUNCHERS)."""
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        env = {**(QUICK_ENV if env is None else env), **variant.env}
        if database_url:
            env["DATABASE_URL"] = database_url
        launcher = DEPLOYED_LAUNCHERS.get(variant.service) if deployed else None
        server = ServerProcess(Path(tmp), app=SERVICES[variant.service], env=env,
                               wrapper=wrapper, launcher=launcher)
        server.start()
        try:
            yield server
        except BaseException:
            print(f"server log tail ({variant.label}):\n{server.log_tail(20)}", file=sys.stderr)
            raise
        finally:
            server.kill()


@dataclass
class Served:
    """A running server, the ids of the users seeded into it, how often it was restarted."""

    server: ServerProcess
    ids: tuple[int, int] = (0, 0)
    restarts: int = 0

    def restart(self) -> None:
        """A fresh process on the same data folder (after a stall)."""
        self.server.kill()
        self.server.start()
        self.restarts += 1


@contextlib.contextmanager
def serve_all(variants: list[Variant], split: CpuSplit, postgres: PostgresServer | None = None,
              tag: str = "") -> Iterator[dict[Variant, Served]]:
    """Every variant's server at once (each idles while another is measured), seeded with
    SEED_USERS users. On the postgres backend each gets a database of its own on `postgres`."""
    with contextlib.ExitStack() as stack:
        served = {}
        for variant in variants:
            url = None
            if variant.backend == "postgres":
                assert postgres is not None
                url = postgres.url(postgres.create_database(f"bench_{variant.service}{tag}"))
            served[variant] = Served(stack.enter_context(serving(variant, url, split.wrapper)))
        for entry in served.values():
            entry.ids = seed_users(entry.server.base_url, SEED_USERS, "seed")
        yield served


def seed_users(base_url: str, count: int, prefix: str) -> tuple[int, int]:
    """Create `count` users; returns the (first, last) id, which must be contiguous."""
    ids = []
    with httpx.Client(base_url=base_url, timeout=10.0) as client:
        for i in range(count):
            response = client.post("/users/", json={"name": f"{prefix}-{i}",
                                                     "password": PASSWORD})
            response.raise_for_status()
            ids.append(response.json()["id"])
    if ids != list(range(ids[0], ids[0] + count)):
        raise RuntimeError("seeded ids are not contiguous; the GET script assumes they are")
    return ids[0], ids[-1]
