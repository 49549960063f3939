"""Checkpoint starvation: a long reader pins a snapshot while writes go on.

A checkpoint may copy WAL frames into the database only up to the oldest snapshot a reader
still uses, and the WAL can be reused from its start only once no reader needs it
(sqlite.org/wal.html, "Checkpoint starvation"). So a reader that keeps its read transaction
open makes the WAL grow. This service checkpoints every SQLITE_CHECKPOINT_INTERVAL_S: PASSIVE,
or TRUNCATE once the -wal file is past SQLITE_JOURNAL_SIZE_LIMIT_BYTES.

The reader here is a second connection in another process (this test process) through the
service's own SQLite library (pysqlite3, as sqlite_faults/inspect_db.py explains: never the stdlib
`sqlite3` module on the service's file). The writer is one client, paced so that without the
reader the WAL stays under the (small) limit, and what the reader does to it shows.

What is checked, under NORMAL and FULL: the WAL grows past the limit while the snapshot is
pinned and /metrics shows it (`sqlite_wal_bytes`, `sqlite_checkpoint_lag_frames`); the reader's
snapshot does not move; after the reader lets go, the service's own checkpoint brings the WAL
back under the limit, writes are served again, and nothing acknowledged is lost; and writes go
on while the reader holds (they used to stop behind a TRUNCATE checkpoint: docs/durability.md,
"Checkpoint starvation").
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import pysqlite3.dbapi2 as dbapi  # the service's SQLite: see sqlite_faults/inspect_db.py
import pytest
from sqlite_faults.inspect_db import query
from sqlite_faults.ledger import WriteLedger
from sqlite_faults.observe import MetricsSampler, MetricsSnapshot, wait_until
from sqlite_faults.server import ServerProcess
from sqlite_faults.summary import DurabilitySummary
from sqlite_faults.traffic import CREATE, LoadGenerator, Sample

from examples.targets import USERS_WRITE

pytestmark = pytest.mark.sqlite_only("SQLite WAL checkpoints")

# One commit writes about five 4 KiB pages (~21 KB of WAL). About 20 commits a second add
# ~40 KB between two checkpoints 0.1 s apart, which a PASSIVE checkpoint then lets the next
# commit reuse: without a reader the -wal file stays near 40-60 KB, under the limit, and every
# checkpoint is PASSIVE. (At 64 KiB the file sits at the limit and checkpoints flip between
# PASSIVE and TRUNCATE.) A pinned reader takes it past the limit within about half a second.
LIMIT_BYTES = 128 * 1024
CHECKPOINT_INTERVAL_S = 0.1
PACE_S = (0.03, 0.06)
REQUEST_TIMEOUT_S = 10.0
CONDITION_TIMEOUT_S = 10.0
SAMPLE_EVERY_S = 0.02


@dataclass(frozen=True)
class Gauges:
    at: float
    wal_bytes: float
    lag_frames: float
    checkpoint_age_s: float
    checkpoints_ok: float


def _gauges(at: float, m: MetricsSnapshot) -> Gauges:
    return Gauges(at, m.value("sqlite_wal_bytes"), m.value("sqlite_checkpoint_lag_frames"),
                  m.value("sqlite_checkpoint_age_seconds"),
                  m.value("db_calls_total", operation="checkpoint", outcome="ok"))


def gauges(sampler: MetricsSampler, start: float = 0.0,
           end: float = float("inf")) -> list[Gauges]:
    """The checkpoint gauges of every /metrics sample taken between `start` and `end`."""
    return [_gauges(at, m) for at, m in sampler.samples if start <= at <= end]


def latest(sampler: MetricsSampler) -> Gauges | None:
    """The newest sample's gauges (polled by bounded waits: not every sample each time)."""
    return _gauges(*sampler.samples[-1]) if sampler.samples else None


def acked_after(writer: LoadGenerator, moment: float) -> int:
    return sum(1 for a in writer.select(CREATE, after=moment) if a.status == 201)


@dataclass
class Hold:
    """What one pinned snapshot did, as seen by clients, /metrics and the reader."""

    pinned: float
    released: float
    writer: LoadGenerator  # until the release
    resumed: LoadGenerator  # after it
    watch: MetricsSampler
    reader_counts: tuple[int, int]  # users the reader saw at the start and end of its hold
    table_count_at_release: int
    recovery_s: float  # release -> the first 201 answered after it
    shrink_s: float  # release -> sqlite_wal_bytes back under the limit

    def during(self) -> list[Gauges]:
        return gauges(self.watch, self.pinned, self.released)

    def steady(self) -> list[Gauges]:
        return gauges(self.watch, 0.0, self.pinned)

    def answers(self) -> list[Sample]:
        return self.writer.samples + self.resumed.samples

    def acked_while_held(self, after: float) -> int:
        """201s answered inside the hold, after `after`."""
        return sum(1 for a in self.writer.select(CREATE, before=self.released)
                   if a.status == 201 and after <= self.writer.started + a.answered)

    def note(self) -> str:
        held = self.during()
        steady = self.steady()
        latency = max((a.latency for a in self.answers()), default=0.0)
        statuses = Counter(str(a.status) if a.status == 201 else f"{a.status} {a.code}"
                           for a in self.answers())
        return (
            f"limit {LIMIT_BYTES} B; WAL max {max(s.wal_bytes for s in steady):.0f} B steady, "
            f"{max(s.wal_bytes for s in held):.0f} B during a {self.released - self.pinned:.2f}"
            f" s hold; lag max {max(s.lag_frames for s in held):.0f} frames; checkpoint age "
            f"max {max(s.checkpoint_age_s for s in held):.2f} s; 201s answered during the hold"
            f" {self.acked_while_held(self.pinned)}; slowest create {latency:.2f} s; writes "
            f"back {self.recovery_s * 1000:.0f} ms and WAL under the limit "
            f"{self.shrink_s * 1000:.0f} ms after release; creates {dict(statuses)}")


async def pin_a_snapshot(server: ServerProcess, ledger: WriteLedger, rng: random.Random,
                         hold_s: float) -> Hold:
    # One client at about 20 creates a second; the dashboard sampled every SAMPLE_EVERY_S.
    writer, resumed = (LoadGenerator.writers(ledger, 1, random.Random(rng.random()),
                                             think_s=PACE_S, timeout_s=REQUEST_TIMEOUT_S)
                       for _ in range(2))
    watch = MetricsSampler(server.base_url, every_s=SAMPLE_EVERY_S, timeout_s=REQUEST_TIMEOUT_S)
    writer.start(server.base_url)
    watch.start()
    reader = dbapi.connect(str(server.db_path), isolation_level=None)
    try:
        # Steady state: writes served, and the WAL under the limit without any reader.
        start = time.monotonic()
        await wait_until(lambda: acked_after(writer, start) >= 10, "201s before the reader")
        await wait_until(lambda: (s := latest(watch)) is not None and s.at > start
                         and s.wal_bytes <= LIMIT_BYTES, "the WAL under the limit, no reader")

        reader.execute("BEGIN")
        before = reader.execute("SELECT count(*) FROM users").fetchone()[0]
        pinned = time.monotonic()
        await asyncio.sleep(hold_s)  # how long the reader holds is the fault's duration
        after = reader.execute("SELECT count(*) FROM users").fetchone()[0]
        # Writes stop before the reader lets go: the WAL can then only shrink through the
        # service's own checkpoint, not through SQLite's journal_size_limit on the next
        # commit that reuses the WAL.
        writer.stop_sending()
        table_count = query(server.db_path, "SELECT count(*) FROM users")[0][0]
        reader.execute("COMMIT")
        released = time.monotonic()
        reader.close()
        await writer.stop()  # the create in flight, if any, is answered
        await wait_until(
            lambda: (s := latest(watch)) is not None and s.at > released
            and s.wal_bytes <= LIMIT_BYTES, "the WAL back under the limit after the reader")
        shrink_s = min(s.at for s in gauges(watch, released)
                       if s.wal_bytes <= LIMIT_BYTES) - released
        # And writes are served again.
        resumed.start(server.base_url)
        await wait_until(lambda: acked_after(resumed, released) >= 5, "201s after the reader")
        first_after = min(resumed.started + a.answered for a in resumed.samples
                          if a.status == 201)
    finally:
        reader.close()
        await writer.stop()
        await resumed.stop()
        await watch.stop()
    return Hold(pinned, released, writer, resumed, watch, (before, after), table_count,
                first_after - released, shrink_s)


@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
async def test_a_pinned_snapshot_grows_the_wal_and_the_checkpoint_shrinks_it_after(
    servers: Callable[..., ServerProcess], rng: random.Random,
    durability_summary: DurabilitySummary, synchronous: str,
) -> None:
    scenario = durability_summary.scenario(f"checkpoint-starvation/{synchronous}")
    server = servers(sqlite_synchronous=synchronous,
                     sqlite_journal_size_limit_bytes=LIMIT_BYTES,
                     sqlite_checkpoint_interval_s=CHECKPOINT_INTERVAL_S)
    ledger = WriteLedger(random.Random(rng.random()), USERS_WRITE, prefix=f"pin{synchronous[0]}")
    server.start()
    started = time.monotonic()
    hold = await pin_a_snapshot(server, ledger, rng, rng.uniform(1.0, 1.4))
    scenario.cycles += 1
    scenario.notes.append(hold.note())
    during = hold.during()
    assert during, "no /metrics sample during the hold"
    # The reader's snapshot stayed where it was while commits went on past it.
    assert hold.reader_counts[0] == hold.reader_counts[1], hold.reader_counts
    assert hold.table_count_at_release > hold.reader_counts[0], hold.note()
    # /metrics shows the starvation: the WAL past the limit, checkpoints falling behind.
    assert max(s.wal_bytes for s in during) > LIMIT_BYTES, hold.note()
    assert max(s.lag_frames for s in during) > 0, hold.note()
    # Every create got a 201 (the hold is shorter than the deadline): nothing refused.
    assert {a.status for a in hold.answers()} == {201}, hold.note()
    # shrink_s and recovery_s were bounded waits inside pin_a_snapshot.
    report = await ledger.check(server.base_url, server.db_path)
    scenario.add_report(report)
    scenario.seconds += time.monotonic() - started
    assert report.ok, report.problems


async def test_writes_go_on_while_a_reader_pins_a_snapshot(
    servers: Callable[..., ServerProcess], rng: random.Random,
) -> None:
    """WAL mode lets a writer commit beside any reader; only checkpoints have to wait."""
    server = servers(sqlite_synchronous="NORMAL",
                     sqlite_journal_size_limit_bytes=LIMIT_BYTES,
                     sqlite_checkpoint_interval_s=CHECKPOINT_INTERVAL_S)
    ledger = WriteLedger(random.Random(rng.random()), USERS_WRITE, prefix="stall")
    server.start()
    hold = await pin_a_snapshot(server, ledger, rng, 1.5)
    assert max(s.wal_bytes for s in hold.during()) > LIMIT_BYTES, hold.note()
    # The WAL passes the limit about half a second into the hold; in the last third about
    # ten creates would be answered at this pace if writes went on.
    last_third = hold.released - (hold.released - hold.pinned) / 3
    if hold.acked_while_held(last_third) == 0:
        raise AssertionError(f"no create was answered in the last third of the hold: "
                            f"{hold.note()}")
