"""The pytest plugin (entry point `pytest11: sqlite_faults`): options, markers and one fixture
per fault of the toolkit. Every fixture removes its fault at teardown, also when the test
failed, so one test's fault never reaches the next.

Options (each also read from the environment, for tox and CI):
  --fault-seed N             seed of every random choice a test makes; printed in the header
                             and with every failure (FAULT_SEED)
  --sqlite-synchronous M     NORMAL or FULL: the durability level a suite runs its service
                             under (SQLITE_SYNCHRONOUS_UNDER_TEST); read it with the
                             `sqlite_synchronous` fixture
  --target FILE              a target file (sqlite_faults/target.py): the service the
                             battery judges (SQLITE_FAULTS_TARGET)

Markers:
  needs_tool(name, ...)      skip, naming the Debian package, when a tool is missing
                             (strace, fiu-run, cc, apsw)
  battery                    a check of the ready battery (sqlite_faults.battery)

Fixtures: fault_seed, fault_rng, sqlite_synchronous, fault_target, inject_sql_error,
slow_statements, stall_statements, lock_holder, syscall_fault, disk_full, slow_sync,
power_loss_vfs, service_server, write_ledger, leak_check, metrics_reader. docs/toolkit.md
has one runnable example of each (tests/toolkit/test_fixture_examples.py runs them).
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import os
import random
import threading
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from .leaks import Resources
from .ledger import WriteLedger
from .libfiu import FiuFault, fiu_available
from .locks import LockHolder
from .observe import MetricsSnapshot, scrape
from .server import ServerProcess
from .slow import SlowStatements, StallAfterStatement
from .slowsync import SlowSync, compiler
from .sql_errors import InjectSqlError
from .syscalls import AttachedSyscallFault, SyscallFault, strace_path
from .target import Target, TargetError, WriteContract, load_target

# Tool -> (how to tell it is there, what to install).
TOOLS: dict[str, tuple[Callable[[], bool], str]] = {
    "strace": (lambda: strace_path() is not None, "apt-get install strace"),
    "fiu-run": (fiu_available, "apt-get install fiu-utils"),
    "cc": (lambda: compiler() is not None, "apt-get install gcc"),
    "apsw": (lambda: importlib.util.find_spec("apsw") is not None,
             "pip install 'pytest-sqlite-faults[powerloss]'"),
}

_SEED = pytest.StashKey[int]()
# The servers a test started through `service_server`: their logs go into its failure report.
_SERVERS = pytest.StashKey[list[ServerProcess]]()


def missing_tool(name: str) -> str | None:
    """Why `name` cannot be used here, or None when it can."""
    if name not in TOOLS:
        raise ValueError(f"unknown tool {name!r}; known: {sorted(TOOLS)}")
    present, install = TOOLS[name]
    return None if present() else f"{name} is not installed ({install})"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sqlite faults")
    group.addoption(
        "--fault-seed", type=int, default=int(os.environ.get("FAULT_SEED", "0")) or None,
        help="seed for every random choice of the tests (default: a fresh one, printed)")
    group.addoption(
        "--sqlite-synchronous", choices=["NORMAL", "FULL"],
        default=os.environ.get("SQLITE_SYNCHRONOUS_UNDER_TEST", "NORMAL"),
        help="PRAGMA synchronous for the services the tests start (default NORMAL)")
    group.addoption(
        "--target", default=os.environ.get("SQLITE_FAULTS_TARGET"), dest="fault_target",
        help="target file (TOML) describing the service the battery judges")


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--fault-seed") is None:
        config.option.fault_seed = random.SystemRandom().randrange(1, 2**31)
    config.stash[_SEED] = config.getoption("--fault-seed")
    config.addinivalue_line("markers", "needs_tool(*names): skip when a tool is missing, "
                                       "naming what to install")
    config.addinivalue_line("markers", "battery: a check of the ready battery")


def pytest_report_header(config: pytest.Config) -> list[str]:
    lines = [f"fault seed: {config.stash[_SEED]} (rerun with --fault-seed=N)",
             f"sqlite synchronous: {config.getoption('--sqlite-synchronous')}"]
    if config.getoption("fault_target"):
        lines.append(f"fault target: {config.getoption('fault_target')}")
    return lines


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in item.iter_markers("needs_tool"):
        for name in marker.args:
            reason = missing_tool(name)
            if reason:
                pytest.skip(reason)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"rep_{report.when}", report)  # for fixtures that report on failure
    if report.failed:
        # The servers' logs and the seed with the failure itself, so a red run can be
        # understood and replayed from its log alone.
        for server in item.stash.get(_SERVERS, []):
            report.sections.append((f"server log ({server.data_dir.name}, tail)",
                                    server.log_tail()))
        report.sections.append(("fault seed", f"rerun {item.nodeid} --fault-seed="
                                              f"{item.config.stash[_SEED]}"))
    return report


# -- seeds and settings -------------------------------------------------------------------


@pytest.fixture
def fault_seed(request: pytest.FixtureRequest) -> int:
    return request.config.stash[_SEED]


@pytest.fixture
def fault_rng(request: pytest.FixtureRequest, fault_seed: int) -> random.Random:
    """A Random seeded from --fault-seed and the test's id: reproducible per test."""
    return random.Random(fault_seed ^ zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture
def sqlite_synchronous(request: pytest.FixtureRequest) -> str:
    return str(request.config.getoption("--sqlite-synchronous"))


@pytest.fixture(scope="session")
def fault_target(request: pytest.FixtureRequest) -> Target:
    """The service --target describes; the tests that need one fail with what to pass."""
    path = request.config.getoption("fault_target")
    if not path:
        raise pytest.UsageError("this test needs --target FILE (or SQLITE_FAULTS_TARGET): a "
                                "target file describing the service (docs/toolkit.md)")
    try:
        return load_target(Path(path))
    except TargetError as exc:
        raise pytest.UsageError(f"bad target file: {exc}") from None


# -- faults inside an engine --------------------------------------------------------------


@pytest.fixture
def inject_sql_error() -> Iterator[Callable[..., InjectSqlError]]:
    """`inject_sql_error(engine, "busy", times=2, match=...)`: a driver error raised from the
    engine's events (sql_errors.py); removed at teardown."""
    with contextlib.ExitStack() as stack:
        def arm(engine: Engine, kind: str, **options: Any) -> InjectSqlError:
            return stack.enter_context(InjectSqlError(engine, kind, **options))
        yield arm


@pytest.fixture
def slow_statements() -> Iterator[Callable[..., SlowStatements]]:
    """`slow_statements(engine, seconds, match=...)`: matching statements loop inside SQLite
    (interruptibly) for `seconds` first (slow.py); removed at teardown."""
    with contextlib.ExitStack() as stack:
        def arm(engine: Engine, seconds: float, match: str | None = None) -> SlowStatements:
            return stack.enter_context(SlowStatements(engine, seconds, match))
        yield arm


@pytest.fixture
def stall_statements() -> Iterator[Callable[..., StallAfterStatement]]:
    """`stall_statements(engine, seconds, match=..., until=event)`: the calling thread stalls
    in Python after matching statements; removed (and every stall released) at teardown."""
    releases: list[threading.Event] = []
    with contextlib.ExitStack() as stack:
        def arm(engine: Engine, seconds: float, match: str | None = None,
                until: threading.Event | None = None) -> StallAfterStatement:
            until = until or threading.Event()
            releases.append(until)
            return stack.enter_context(StallAfterStatement(engine, seconds, match, until))
        try:
            yield arm
        finally:
            for event in releases:
                event.set()


# -- faults from outside the process ------------------------------------------------------


@pytest.fixture
def lock_holder() -> Iterator[Callable[..., LockHolder]]:
    """`lock_holder(db, mode="immediate")`: a started holder in another process (locks.py);
    call `.acquire()` / `.release()`; closed (lock dropped) at teardown."""
    holders: list[LockHolder] = []

    def start(db: str | Path, mode: str = "immediate", **options: Any) -> LockHolder:
        holder = LockHolder(db, mode, **options)
        holder.start()
        holders.append(holder)
        return holder
    try:
        yield start
    finally:
        for holder in holders:
            holder.close()


@pytest.fixture
def syscall_fault() -> Iterator[Callable[..., AttachedSyscallFault]]:
    """`syscall_fault(pid, [path], ["pwrite64"], "error=ENOSPC")`: strace attached to a
    running process for the test (syscalls.py); detached at teardown. For kills at the Nth
    write or sync from the start, use `SyscallFault(...).wrapper()` with service_server."""
    if strace_path() is None:
        pytest.skip(missing_tool("strace") or "")
    with contextlib.ExitStack() as stack:
        def attach(pid: int, paths: list[Path], syscalls: list[str], action: str,
                   threads: list[int] | None = None) -> AttachedSyscallFault:
            fault = AttachedSyscallFault(pid, SyscallFault(paths, syscalls, action),
                                         threads=threads)
            return stack.enter_context(fault)
        yield attach


@pytest.fixture
def disk_full() -> Iterator[Callable[[ServerProcess], Any]]:
    """`disk_full(server)`: every write of the server's database files fails with ENOSPC
    until teardown: libfiu when the server runs under its preload (env=fiu_env()), else
    strace attached to the process."""
    with contextlib.ExitStack() as stack:
        def fill(server: ServerProcess) -> Any:
            if fiu_available() and "fiu" in server.env.get("LD_PRELOAD", ""):
                return stack.enter_context(
                    FiuFault(server.pid, "posix/io/rw/pwrite", errno.ENOSPC))
            if strace_path() is None:
                pytest.skip("disk_full needs libfiu (apt-get install fiu-utils) or strace")
            db = server.db_path
            paths = [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-journal")]
            return stack.enter_context(AttachedSyscallFault(
                server.pid, SyscallFault(paths, ["pwrite64", "write"], "error=ENOSPC")))
        yield fill


@pytest.fixture
def slow_sync(tmp_path: Path) -> SlowSync:
    """A preload shim delaying fsync/fdatasync (slowsync.py): merge `.env(match=...)` into
    the server's environment, then `with slow_sync.window(min_us, max_us):`."""
    if compiler() is None:
        pytest.skip(missing_tool("cc") or "")
    return SlowSync(tmp_path / "slowsync")


@pytest.fixture
def power_loss_vfs() -> Iterator[Any]:
    """A recording VFS (powerloss/vfs.py, APSW): open APSW connections with
    `vfs=power_loss_vfs.vfs_name`; `power_loss_vfs.recorder.events` is every write, sync
    and truncate, from which powerloss.states builds the disk after a power cut.
    Unregistered at teardown."""
    if importlib.util.find_spec("apsw") is None:
        pytest.skip(missing_tool("apsw") or "")
    from .powerloss.vfs import Recorder, RecordingVFS

    vfs = RecordingVFS(Recorder())
    try:
        yield vfs
    finally:
        vfs.unregister()


# -- the service, its writes, its resources -----------------------------------------------


@pytest.fixture
def service_server(tmp_path: Path, request: pytest.FixtureRequest
                   ) -> Iterator[Callable[..., ServerProcess]]:
    """`service_server(target)` or `service_server(app="mod:factory", ...)`: a started
    uvicorn process on its own port and data folder (server.py), killed at teardown; its log
    tail is attached to a failing test's report. `start=False` leaves the starting to the
    test (a crash suite starts, kills and restarts it)."""
    servers: list[ServerProcess] = []
    request.node.stash[_SERVERS] = servers

    def start(target: Target | None = None, *, name: str = "server", start: bool = True,
              **options: Any) -> ServerProcess:
        data_dir = tmp_path / f"{name}-{len(servers)}"
        server = (ServerProcess.for_target(target, data_dir, **options) if target is not None
                  else ServerProcess(data_dir, **options))
        servers.append(server)
        if start:
            server.start()
        return server
    try:
        yield start
    finally:
        for server in servers:
            server.kill()


@pytest.fixture
def write_ledger(fault_rng: random.Random) -> Callable[..., WriteLedger]:
    """`write_ledger(target.write, prefix="k")`: a ledger of every write and what it was told
    (ledger.py); `await ledger.check(base_url, db)` after the crash."""
    def make(contract: WriteContract, prefix: str = "w") -> WriteLedger:
        return WriteLedger(random.Random(fault_rng.random()), contract, prefix=prefix)
    return make


@pytest.fixture
def leak_check() -> Callable[[int], Resources]:
    """`baseline = leak_check(pid)`; later `await leaks.settles(pid, baseline)`."""
    return Resources.of


@pytest.fixture
def metrics_reader() -> Callable[..., Any]:
    """`snapshot = await metrics_reader(base_url)`; `snapshot.value(name, **labels)`.
    Also parses text: `metrics_reader.parse(text)`."""
    async def read(base_url: str, path: str = "/metrics") -> MetricsSnapshot:
        return await scrape(base_url, path)
    read.parse = MetricsSnapshot  # type: ignore[attr-defined]
    return read
