"""Kills at precise commit points, swept over N as SQLite's own crash tests do.

strace runs the service and kills it (`--inject=SYSCALL:signal=KILL:when=N`, filtered to one
file with `-P`) at the Nth write, sync or truncation of that file. For N = 1, 2, 3, ... a run
sends creates one at a time until the process dies or the workload (CREATES creates, each
followed by its checkpoint where the point needs checkpoints) completes without reaching the
Nth call; that run ends the sweep. After every kill the service is restarted without strace on
the same data folder and `WriteLedger.check` must pass: every acknowledged create present and
identical, no duplicate, no phantom, each indeterminate create resolved by its key,
integrity_check ok. Quick mode stops each sweep at QUICK_MAX_N; nightly sweeps to the end.

| point                 | syscalls on file               | service settings                     |
|-----------------------|--------------------------------|--------------------------------------|
| wal-append            | pwrite64 on users.db-wal       | no checkpoints: frames only append   |
| wal-sync              | fsync, fdatasync on the WAL    | checkpoint after every create        |
| checkpoint-db-write   | pwrite64 on users.db           | checkpoint after every create        |
| wal-reset             | ftruncate on users.db-wal      | the same, journal_size_limit 4096 B  |

What the service does on those files, traced with
`strace -f -e trace=pwrite64,fsync,fdatasync,ftruncate -P users.db -P users.db-wal`
(pysqlite3's SQLite 3.53.4):

- Start-up on a database whose schema exists writes nothing to either file: the main thread
  only opens users.db and users.db-wal (O_CREAT makes an empty -wal) for each pooled
  connection (writer, 4 readers, checkpoints). A fresh database's CREATE TABLEs would be the
  first WAL writes and sync, so the schema is made once per module by a plain start and clean
  stop, and copied.
- Two threads make the traced calls. The writer lane's thread commits: it writes the WAL and
  syncs it. The maintenance lane's thread runs the checkpoint loop on its own connection
  (with the loop on, wal_autocheckpoint is 0, so a commit never checkpoints): it alone writes
  users.db and truncates the WAL, and it syncs both files. strace's `when=N` counts per
  thread, so for a file and syscall only one thread uses, N counts that thread's calls in
  order; for WAL syncs the kill goes to whichever thread makes its Nth first.
- SQLite syncs with fsync, never fdatasync (both are traced anyway).
- One create commits 5 pages (the users and idempotency_keys tables and their indexes), each
  as two pwrite64 calls: a 24-byte frame header, then the 4096-byte page; a commit that splits
  a b-tree page writes one frame more. The first commit into a new WAL first writes the
  32-byte WAL header and fsyncs it, at NORMAL too.
- NORMAL syncs the WAL at no commit, only for that new-WAL header and at each checkpoint
  (which fsyncs the WAL before copying pages into users.db); FULL adds one fsync per commit,
  after its frames. test_wal_sync_per_commit_only_under_full shows the difference.
- A checkpoint writes each page with one pwrite64 into users.db, then ftruncate(users.db) to
  its page count and fsync(users.db). Past journal_size_limit the service checkpoints in
  TRUNCATE mode, which ends with ftruncate(users.db-wal, 0): the WAL reset swept here. After a
  complete checkpoint the next commit starts a new WAL (header, sync) from offset 0.

So one run (3 creates, each followed by its checkpoint where the point has them) makes:
wal-append 1 + 3 x 10 = 31 WAL writes (33 with a page split); wal-sync on the writer's
thread 3 syncs at NORMAL (each create starts a new WAL after the previous checkpoint) or 6 at
FULL, and 3 checkpoint syncs on the maintenance thread, which never come first and so are
never the Nth; checkpoint-db-write 3 x 5 = 15 page writes; wal-reset 3 truncations. A
nightly run measured sweeps ending at N = 32 (NORMAL) / 33 (FULL: a split), 4 / 7, 16 and 4.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlite_faults.inspect_db import names_in_main_file_alone
from sqlite_faults.ledger import WriteLedger
from sqlite_faults.observe import MetricsSnapshot
from sqlite_faults.server import ServerProcess
from sqlite_faults.summary import DurabilitySummary, ScenarioFigures
from sqlite_faults.syscalls import SyscallFault, strace_path

from examples.targets import USERS_WRITE

pytestmark = [
    pytest.mark.sqlite_only("kills at SQLite's WAL and checkpoint syscalls"),
    pytest.mark.skipif(
        strace_path() is None,
        reason="strace is not installed (apt-get install strace): syscall kills need it",
    ),
]

CREATES = 3  # creates per run: the "request" a sweep repeats until it no longer dies
QUICK_MAX_N = 2  # quick mode: N = 1, 2 per point (two starts per N; the file stays under a minute)
NIGHTLY_MAX_N = 400  # nightly: far beyond any run's calls; reaching it means a runaway sweep
CHECKPOINT_INTERVAL_S = 0.05
REQUEST_TIMEOUT_S = 10.0
EXIT_TIMEOUT_S = 10.0
CHECKPOINT_TIMEOUT_S = 10.0
# Poll interval of the checkpoint counters: a condition is awaited, not a time assumed.
POLL_S = 0.01


@dataclass(frozen=True)
class CommitPoint:
    name: str
    file: str  # in the data folder
    syscalls: tuple[str, ...]
    checkpoint_interval_s: float  # 0: the service's checkpoint loop is off
    journal_size_limit: int | None = None  # None: the service's default (64 MiB)
    # "create": the kill lands inside a request; "checkpoint": in the checkpoint loop, after
    # the create was acknowledged; None: either.
    killed_during: str | None = None

    @property
    def checkpoints(self) -> bool:
        return self.checkpoint_interval_s > 0

    def env(self, synchronous: str) -> dict[str, str]:
        env = {"sqlite_synchronous": synchronous,
               "sqlite_checkpoint_interval_s": str(self.checkpoint_interval_s)}
        if self.journal_size_limit is not None:
            env["sqlite_journal_size_limit_bytes"] = str(self.journal_size_limit)
        return env


POINTS = [
    CommitPoint("wal-append", "users.db-wal", ("pwrite64",), 0, killed_during="create"),
    # Checkpoints on, so that every create starts a new WAL: under NORMAL its header's sync is
    # the only WAL sync on the commit path (a checkpoint's own WAL sync runs on its thread).
    CommitPoint("wal-sync", "users.db-wal", ("fsync", "fdatasync"), CHECKPOINT_INTERVAL_S),
    CommitPoint("checkpoint-db-write", "users.db", ("pwrite64",), CHECKPOINT_INTERVAL_S,
                killed_during="checkpoint"),
    # A 4 KiB limit: one create's frames (20 KiB) exceed it, so every checkpoint is a
    # TRUNCATE and ends by cutting the WAL to zero.
    CommitPoint("wal-reset", "users.db-wal", ("ftruncate",), CHECKPOINT_INTERVAL_S,
                journal_size_limit=4096, killed_during="checkpoint"),
]


@dataclass
class Run:
    """One run under strace: did the process die, and where was the client then."""

    died: bool
    during: str = ""  # "create" or "checkpoint"


@pytest.fixture(scope="module")
def schema_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database with the schema and nothing else, closed cleanly (no -wal), to copy into
    each scenario: start-up then writes nothing, and N counts the workload's calls only."""
    server = ServerProcess(tmp_path_factory.mktemp("schema"), app="app.main:create_app")
    try:
        server.start()
        server.stop()
    finally:
        server.kill()
    assert not _wal(server).exists(), "a clean stop must checkpoint and delete the WAL"
    return server.db_path


@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
@pytest.mark.parametrize("point", POINTS, ids=lambda point: point.name)
async def test_kill_at_commit_point_loses_nothing(
    point: CommitPoint, synchronous: str, servers: Callable[..., ServerProcess],
    schema_db: Path, rng: random.Random, durability_summary: DurabilitySummary,
    request: pytest.FixtureRequest, tmp_path: Path,
) -> None:
    nightly = request.config.getoption("--durability-mode") == "nightly"
    max_n = NIGHTLY_MAX_N if nightly else QUICK_MAX_N
    scenario = durability_summary.scenario(f"kill-at-{point.name}/{synchronous}")
    server = servers(point.name, **point.env(synchronous))
    shutil.copyfile(schema_db, server.db_path)
    # -P needs an absolute path (strace matches the name the process opened).
    target = (server.data_dir / point.file).resolve()
    ledger = WriteLedger(random.Random(rng.random()), USERS_WRITE,
                         prefix=f"{point.name}-{synchronous}")
    started = time.monotonic()
    kills: list[tuple[int, Run]] = []
    completed_at: int | None = None
    recovered = 0  # indeterminate creates that had committed before the kill

    for n in range(1, max_n + 1):
        fault = SyscallFault([target], list(point.syscalls), "signal=KILL", when=str(n))
        server.start(wrapper=fault.wrapper())
        run = await _workload(server, ledger, point.checkpoints)
        if run.died:
            returncode = server.wait_exit(EXIT_TIMEOUT_S)
            # strace re-raises the signal that killed its tracee; nobody else sent one.
            assert returncode == -signal.SIGKILL, (
                f"N={n}: the client lost the server during a {run.during} but it "
                f"{'is still running' if returncode is None else f'exited {returncode}'}")
            kills.append((n, run))
            scenario.wal_bytes_at_kill.append(_size(_wal(server)))
            if _commits_only_in_wal(server, ledger, tmp_path / "scratch"):
                scenario.kills_with_commits_only_in_wal += 1
        else:
            completed_at = n
            server.kill()  # a kill after the workload: checked the same way

        scenario.ready_seconds.append(server.start())  # no strace: SQLite recovers the WAL
        report = await ledger.check(server.base_url, server.db_path)
        scenario.add_report(report)
        recovered += report.recovered
        assert report.ok, f"N={n} ({'killed' if run.died else 'completed'}): {report.problems}"
        if run.died and run.during == "create" and point.killed_during == "checkpoint":
            # The checkpoint loop ran between a commit and its answer reaching the client (a
            # loaded machine delays the answer, not the loop): the kill still landed in the
            # checkpoint, so the create it cut off had committed, and its keyed retry must
            # say so.
            assert report.recovered == 1, (
                f"N={n}: killed in a checkpoint while a create was in flight, but that "
                f"create had not committed ({report.problems})")
            kills[-1] = (n, Run(died=True, during="checkpoint"))
        server.stop()
        # A clean stop checkpoints and deletes the WAL: every run starts from the same state,
        # so N counts the same calls in each.
        assert not _wal(server).exists(), f"N={n}: the WAL outlived a clean stop"
        if completed_at is not None:
            break

    scenario.cycles += len(kills)
    scenario.seconds += time.monotonic() - started
    during = sorted({run.during for _, run in kills})
    if completed_at is not None:
        scenario.notes.append(
            f"swept N=1..{completed_at - 1}: killed at each; N={completed_at} completed "
            f"{CREATES} creates without reaching it")
    else:
        cap = "nightly cap" if nightly else "quick mode cap; nightly sweeps until a run completes"
        scenario.notes.append(f"swept N=1..{max_n}: killed at each ({cap})")
    scenario.notes.append(f"kills during: {', '.join(during)}; indeterminate creates found "
                          f"committed after the restart: {recovered}")

    assert kills, f"{point.name} was never reached: N=1 completed the workload"
    if nightly:
        assert completed_at is not None, f"no run completed up to N={max_n}"
    if point.killed_during is not None:
        assert during == [point.killed_during], f"killed during {during}"
    _check_wal_at_kill(point, scenario)


@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
async def test_wal_sync_per_commit_only_under_full(
    synchronous: str, servers: Callable[..., ServerProcess], schema_db: Path,
    rng: random.Random, durability_summary: DurabilitySummary,
) -> None:
    """Without checkpoints, NORMAL syncs the WAL once (the new WAL's header) over all the
    creates of a run; FULL syncs at each commit, so its 2nd WAL sync is the first commit's.
    A kill there finds the commit's frames already written: the create committed though its
    client only saw a dropped connection, and the keyed retry finds it."""
    scenario = durability_summary.scenario(f"kill-at-wal-sync-no-checkpoints/{synchronous}")
    server = servers("no-checkpoints", sqlite_synchronous=synchronous,
                     sqlite_checkpoint_interval_s=0)
    shutil.copyfile(schema_db, server.db_path)
    fault = SyscallFault([_wal(server).resolve()], ["fsync", "fdatasync"], "signal=KILL",
                         when="2")
    ledger = WriteLedger(random.Random(rng.random()), USERS_WRITE, prefix=f"sync-{synchronous}")
    started = time.monotonic()
    server.start(wrapper=fault.wrapper())
    run = await _workload(server, ledger, checkpoints=False)
    if synchronous == "NORMAL":
        assert not run.died, "NORMAL synced the WAL at a commit"
        assert server.running
        server.kill()
        scenario.notes.append(f"{CREATES} commits without checkpoints: 1 WAL sync "
                              "(the new WAL's header); when=2 never reached")
    else:
        assert run.died and run.during == "create", run
        assert server.wait_exit(EXIT_TIMEOUT_S) == -signal.SIGKILL
        assert len(ledger.creates) == 1, "the first commit's sync was not the 2nd"
        scenario.cycles += 1
        scenario.wal_bytes_at_kill.append(_size(_wal(server)))
        scenario.notes.append("killed at the 1st commit's WAL sync (when=2)")
    scenario.ready_seconds.append(server.start())
    report = await ledger.check(server.base_url, server.db_path)
    scenario.add_report(report)
    scenario.seconds += time.monotonic() - started
    assert report.ok, report.problems
    if synchronous == "FULL":
        assert (report.indeterminate, report.recovered) == (1, 1), report.as_dict()
    else:
        assert (report.acknowledged, report.indeterminate) == (CREATES, 0), report.as_dict()


async def _workload(server: ServerProcess, ledger: WriteLedger, checkpoints: bool) -> Run:
    """CREATES creates, one at a time; with `checkpoints`, each followed by a checkpoint of
    the service's loop that copied it into users.db. Stops when the server goes away."""
    async with httpx.AsyncClient(base_url=server.base_url, timeout=REQUEST_TIMEOUT_S) as client:
        for _ in range(CREATES):
            create = ledger.new_create()
            await ledger.send(client, create)
            if create.status is None:  # no answer: connection refused, reset or timed out
                return Run(died=True, during="create")
            # A kill is the only fault here: any other answer than 201 is a defect.
            assert create.outcome == "acknowledged", (create.status, create.detail)
            if checkpoints and not await _checkpointed(client):
                return Run(died=True, during="checkpoint")
    return Run(died=False)


async def _checkpointed(client: httpx.AsyncClient) -> bool:
    """Wait until a checkpoint that started after the last commit has completed and left no
    frame uncopied; False if the server went away meanwhile.

    Two completions past the count seen now: the first may be one that ran on the writer lane
    before the commit and was counted after its answer.
    """
    try:
        seen, _ = await _checkpoint_counters(client)
        give_up = time.monotonic() + CHECKPOINT_TIMEOUT_S
        while time.monotonic() < give_up:
            done, lag = await _checkpoint_counters(client)
            if done >= seen + 2 and lag == 0:
                return True
            await asyncio.sleep(POLL_S)
    except httpx.TransportError:
        return False
    raise AssertionError(f"no complete checkpoint within {CHECKPOINT_TIMEOUT_S} s")


async def _checkpoint_counters(client: httpx.AsyncClient) -> tuple[float, float]:
    response = await client.get("/metrics")
    response.raise_for_status()
    metrics = MetricsSnapshot(response.text)
    return (metrics.value("db_calls_total", operation="checkpoint", outcome="ok"),
            metrics.value("sqlite_checkpoint_lag_frames"))


def _check_wal_at_kill(point: CommitPoint, scenario: ScenarioFigures) -> None:
    """The WAL's size when the process died tells where it died."""
    sizes = scenario.wal_bytes_at_kill
    if point.name == "wal-append":
        # Each run starts with an empty WAL and the injected write never happens: N=1 dies
        # before the WAL header, and each N writes one call more than N-1 did.
        assert sizes[0] == 0, sizes
        assert all(a < b for a, b in itertools.pairwise(sizes)), sizes
    else:
        # A sync, a checkpoint and a reset all come after something was written to the WAL;
        # a reset killed at its entry leaves the WAL whole.
        assert all(size > 0 for size in sizes), sizes


def _commits_only_in_wal(server: ServerProcess, ledger: WriteLedger, scratch: Path) -> bool:
    """Whether acknowledged creates were missing from the main file alone at the kill: the
    restart then has to find them in the WAL."""
    checkpointed = names_in_main_file_alone(server.db_path, scratch)
    if checkpointed is None:  # not readable alone: not counted, as in test_random_kills
        return False
    return any(c.outcome == "acknowledged" and c.name not in checkpointed
               for c in ledger.creates)


def _wal(server: ServerProcess) -> Path:
    return server.db_path.with_name(server.db_path.name + "-wal")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
