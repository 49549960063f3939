"""One runnable example per fixture of the pytest plugin (docs/toolkit.md shows them), written
as a stranger would: only the plugin's fixtures and sqlite_faults' public API, against a
plain SQLAlchemy engine or a service described by a target file (here our naive example,
examples/targets/naive.toml, and the hardened service for /metrics)."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import OperationalError
from sqlite_faults import (
    InjectSqlError,
    LockHolder,
    ServerProcess,
    SlowStatements,
    StallAfterStatement,
    WriteLedger,
    load_target,
    settles,
    wait_until,
)
from sqlite_faults.traffic import LoadGenerator

from examples.targets import HARDENED, NAIVE

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'example.db'}")
    with engine.begin() as conn:
        conn.execute(text("PRAGMA journal_mode=WAL"))
        conn.execute(text("CREATE TABLE items (id INTEGER PRIMARY KEY, title TEXT)"))
    yield engine
    engine.dispose()


def test_fault_seed_and_fault_rng(fault_seed: int, fault_rng: random.Random) -> None:
    # fault_rng is seeded from --fault-seed and the test id: the same run, the same draws.
    assert isinstance(fault_seed, int)
    assert 0 <= fault_rng.random() < 1


def test_sqlite_synchronous(sqlite_synchronous: str) -> None:
    # --sqlite-synchronous FULL reruns a suite at the other durability level.
    assert sqlite_synchronous in ("NORMAL", "FULL")


def test_inject_sql_error(engine: Engine,
                          inject_sql_error: Callable[..., InjectSqlError]) -> None:
    fault = inject_sql_error(engine, "busy", match=r"^INSERT", times=1)
    with engine.connect() as conn:
        with pytest.raises(OperationalError, match="database is locked"):
            conn.execute(text("INSERT INTO items (title) VALUES ('a')"))
        conn.execute(text("INSERT INTO items (title) VALUES ('b')"))  # times=1: once only
    assert fault.injected == 1


def test_slow_statements(engine: Engine, slow_statements: Callable[..., SlowStatements]) -> None:
    slow = slow_statements(engine, 0.2, match=r"^SELECT")
    started = time.monotonic()
    with engine.connect() as conn:
        conn.execute(text("SELECT count(*) FROM items")).scalar_one()
    assert time.monotonic() - started >= 0.2  # it looped inside SQLite first
    assert slow.started == 1


def test_a_slowed_statement_waits_off_the_cpu(
    engine: Engine, slow_statements: Callable[..., SlowStatements]
) -> None:
    """A slowed statement is slow the way a scan waiting on the disk is: it leaves the CPUs
    to the service and the load generator (a busy loop would use all of one, and a machine
    busier than this one can only lower the share measured here)."""
    slow_statements(engine, 0.5, match=r"^SELECT")
    wall, cpu = time.monotonic(), time.process_time()
    with engine.connect() as conn:
        conn.execute(text("SELECT count(*) FROM items")).scalar_one()
    wall, cpu = time.monotonic() - wall, time.process_time() - cpu
    assert wall >= 0.5
    assert cpu / wall < 0.3, f"the slowed statement used {cpu / wall:.0%} of a CPU"


def test_stall_statements(engine: Engine,
                          stall_statements: Callable[..., StallAfterStatement]) -> None:
    release = threading.Event()
    stall = stall_statements(engine, 30.0, match=r"^SELECT", until=release)

    def read() -> None:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    reader = threading.Thread(target=read)
    reader.start()
    asyncio.run(wait_until(lambda: stall.stalls == 1, "the reader stalled"))
    release.set()  # the stall ends when the test says so (teardown releases it too)
    reader.join(timeout=30)
    assert not reader.is_alive()


def test_lock_holder(engine: Engine, tmp_path: Path,
                     lock_holder: Callable[..., LockHolder]) -> None:
    holder = lock_holder(tmp_path / "example.db", "immediate")
    holder.acquire()  # another process now holds the write lock
    other = sqlite3.connect(tmp_path / "example.db", timeout=0, isolation_level=None)
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
        holder.release()
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
    finally:
        other.close()


def test_service_server(service_server: Callable[..., ServerProcess]) -> None:
    server = service_server(load_target(NAIVE), with_faults=False)
    assert httpx.get(server.base_url + "/", timeout=10).status_code == 200


@pytest.mark.needs_tool("strace")
def test_syscall_fault(service_server: Callable[..., ServerProcess],
                       syscall_fault: Callable[..., object]) -> None:
    target = load_target(NAIVE)
    server = service_server(target, with_faults=False)
    db = server.db_path.resolve()
    syscall_fault(server.pid, [db, db.with_name(db.name + "-journal")],
                  ["pwrite64", "write"], "error=EIO")
    body = {"name": "syscall-example", "password": "pw"}
    response = httpx.post(server.base_url + "/users/", json=body, timeout=30)
    assert response.status_code >= 500  # the naive service has no better answer for EIO


@pytest.mark.needs_tool("strace")
def test_disk_full(service_server: Callable[..., ServerProcess],
                   disk_full: Callable[[ServerProcess], object]) -> None:
    target = load_target(NAIVE)
    server = service_server(target, with_faults=False)
    disk_full(server)  # until teardown
    body = {"name": "disk-full-example", "password": "pw"}
    assert httpx.post(server.base_url + "/users/", json=body, timeout=30).status_code >= 500


@pytest.mark.needs_tool("cc")
def test_slow_sync(service_server: Callable[..., ServerProcess], slow_sync: object) -> None:
    target = load_target(NAIVE)
    server = service_server(target, with_faults=False,
                            env=slow_sync.env(match="users.db"))  # type: ignore[attr-defined]
    body = {"name": "slow-sync-example", "password": "pw"}
    with slow_sync.window(200_000, 200_000):  # type: ignore[attr-defined]
        started = time.monotonic()
        assert httpx.post(server.base_url + "/users/", json=body, timeout=30).is_success
        assert time.monotonic() - started >= 0.2  # a rollback-journal commit syncs


@pytest.mark.needs_tool("apsw")
def test_power_loss_vfs(tmp_path: Path, power_loss_vfs: object) -> None:
    import apsw
    from sqlite_faults.powerloss.model import Sync, Write

    conn = apsw.Connection(str(tmp_path / "vfs.db"),
                           vfs=power_loss_vfs.vfs_name)  # type: ignore[attr-defined]
    conn.execute("CREATE TABLE t (x)")
    conn.execute("INSERT INTO t VALUES (1)")
    conn.close()
    kinds = {type(e) for e in power_loss_vfs.recorder.events}  # type: ignore[attr-defined]
    assert {Write, Sync} <= kinds  # every write and sync, to cut the power between


def test_write_ledger(service_server: Callable[..., ServerProcess],
                      write_ledger: Callable[..., WriteLedger]) -> None:
    target = load_target(NAIVE)
    server = service_server(target, with_faults=False)
    ledger = write_ledger(target.write, prefix="example")

    async def writes_then_kill() -> None:
        writers = LoadGenerator.writers(ledger, 4, random.Random(1), stop_when_gone=True)
        writers.start(server.base_url)
        await wait_until(lambda: ledger.counts()["acknowledged"] >= 10, "10 writes acked")
        server.kill()  # SIGKILL under load
        await writers.stop()
    asyncio.run(writes_then_kill())
    server.start(same_port=True)
    report = asyncio.run(ledger.check(server.base_url, server.db_path))
    assert report.acknowledged >= 10 and report.lost == 0 and report.duplicated == 0


def test_leak_check(service_server: Callable[..., ServerProcess],
                    leak_check: Callable[[int], object]) -> None:
    server = service_server(load_target(NAIVE), with_faults=False)
    baseline = leak_check(server.pid)
    for _ in range(20):
        httpx.get(server.base_url + "/users/999999", timeout=10)
    asyncio.run(settles(server.pid, baseline, timeout_s=10))  # type: ignore[arg-type]


def test_metrics_reader(service_server: Callable[..., ServerProcess],
                        metrics_reader: Callable[..., object]) -> None:
    server = service_server(load_target(HARDENED), with_faults=False)
    httpx.get(server.base_url + "/", timeout=10)
    snapshot = asyncio.run(metrics_reader(server.base_url))  # type: ignore[arg-type]
    # GET / made one DB round trip (the readiness check's), counted by outcome.
    assert snapshot.value("db_calls_total", outcome="ok") >= 1  # type: ignore[attr-defined]
    parsed = metrics_reader.parse("up 1\n")  # type: ignore[attr-defined]
    assert parsed.value("up") == 1
