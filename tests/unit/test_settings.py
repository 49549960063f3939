"""Settings: defaults, environment variables and the validation that refuses bad values."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy.engine import make_url

from app.settings import DEFAULT_DATABASE_URL, PROJECT_ROOT, Settings

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No variable from the caller's shell may leak into a test of the defaults."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
        monkeypatch.delenv(name, raising=False)


def test_database_url_defaults_to_a_file_in_the_project_data_folder() -> None:
    settings = Settings()
    database = make_url(settings.database_url).database
    assert database is not None
    path = Path(database)
    assert settings.database_url == DEFAULT_DATABASE_URL
    assert path.is_absolute()
    assert path.parent == REPO_ROOT / "data"
    assert PROJECT_ROOT == REPO_ROOT
    assert path.name == "users.db"
    assert settings.is_sqlite is True


def test_defaults() -> None:
    settings = Settings()
    assert settings.sqlite_driver == "pysqlite3"
    assert settings.sqlite_synchronous == "NORMAL"
    assert settings.sqlite_allow_affected_version is False
    assert settings.db_deadline_s == 5.0
    assert settings.db_read_workers == 2
    assert settings.db_queue_limit == 1024
    assert settings.admission_max_wait_s is None
    assert settings.admission_wait_s == settings.db_deadline_s / 2
    assert settings.retry_max_attempts == 5
    assert settings.retry_backoff_initial_s == 0.01
    assert settings.retry_backoff_max_s == 0.25
    assert settings.retry_after_s == 1
    # OWASP's minimum argon2id cost.
    assert (
        settings.password_hash_time_cost,
        settings.password_hash_memory_kib,
        settings.password_hash_parallelism,
    ) == (2, 19456, 1)
    # One hash per CPU this process may use, at most 4; the event loop is the default's.
    assert settings.password_hash_concurrency is None
    assert settings.hash_concurrency == min(4, len(os.sched_getaffinity(0)))
    assert Settings(password_hash_concurrency=7).hash_concurrency == 7
    assert settings.http_event_loop == "uvloop"


@pytest.mark.parametrize("mode", ["NORMAL", "FULL", "EXTRA"])
def test_synchronous_accepts_the_safe_modes(mode: str) -> None:
    assert Settings(sqlite_synchronous=mode).sqlite_synchronous == mode


@pytest.mark.parametrize("mode", ["OFF", "0", "sometimes"])
def test_synchronous_rejects_off_and_unknown_modes(mode: str) -> None:
    with pytest.raises(ValidationError, match="sqlite_synchronous"):
        Settings(sqlite_synchronous=mode)


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_DEADLINE_S", "2.5")
    monkeypatch.setenv("SQLITE_SYNCHRONOUS", "FULL")
    monkeypatch.setenv("DATABASE_URL", "sqlite:////tmp/elsewhere.db")
    monkeypatch.setenv("SQLITE_ALLOW_AFFECTED_VERSION", "true")
    monkeypatch.setenv("DB_QUEUE_LIMIT", "0")
    settings = Settings()
    assert settings.db_deadline_s == 2.5
    assert settings.sqlite_synchronous == "FULL"
    assert settings.database_url == "sqlite:////tmp/elsewhere.db"
    assert settings.sqlite_allow_affected_version is True
    assert settings.db_queue_limit == 0


def test_environment_variable_names_are_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("db_read_workers", "7")
    assert Settings().db_read_workers == 7


def test_synchronous_off_from_the_environment_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQLITE_SYNCHRONOUS", "OFF")
    with pytest.raises(ValidationError, match="sqlite_synchronous"):
        Settings()


def test_negative_deadline_from_the_environment_is_rejected(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DB_DEADLINE_S", "-1")
    with pytest.raises(ValidationError, match="db_deadline_s"):
        Settings()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("db_deadline_s", -1.0),
        ("db_deadline_s", 0.0),
        ("readyz_deadline_s", -0.5),
        ("db_read_workers", 0),
        ("db_queue_limit", -1),
        ("retry_max_attempts", 0),
        ("retry_backoff_initial_s", 0.0),
        ("retry_after_s", 0),
        ("sqlite_busy_timeout_ms", -5),
        ("sqlite_checkpoint_interval_s", -1.0),
        ("password_hash_concurrency", 0),
    ],
)
def test_out_of_range_values_are_rejected(field: str, value: float) -> None:
    with pytest.raises(ValidationError, match=field):
        Settings(**{field: value})


def test_zero_queue_limit_and_zero_checkpoint_interval_are_allowed() -> None:
    settings = Settings(db_queue_limit=0, sqlite_checkpoint_interval_s=0)
    assert settings.db_queue_limit == 0
    assert settings.sqlite_checkpoint_interval_s == 0


def test_backoff_max_below_initial_is_rejected() -> None:
    with pytest.raises(ValidationError, match="retry_backoff_max_s must be >="):
        Settings(retry_backoff_initial_s=0.5, retry_backoff_max_s=0.1)


def test_backoff_max_equal_to_initial_is_allowed() -> None:
    settings = Settings(retry_backoff_initial_s=0.2, retry_backoff_max_s=0.2)
    assert settings.retry_backoff_max_s == settings.retry_backoff_initial_s == 0.2


def test_argon2_memory_below_eight_per_lane_is_rejected() -> None:
    with pytest.raises(ValidationError, match="8 \\* parallelism"):
        Settings(password_hash_memory_kib=31, password_hash_parallelism=4)


def test_argon2_memory_of_exactly_eight_per_lane_is_allowed() -> None:
    settings = Settings(password_hash_memory_kib=32, password_hash_parallelism=4)
    assert settings.password_hash_memory_kib == 32


def test_unknown_driver_is_rejected() -> None:
    with pytest.raises(ValidationError, match="sqlite_driver"):
        Settings(sqlite_driver="postgres")


@pytest.mark.parametrize(
    "field", ["db_deadline_s", "readyz_deadline_s", "retry_backoff_max_s",
              "sqlite_checkpoint_interval_s"],
)
def test_infinite_durations_are_rejected(field: str) -> None:
    with pytest.raises(ValidationError):
        Settings(**{field: float("inf")})


def test_the_readme_configuration_table_lists_every_setting() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    rows = {line.split("`")[1] for line in readme.splitlines() if line.startswith("| `")}
    assert {name.upper() for name in Settings.model_fields} <= rows


def test_graceful_shutdown_outlasts_the_db_deadline() -> None:
    assert Settings(db_deadline_s=5.0).graceful_shutdown_s == 10.0
    assert Settings(db_deadline_s=5.0, http_graceful_shutdown_s=6.0).graceful_shutdown_s == 6.0
    with pytest.raises(ValueError, match="longer than db_deadline_s"):
        Settings(db_deadline_s=5.0, http_graceful_shutdown_s=5.0)
