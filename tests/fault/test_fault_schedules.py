"""Property-based fault schedules: random interleavings of creates, reads, duplicate names and
repeated Idempotency-Keys, each create under a random fault, against a model of what the
service promised.

Invariants, after every step: every 201 stays readable with the same data; the database holds
exactly the acknowledged users (so names stay unique and a failed create left no row); a failed
keyed create retried later resolves to exactly one row; the retry and outcome counters in
/metrics agree with the model. Hypothesis prints the failing schedule (and a reproduction
blob); `--hypothesis-seed=N` replays a run, `HYPOTHESIS_PROFILE=nightly` runs many more.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from sqlite_faults.inspect_db import query
from sqlite_faults.observe import MetricsSnapshot
from sqlite_faults.sql_errors import InjectSqlError

from app.main import create_app
from app.settings import Settings

MAX_ATTEMPTS = 3
NAMES = st.sampled_from(["ada", "bob", "cy", "dee", "eve"])
PASSWORDS = st.sampled_from(["password-one", "password-two"])
KEYS = st.one_of(st.none(), st.sampled_from(["k1", "k2", "k3", "k4"]))
# (kind, where, times): what goes wrong during one create.
FAULTS = st.sampled_from([
    None,
    ("busy", "insert", 1),
    ("busy", "insert", MAX_ATTEMPTS - 1),
    ("busy", "any", None),  # every statement, BEGIN included, past the retry budget
    ("io_error", "commit", 1),
])


@dataclass(frozen=True)
class Acked:
    id: int
    name: str
    password: str
    created_at: str


class FaultSchedules(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="fault-schedule-"))
        self.loop = asyncio.new_event_loop()
        self.app = create_app(Settings(
            database_url=f"sqlite:///{self.tmp / 'users.db'}",
            password_hash_time_cost=1, password_hash_memory_kib=8,
            sqlite_checkpoint_interval_s=0, retry_max_attempts=MAX_ATTEMPTS,
            retry_backoff_initial_s=0.001, retry_backoff_max_s=0.002,
        ))
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app),
                                        base_url="http://service.test")
        self.acked: dict[str, Acked] = {}  # by name
        self.keys: dict[str, Acked] = {}  # Idempotency-Key -> the user it created
        self.failed_keyed: list[tuple[str, str, str]] = []  # (name, password, key)
        self.expected_retries = 0
        self.outcomes = {"ok": 0, "busy": 0, "unavailable": 0, "conflict": 0}

    def teardown(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.app.state.db.close()
        self.app.state.hasher.close()
        self.loop.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    # -- the model ------------------------------------------------------------------

    def expect(self, name: str, password: str, key: str | None,
               fault: tuple[str, str, int | None] | None) -> tuple[int, int, str]:
        """(status, retries, outcome) the service must answer with."""
        replay = key is not None and key in self.keys
        _kind, where, times = fault or (None, None, None)
        if where == "any":
            return 503, MAX_ATTEMPTS - 1, "busy"
        if replay:
            # No INSERT runs; the read-only transaction still commits.
            return (503, 0, "unavailable") if where == "commit" else (0, 0, "ok")
        retries = times if where == "insert" else 0
        if name in self.acked:
            return 409, retries or 0, "conflict"  # the UNIQUE check fails before COMMIT
        if where == "commit":
            return 503, 0, "unavailable"
        return 201, retries or 0, "ok"

    # -- rules ----------------------------------------------------------------------

    def _create(self, name: str, password: str, key: str | None,
                fault: tuple[str, str, int | None] | None) -> None:
        status, retries, outcome = self.expect(name, password, key, fault)
        with ExitStack() as stack:
            if fault is not None:
                kind, where, times = fault
                stack.enter_context(InjectSqlError(
                    self.app.state.db.writer_engine, kind,
                    at="commit" if where == "commit" else "statement",
                    match=r"^INSERT INTO users" if where == "insert" else None, times=times,
                ))
            headers = {"Idempotency-Key": key} if key else {}
            response = self.run(self.client.post(
                "/users/", json={"name": name, "password": password}, headers=headers))

        self.expected_retries += retries
        self.outcomes[outcome] += 1
        if status == 0:  # a replay: the original user, or 422 for another body
            original = self.keys[key]  # type: ignore[index]
            if (original.name, original.password) == (name, password):
                assert response.status_code == 201, response.text
                assert response.json()["id"] == original.id
            else:
                assert response.status_code == 422, response.text
            return
        assert response.status_code == status, (fault, response.text)
        if status == 201:
            body = response.json()
            acked = Acked(body["id"], name, password, body["created_at"])
            self.acked[name] = acked
            if key is not None:
                self.keys[key] = acked
        elif status == 503 and key is not None:
            self.failed_keyed.append((name, password, key))

    @rule(name=NAMES, password=PASSWORDS, key=KEYS, fault=FAULTS)
    def create(self, name: str, password: str, key: str | None,
               fault: tuple[str, str, int | None] | None) -> None:
        self._create(name, password, key, fault)

    @precondition(lambda self: bool(self.failed_keyed))
    @rule(data=st.data())
    def retry_a_failed_create_with_its_key(self, data: st.DataObject) -> None:
        name, password, key = data.draw(st.sampled_from(self.failed_keyed))
        self.failed_keyed.remove((name, password, key))
        self._create(name, password, key, None)
        if key in self.keys:  # resolved: exactly one row for it
            rows = self.db_rows(f"SELECT count(*) FROM idempotency_keys WHERE key = '{key}'")
            assert rows == [(1,)]

    @rule(user_id=st.integers(min_value=1, max_value=40))
    def read(self, user_id: int) -> None:
        response = self.run(self.client.get(f"/users/{user_id}"))
        known = {a.id: a for a in self.acked.values()}
        if user_id in known:
            assert response.status_code == 200
            assert response.json()["name"] == known[user_id].name
        else:
            assert response.status_code == 404, response.text

    # -- invariants -----------------------------------------------------------------

    def db_rows(self, sql: str) -> list[tuple[Any, ...]]:
        return query(self.tmp / "users.db", sql)

    @invariant()
    def database_holds_exactly_the_acknowledged_users(self) -> None:
        rows = self.db_rows("SELECT id, name FROM users ORDER BY id")
        assert rows == sorted((a.id, a.name) for a in self.acked.values())

    @invariant()
    def every_acknowledged_user_reads_back_identically(self) -> None:
        for acked in self.acked.values():
            body = self.run(self.client.get(f"/users/{acked.id}")).json()
            assert body == {"id": acked.id, "name": acked.name, "created_at": acked.created_at}

    @invariant()
    def metrics_agree_with_the_model(self) -> None:
        metrics = MetricsSnapshot(self.run(self.client.get("/metrics")).text)
        assert metrics.value("db_retries_total", operation="create_user") == self.expected_retries
        for outcome, count in self.outcomes.items():
            assert metrics.value("db_calls_total", operation="create_user",
                                 outcome=outcome) == count, outcome


# The Hypothesis profile loaded by conftest.py (HYPOTHESIS_PROFILE: ci or nightly) applies.
TestFaultSchedules = FaultSchedules.TestCase
TestFaultSchedules = pytest.mark.sqlite_only(
    "the state machine builds an SQLite database per example")(TestFaultSchedules)
