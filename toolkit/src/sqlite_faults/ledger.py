"""A Jepsen-style write ledger: what clients were told, checked against what survived.

Concurrent clients send the target's write request (sqlite_faults/target.py: a body with a
fresh "{unique}" value, and an idempotency key when the service takes one) and record every
outcome, as sqlite_faults/outcome.py classifies it:

- acknowledged: `2xx` (the service promised the write exists);
- failed: a definite refusal that cannot have committed (a `4xx`, or `503 overloaded`:
  never started);
- indeterminate: anything else (`5xx`, a timeout, a reset connection): the commit may or may
  not have happened.

After a crash and restart `check` verifies: every acknowledged write reads back (the target's
read request) with the id and values it was acknowledged with; `PRAGMA integrity_check` is
`ok`; and, when the target names its table (`[database]`): no unique value or key is
duplicated, no failed write left a row, every indeterminate write retried with its key
resolves to exactly one row.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from .http11 import Http11Transport
from .inspect_db import query, query_url
from .outcome import outcome_of
from .target import Table, WriteContract


@dataclass
class Create:
    key: str
    name: str
    password: str
    outcome: str = "pending"  # acknowledged | failed | indeterminate
    status: int | None = None
    detail: str = ""
    user: Any = None  # the acknowledged answer's JSON body (None when it had none)
    new_id: Any = None  # the id it was acknowledged with (WriteContract.new_id)


# New acknowledged writes read back over HTTP per check when the table is there to check them
# all (WriteLedger.check).
READ_BACK_SAMPLE = 256


@dataclass
class LedgerReport:
    """One check. The outcome counts (acknowledged, failed, indeterminate) are every write
    so far; the wrong answers (lost, duplicated, phantoms, unresolved, ...) are the ones this
    check found: each is reported once, by the first check that finds it, and indeterminate
    writes are resolved by the check after them."""

    acknowledged: int = 0
    failed: int = 0
    indeterminate: int = 0
    recovered: int = 0  # indeterminate, and found committed on retry (replayed)
    resolved: int = 0  # indeterminate, not committed, created by the retry
    lost: int = 0  # acknowledged but missing or changed
    duplicated: int = 0  # names or keys present more than once
    phantoms: int = 0  # rows of creates that definitely failed
    unresolved: int = 0  # indeterminate creates whose retry did not end in one row
    # Told "failed" with an error answer (5xx), yet the row exists: not a lost write (nothing
    # acknowledged went missing) but the opposite lie, which a client without idempotency
    # keys turns into a duplicate when it tries again.
    committed_after_error: int = 0
    integrity_failures: int = 0
    read_back: int = 0  # acknowledged writes read back over HTTP by this check
    # Writes the check did not get to before its time budget ran out (a service that stopped
    # answering): neither read back nor resolved, so nothing is claimed about them.
    unchecked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.phantoms or self.unresolved
                    or self.integrity_failures)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "problems": self.problems[:20]}


class WriteLedger:
    def __init__(self, rng: random.Random, contract: WriteContract, prefix: str = "u") -> None:
        self.rng = rng
        self.contract = contract
        self.prefix = prefix
        self.creates: list[Create] = []
        self._checked = 0  # creates[:_checked] were read back over HTTP by an earlier check
        # (kind, name) of every wrong answer an earlier check reported: each is reported by the
        # check that found it, so a ledger shared by scenarios charges each to its own.
        self._reported: set[tuple[str, str]] = set()

    def _first_time(self, kind: str, name: str) -> bool:
        """Whether this wrong answer is new (and from now on, reported)."""
        if (kind, name) in self._reported:
            return False
        self._reported.add((kind, name))
        return True

    def new_create(self) -> Create:
        n = len(self.creates)
        create = Create(
            key=f"{self.prefix}-{n}-{self.rng.getrandbits(48):012x}",
            name=f"{self.prefix}-{n}",
            password=f"pw-{self.rng.getrandbits(32):08x}",
        )
        self.creates.append(create)
        return create

    def counts(self) -> Counter[str]:
        return Counter(c.outcome for c in self.creates)

    async def send(self, client: httpx.AsyncClient, create: Create,
                   with_key: bool = True) -> httpx.Response | None:
        """Send `create` (again, when it is retried: the same key and body) and record what it
        was told; returns the answer, None when none came."""
        contract = self.contract
        headers = ({contract.idempotency_header: create.key}
                   if with_key and contract.idempotency_header else {})
        try:
            response = await contract.write_request(create.name, create.password).send(
                client, headers)
        except httpx.HTTPError as exc:  # timeout, reset, refused: it may have committed
            create.outcome, create.detail = "indeterminate", outcome_of(None, exc).code
            create.status = None
            return None
        outcome = outcome_of(response)
        create.status = response.status_code
        if outcome.ok:
            try:
                create.new_id = contract.new_id(response)
            except (ValueError, KeyError, TypeError, IndexError):
                # Acknowledged, but with no id to read it back by: the ledger cannot check it.
                create.outcome, create.detail = "indeterminate", "no-id-in-answer"
                return response
            try:
                create.user = response.json()
            except ValueError:
                create.user = None
            create.outcome = "acknowledged"
            replayed = response.headers.get("Idempotent-Replayed") == "true"
            create.detail = "replayed" if replayed else ""
            return response
        create.detail = outcome.code
        create.outcome = "failed" if outcome.definite_failure else "indeterminate"
        return response

    async def seed(self, base_url: str, count: int, timeout_s: float = 10.0) -> None:
        """`count` writes, one after the other, before an experiment (something to read from
        the first request on). They are the ledger's like any other, and checked with the
        rest."""
        async with httpx.AsyncClient(base_url=base_url, timeout=timeout_s,
                                     transport=Http11Transport()) as client:
            for _ in range(count):
                await self.send(client, self.new_create())

    async def check(
        self, base_url: str, db: Path | str, resolve_with_key: bool = True,
        budget_s: float | None = None, request_timeout_s: float = 10.0,
    ) -> LedgerReport:
        """Verify the invariants against a restarted server; resolves indeterminate writes
        by retrying them with their keys (so run it once per crash). `resolve_with_key=False`
        retries them without, as a client without idempotency would: a safeguard removed, which
        the checker must report.

        Every acknowledged write is checked against the table (its id and unique value), in
        bulk; of the writes new since the last call, a seeded sample of `READ_BACK_SAMPLE` is
        also read back over HTTP, field by field (the table already says whether each is
        there; the sample says the API returns what it acknowledged, and a few hundred say
        it as well as thousands, at a fraction of a slow service's time). Without a
        `[database]` table in the target, every acknowledged write is read back.

        `budget_s` bounds the HTTP part: no request is started after it (one in flight ends
        within `request_timeout_s`), and what was left is counted as `unchecked`. A service
        that stopped answering then costs the check that long, not a timeout per write.
        """
        report = LedgerReport()
        integrity = _integrity(db)
        if integrity != [("ok",)]:
            report.integrity_failures += 1
            report.problems.append(f"integrity_check: {integrity[:5]}")
        table = self.contract.table
        rows = _rows(db, table) if table is not None else None
        if rows is not None:
            # Only this ledger's rows: the report keeps one ledger per client profile on the
            # same table, and each answers for its own writes (names are "<prefix>-<n>").
            mine = re.compile(re.escape(self.prefix) + r"-\d+")
            rows = [row for row in rows if mine.fullmatch(str(row[1]))]
        names = Counter(name for _, name, _ in rows or ())
        keys = Counter(key for *_, key in rows or () if key is not None)
        dup_names = [n for n, c in names.items() if c > 1 and self._first_time("dup", n)]
        dup_keys = [k for k, c in keys.items() if c > 1 and self._first_time("dup-key", k)]
        report.duplicated = len(dup_names) + len(dup_keys)
        if report.duplicated:
            report.problems.append(f"duplicated: {dup_names[:5]} {dup_keys[:5]}")

        ids = {name: row_id for row_id, name, _ in rows or ()}
        # Checked before indeterminate writes are resolved (a resolving retry may create them).
        for create in self.creates[self._checked:]:
            if (create.outcome == "indeterminate" and (create.status or 0) >= 500
                    and names[create.name]):
                report.committed_after_error += 1
                report.problems.append(
                    f"answered {create.status} {create.detail} but committed: {create.name}")
        # The lean transport (http11.py): a check reads back every write since the last one,
        # thousands after a scenario at a high rate, and httpcore's pool costs more per request.
        give_up = None if budget_s is None else asyncio.get_running_loop().time() + budget_s

        def out_of_time() -> bool:
            if give_up is None or asyncio.get_running_loop().time() < give_up:
                return False
            report.unchecked += 1
            return True

        async with httpx.AsyncClient(base_url=base_url, timeout=request_timeout_s,
                                     transport=Http11Transport()) as client:
            read_back, unsettled = [], []
            for index, create in enumerate(self.creates):
                if create.outcome == "acknowledged":
                    report.acknowledged += 1
                    if rows is not None and str(ids.get(create.name)) != str(create.new_id):
                        if self._first_time("lost", create.name):
                            report.lost += 1
                            report.problems.append(f"lost {create.name}: not in the table")
                    elif rows is None or index >= self._checked:
                        read_back.append(create)
                elif create.outcome == "failed":
                    report.failed += 1
                    if names[create.name] and self._first_time("phantom", create.name):
                        report.phantoms += 1
                        report.problems.append(f"row for failed create {create.name} (answered "
                                           f"{create.status} {create.detail})")
                elif create.outcome == "indeterminate":
                    report.indeterminate += 1
                    if index >= self._checked:  # resolved once, by the check after it
                        unsettled.append(create)
            # A few at a time: the check is not the experiment, only its cost (a service that
            # stalls each request for its pool timeout would otherwise cost that per write).
            lanes = asyncio.Semaphore(8)

            async def read(create: Create) -> None:
                async with lanes:
                    if out_of_time():
                        return
                    if await self._check_acknowledged(client, create, report):
                        report.read_back += 1
                    else:
                        report.unchecked += 1

            async def resolve(create: Create) -> None:
                async with lanes:
                    if not out_of_time():
                        await self._resolve(client, create, db, report, resolve_with_key)
            await asyncio.gather(*(resolve(c) for c in unsettled))
            if rows is not None and len(read_back) > READ_BACK_SAMPLE:
                read_back = self.rng.sample(read_back, READ_BACK_SAMPLE)
            await asyncio.gather(*(read(c) for c in read_back))
        if report.unchecked:
            budget = f", or the check's {budget_s:g} s ran out" if budget_s is not None else ""
            report.problems.append(f"{report.unchecked} writes not checked: the service did not "
                                   f"answer within {request_timeout_s:g} s{budget}")
        self._checked = len(self.creates)
        return report

    async def _check_acknowledged(self, client: httpx.AsyncClient, create: Create,
                                  report: LedgerReport) -> bool:
        """Read one acknowledged write back; False when no answer came (which says nothing
        about the write)."""
        try:
            response = await self.contract.read_request(create.new_id).send(client)
        except httpx.HTTPError:
            return False
        try:
            read: Any = response.json()
        except ValueError:
            read = None
        if (response.status_code != 200
                or not self.contract.reads_back(create.user, create.name, read)) \
                and self._first_time("lost", create.name):
            report.lost += 1
            report.problems.append(
                f"lost {create.name}: {response.status_code} {response.text[:120]}")
        return True

    async def _resolve(self, client: httpx.AsyncClient, create: Create, db: Path | str,
                       report: LedgerReport, with_key: bool) -> None:
        told = create.outcome, create.status, create.detail
        await self.send(client, create, with_key)
        retry = f"{create.status} {create.detail}"
        if create.outcome != "acknowledged":
            # What the client was told stays what the ledger judges: a retry refused (a 409
            # for a name the first attempt did commit) is no new answer to the first one.
            create.outcome, create.status, create.detail = told
        table = self.contract.table
        if table is None:
            # Without the table only the retry's answer can be judged.
            if create.outcome != "acknowledged":
                report.unresolved += 1
                report.problems.append(f"unresolved {create.name}: retry answered {retry}")
            return
        count = _query(db, f"SELECT count(*) FROM {table.table} "
                           f"WHERE {table.unique_column} = ?", (create.name,))
        if count[0][0] > 1 and self._first_time("dup", create.name):
            # Written again by the retry: the service did not honour the key. Counted here,
            # by the check of the scenario whose write it was, not by the next check's count.
            report.duplicated += 1
            report.problems.append(f"duplicated {create.name}: its retry wrote it again")
        if create.outcome != "acknowledged" or count != [(1,)]:
            report.unresolved += 1
            report.problems.append(
                f"unresolved {create.name}: retry answered {retry}, rows={count}")
            return
        # The retry's own answer says whether the first attempt had committed.
        if create.detail == "replayed":
            report.recovered += 1
        else:
            report.resolved += 1


def _query(db: Path | str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """`db` is an SQLite file or a database URL (sqlite:/// or postgresql+psycopg://)."""
    if isinstance(db, str) and "://" in db:
        return query_url(db, sql, params)
    return query(db, sql, params)


def _integrity(db: Path | str) -> list[tuple[Any, ...]]:
    if isinstance(db, str) and db.startswith("postgresql"):
        # PostgreSQL has no integrity_check; amcheck needs an extension. The server's own
        # crash recovery is what a restart tests there; report it as SQLite would.
        return [("ok",)]
    return _query(db, "PRAGMA integrity_check")


def _rows(db: Path | str, table: Table) -> list[tuple[Any, ...]]:
    """(id, unique value, key) per row; key None for a service without idempotency keys (the
    naive baseline), whose indeterminate writes then stay unresolved."""
    if isinstance(db, str) and db.startswith("postgresql"):
        tables = {name for (name,) in _query(db, "SELECT tablename FROM pg_tables")}
    else:
        tables = {name for (name,) in _query(db, "SELECT name FROM sqlite_master")}
    t = table
    if t.keys_table is not None and t.keys_table in tables:
        return _query(db, f"SELECT u.{t.id_column}, u.{t.unique_column}, k.{t.key_column} "
                          f"FROM {t.table} u LEFT JOIN {t.keys_table} k "
                          f"ON k.{t.key_ref_column} = u.{t.id_column}")
    return _query(db, f"SELECT {t.id_column}, {t.unique_column}, NULL FROM {t.table}")
