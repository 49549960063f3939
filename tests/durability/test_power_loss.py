"""Power loss, simulated: what each journal mode and synchronous level promises, checked.

A process kill cannot tell synchronous=NORMAL from FULL: SQLite keeps committed transactions
across an application crash at any level. Only a lost OS page cache can, so the service's own
writes run through a crash-simulating VFS (the toolkit's sqlite_faults.powerloss, given the
service as app/crash_service.py describes it) and the power is cut at many
moments; every crash state is opened with the service's SQLite and judged against
sqlite.org/pragma.html#pragma_synchronous:

- WAL with FULL or EXTRA loses nothing acknowledged and never corrupts;
- WAL with NORMAL never corrupts and loses at most the commits acknowledged since the WAL's
  last sync;
- DELETE with FULL may lose the last commit while its journal's unlink is not durable (only
  EXTRA syncs the directory); DELETE with EXTRA loses nothing;
- OFF may corrupt (nothing to check; the figures are reported).

Where SQLite does otherwise, the test fails with the documentation's words, the seed, the cut
and the state: the contract is never loosened to fit. A broken VFS that acknowledges syncs
and drops them must be caught by the same checker. Quick mode runs a few hundred crash states
per setting; `--durability-mode nightly` at least 1,500 per setting (12,000 in all).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pysqlite3.dbapi2 as pysqlite3
import pytest
from sqlite_faults.powerloss.checker import Checker
from sqlite_faults.powerloss.contract import CELLS, Cell, promise
from sqlite_faults.powerloss.matrix import BUDGETS, Budget, CellResult, harness_gap, run_cell
from sqlite_faults.powerloss.model import Create, DirSync, Disk, Event, Sync, Unlink, Write
from sqlite_faults.powerloss.report import notes, table
from sqlite_faults.powerloss.scratch import simulation_scratch
from sqlite_faults.powerloss.states import Kind, materialise
from sqlite_faults.powerloss.throughput import filesystem_of
from sqlite_faults.powerloss.workload import DB_NAME, run_workload
from sqlite_faults.summary import DurabilitySummary

from app.crash_service import SMALL_WAL_LIMIT_BYTES, UsersCrashService, crash_services
from app.settings import Settings

pytestmark = pytest.mark.sqlite_only("an SQLite VFS simulating power loss")

SECTOR = 4096


SERVICE = "app.crash_service:crash_services"


@pytest.fixture(scope="module")
def profiles() -> tuple[UsersCrashService, ...]:
    return crash_services(Settings())


@pytest.fixture(scope="module")
def work() -> Iterator[Path]:
    with simulation_scratch() as folder:
        yield folder


@pytest.fixture
def budget(request: pytest.FixtureRequest) -> Budget:
    return BUDGETS[request.config.getoption("--durability-mode")]


@pytest.fixture(scope="module")
def matrix(request: pytest.FixtureRequest) -> Iterator[dict[str, CellResult]]:
    """The cells measured in this session; their table goes beside the durability summary."""
    results: dict[str, CellResult] = {}
    yield results
    if results:
        folder: Path = request.config.getoption("--durability-summary")
        folder.mkdir(parents=True, exist_ok=True)
        ordered = [results[c.name] for c in CELLS if c.name in results]
        (folder / "power-loss.md").write_text(table(ordered) + "\n")


def _replay(budget: Budget, cell: Cell, seed: int) -> str:
    return (f"python -m sqlite_faults.powerloss --service {SERVICE} --mode {budget.mode} "
            f"--cells {cell.name} --seed {seed}")


@pytest.mark.parametrize("cell", CELLS, ids=lambda c: c.name.replace("/", "-"))
def test_power_loss_keeps_what_the_setting_promises(
    cell: Cell, profiles: tuple[UsersCrashService, ...], work: Path, tmp_path: Path,
    rng: random.Random, budget: Budget, durability_summary: DurabilitySummary,
    matrix: dict[str, CellResult],
) -> None:
    seed = rng.randrange(1, 2**31)
    kept = tmp_path / "contradictions"
    result = run_cell(profiles, cell, seed, budget, work / cell.name.replace("/", "-"),
                      tmp_path / "disk", keep=kept)
    matrix[cell.name] = result
    figures = durability_summary.scenario(f"power-loss/{cell.name}")
    figures.cycles += result.states
    figures.acknowledged += result.acknowledged
    figures.lost = max(figures.lost, result.lost_max)
    figures.integrity_failures += result.integrity_failures
    figures.seconds += result.seconds
    figures.notes += notes(result, filesystem_of(tmp_path / "disk"))

    examples = "\n".join(f"  - {v}" for v in result.violations)
    assert result.held, (
        f"SQLite contradicts its documentation for {cell.name}, which says: "
        f"{promise(cell).documented}.\n{result.violation_count} of {result.states} crash "
        f"states disagree, e.g.:\n{examples}\nreplay: {_replay(budget, cell, seed)}; "
        f"the files of those states are in {kept}")
    gap = harness_gap(result)
    assert gap is None, f"{gap}\nreplay: {_replay(budget, cell, seed)}"
    assert result.states >= budget.min_states


@pytest.mark.parametrize("cell", [Cell("WAL", "FULL"), Cell("DELETE", "EXTRA")],
                         ids=lambda c: c.name.replace("/", "-"))
def test_a_vfs_that_drops_syncs_is_caught(
    cell: Cell, profiles: tuple[UsersCrashService, ...], work: Path, tmp_path: Path,
    rng: random.Random,
) -> None:
    """The checker is only worth its silence if it speaks up: a disk that says "synced" and
    keeps nothing must show as acknowledged commits lost under a setting that promises none."""
    seed = rng.randrange(1, 2**31)
    budget = replace(BUDGETS["quick"], min_states=100)
    result = run_cell(profiles, cell, seed, budget, work / "broken", tmp_path,
                      drop_syncs=True)
    lost = [v for v in result.violations if "acknowledged commit(s) lost" in v.detail]
    assert lost, (f"a VFS dropping every sync went unnoticed under {cell.name} in "
                  f"{result.states} crash states (seed {seed})")


def test_a_seed_replays_the_same_crash_states(
    profiles: tuple[UsersCrashService, ...], work: Path, tmp_path: Path, rng: random.Random,
) -> None:
    seed = rng.randrange(1, 2**31)
    budget = replace(BUDGETS["quick"], min_states=60, throughput_s=0)
    cell = Cell("WAL", "NORMAL")
    first, second = (run_cell(profiles, cell, seed, budget, work / "replay", tmp_path)
                     for _ in range(2))
    assert (first.states, first.crash_points, first.lost, first.integrity_failures) == (
        second.states, second.crash_points, second.lost, second.integrity_failures)


def test_the_workload_uses_the_service_settings(
        profiles: tuple[UsersCrashService, ...]) -> None:
    """Derived from the service (its connect hook's pragmas), not copied: the second variant
    was made with another journal_size_limit, and its pragma follows."""
    service, small = profiles
    pragmas = dict(service.pragmas)
    assert pragmas["journal_mode"].upper() == "WAL"
    assert pragmas["synchronous"].upper() == service.settings.sqlite_synchronous
    assert dict(small.pragmas)["journal_size_limit"] == str(
        SMALL_WAL_LIMIT_BYTES)


# -- the model the crash states come from ------------------------------------------------


def _disk(*events: Event) -> Disk:
    disk = Disk()
    for event in events:
        disk.apply(event)
    return disk


def test_only_a_sync_makes_a_write_durable() -> None:
    made = (Create("users.db", 1, SECTOR, True), DirSync("test"), Write(1, 0, b"commit"))
    rng = random.Random(0)
    assert materialise(_disk(*made), Kind.SYNCED, rng) == {"users.db": b""}
    assert materialise(_disk(*made), Kind.ALL, rng) == {"users.db": b"commit"}
    assert materialise(_disk(*made, Sync(1)), Kind.SYNCED, rng) == {"users.db": b"commit"}


def test_creating_and_deleting_a_file_need_a_directory_sync() -> None:
    rng = random.Random(0)
    created = (Create("users.db-journal", 1, SECTOR, True), Write(1, 0, b"hot"), Sync(1))
    assert materialise(_disk(*created), Kind.SYNCED, rng) == {}  # its name never reached disk
    durable = (*created, DirSync("test"))
    assert materialise(_disk(*durable), Kind.SYNCED, rng) == {"users.db-journal": b"hot"}
    unlinked = _disk(*durable, Unlink("users.db-journal"))
    assert unlinked.journal_unlink_pending()
    # The unlink is not durable: after a cut the journal is back, hot.
    assert materialise(unlinked, Kind.SYNCED, rng) == {"users.db-journal": b"hot"}
    assert materialise(unlinked, Kind.ALL, rng) == {}
    gone = _disk(*durable, Unlink("users.db-journal"), DirSync("xDelete with dirSync"))
    assert materialise(gone, Kind.SYNCED, rng) == {}


@pytest.mark.parametrize("powersafe", [True, False])
def test_torn_and_garbage_sectors_respect_the_reported_device(powersafe: bool) -> None:
    """With powersafe overwrite, damage stays inside the bytes written; without it, it may
    spread over the written sector, never beyond."""
    before = b"\xaa" * (3 * SECTOR)
    events = (Create("users.db", 1, SECTOR, powersafe), DirSync("t"), Write(1, 0, before),
              Sync(1), Write(1, SECTOR + 100, b"\x55" * 50))
    outside_write = spread = 0
    for n in range(300):
        after = materialise(_disk(*events), Kind.SECTORS, random.Random(n))["users.db"]
        assert after[:SECTOR] == before[:SECTOR] and after[2 * SECTOR:] == before[2 * SECTOR:]
        if after[SECTOR:SECTOR + 100] + after[SECTOR + 150:2 * SECTOR] != before[:SECTOR - 50]:
            outside_write += 1
        if after != before:
            spread += 1
    assert spread > 0
    assert (outside_write == 0) == powersafe


def test_the_checker_finds_holes_and_half_transactions(
    profiles: tuple[UsersCrashService, ...], work: Path,
) -> None:
    trace = run_workload(profiles[0], "WAL", "FULL", commits=4, early_users=3,
                         checkpoint_chance=0, rng=random.Random(0), folder=work / "holes")
    disk = _disk(*trace.events)
    files = materialise(disk, Kind.ALL, random.Random(0))
    checker = Checker(profiles[0], work / "holes-check")
    assert checker.check(files, early_users=3, started=4).survivors == 4

    def edited(sql: str) -> dict[str, bytes]:
        folder = work / "holes-edit"
        folder.mkdir(exist_ok=True)
        for name, content in files.items():
            (folder / name).write_bytes(content)
        conn = pysqlite3.connect(str(folder / DB_NAME), isolation_level=None)
        conn.execute("PRAGMA foreign_keys = OFF")
        conn.execute(sql)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        return {path.name: path.read_bytes() for path in folder.iterdir()
                if not path.name.endswith("-shm")}

    hole = checker.check(edited("DELETE FROM users WHERE name = 'pl000002'"),
                         early_users=3, started=4)
    assert not hole.intact and not hole.corrupt and "not a prefix" in (hole.problem or "")
    half = checker.check(edited("DELETE FROM idempotency_keys WHERE key = 'plk000003'"),
                         early_users=3, started=4)
    assert not half.intact and "half a transaction" in (half.problem or "")
    future = checker.check(files, early_users=3, started=3)
    assert not future.intact and "had begun" in (future.problem or "")
    garbled = dict(files, **{DB_NAME: b"\x00" * 100 + files[DB_NAME][100:]})
    assert checker.check(garbled, early_users=3, started=4).corrupt
