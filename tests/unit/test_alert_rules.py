"""ops/alerts.yml: each alert fires on the series that should fire it and stays quiet on a
healthy one (promtool test rules, on synthetic series), and every metric a rule names is one
the service really exports, so renaming a metric breaks this test instead of an alert.

The promtool test file is built here from CASES: each case gives the series of a "bad"
instance (which must fire) and a "good" one (which must not), and promtool compares the
alerts, labels and annotations included, at one evaluation time past the rule's `for:`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from sqlite_faults.causes import CAUSES

RULES = Path(__file__).resolve().parents[2] / "ops" / "alerts.yml"
JOB = "users-service"
# Series Prometheus makes itself for every scrape target, not the service.
PROMETHEUS_OWN = {"up"}


@dataclass(frozen=True)
class Series:
    selector: str  # metric{labels} without job and instance
    bad: str  # promtool's expanding notation, one value per minute
    good: str


@dataclass(frozen=True)
class Case:
    series: tuple[Series, ...]
    at: str  # evaluation time, past the rule's `for:`
    firing: tuple[str, ...] = ("bad",)  # instances expected to fire
    extra: tuple[tuple[str, Series], ...] = ()  # (instance, series) beyond bad/good


CALLS_OK = 'db_calls_total{operation="create_user",outcome="ok"}'

CASES: dict[str, Case] = {
    "UsersServiceDown": Case((Series("up", "0x10", "1x10"),), at="5m"),
    "UsersWriteRetriesHigh": Case((
        Series(CALLS_OK, "0+100x30", "0+100x30"),
        Series('db_retries_total{operation="create_user",outcome="ok"}', "0+10x30", "0+1x30"),
    ), at="20m"),
    "UsersDeadlinesExceeded": Case((
        Series(CALLS_OK, "0+100x30", "0+100x30"),
        Series('db_calls_total{operation="create_user",outcome="timeout"}', "0+5x30", "0x30"),
        Series('db_timeouts_total{operation="create_user"}', "0+5x30", "0x30"),
    ), at="15m"),
    "UsersLockTimeouts": Case((
        Series(CALLS_OK, "0+100x30", "0+100x30"),
        Series('db_lock_timeouts_total{operation="create_user"}', "0+5x30", "0+0.5x30"),
    ), at="15m"),
    "UsersStorageUnavailable": Case((
        Series(CALLS_OK, "0+100x10", "0+100x10"),
        Series('db_calls_total{operation="create_user",outcome="unavailable"}',
               "0 0 0 1 1 1 1 1 1 1", "0x10"),
    ), at="5m"),
    "UsersOverloaded": Case((
        Series(CALLS_OK, "0+100x30", "0+100x30"),
        Series('db_calls_total{operation="create_user",outcome="overloaded"}', "0+10x30",
               "0+0.5x30"),
    ), at="15m"),
    "UsersRetryBudgetSpent": Case((
        Series('db_retries_denied_total{operation="create_user"}', "0+20x20", "0x20"),
    ), at="10m"),
    "UsersSheddingLoad": Case((
        Series('db_calls_total{operation="get_user",outcome="ok"}', "0+1000x30", "0+1000x30"),
        Series('http_refusals_total{reason="overloaded"}', "0+100x30", "0+2x30"),
    ), at="15m"),
    "UsersRequestsQueueing": Case((
        Series("http_request_queue_seconds_sum", "0+30x20", "0+1x20"),
        Series("http_request_queue_seconds_count", "0+60x20", "0+60x20"),
    ), at="15m"),
    "UsersLaneSaturated": Case((
        Series('db_inflight{lane="reader"}', "4x10", "3x10"),
        Series('db_lane_workers{lane="reader"}', "4x10", "4x10"),
    ), at="8m"),
    "UsersQueueFilling": Case((
        Series('db_queue_depth{lane="writer"}', "40x10", "10x10"),
        Series('db_lane_queue_limit{lane="writer"}', "64x10", "64x10"),
        # A lane with no queue (maintenance) never counts as filling.
        Series('db_queue_depth{lane="maintenance"}', "0x10", "0x10"),
        Series('db_lane_queue_limit{lane="maintenance"}', "0x10", "0x10"),
    ), at="5m"),
    "UsersPasswordHashingSaturated": Case((
        Series("password_hash_waiting", "10x10", "3x10"),
        Series("password_hash_slots", "4x10", "4x10"),
    ), at="8m"),
    "UsersCheckpointsStalled": Case((
        Series("sqlite_checkpoint_interval_seconds", "1x20", "1x20"),
        Series("sqlite_checkpoint_age_seconds", "0+60x20", "0.5x20"),
    ), at="12m", firing=("bad", "never"), extra=(
        # Never checkpointed since start-up: the loop is not running.
        ("never", Series("sqlite_checkpoint_interval_seconds", "1x20", "")),
        ("never", Series("sqlite_checkpoint_age_seconds", "-1x20", "")),
        # Checkpoints left to SQLite (interval 0): the age is always -1, and that is fine.
        ("sqlite-own", Series("sqlite_checkpoint_interval_seconds", "0x20", "")),
        ("sqlite-own", Series("sqlite_checkpoint_age_seconds", "-1x20", "")),
    )),
    "UsersCheckpointLagging": Case((
        Series("sqlite_checkpoint_lag_frames", "20000x20", "50x20"),
    ), at="15m"),
    "UsersWalPastLimit": Case((
        Series("sqlite_wal_bytes", "100000000x20", "1000000x20"),
        Series("sqlite_journal_size_limit_bytes", "67108864x20", "67108864x20"),
    ), at="15m"),
}


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def with_target(selector: str, instance: str) -> str:
    target = f'job="{JOB}",instance="{instance}"'
    if "{" in selector:
        return selector.replace("{", "{" + target + ",", 1)
    return selector + "{" + target + "}"


def alert_labels(rule: dict[str, Any], case: Case, instance: str) -> dict[str, str]:
    """The labels promtool should report: the rule's, plus what survives the expression's
    aggregation (instance always; job and lane where the expression keeps them)."""
    labels = {**rule.get("labels", {}), "instance": instance}
    if "sum by (instance)" not in rule["expr"]:
        labels["job"] = JOB
        lane = re.search(r'lane="(\w+)"', case.series[0].selector)  # the lane at fault
        if lane:
            labels["lane"] = lane.group(1)
    return labels


def promtool_tests() -> dict[str, Any]:
    tests = []
    for rule in rules():
        case = CASES[rule["alert"]]
        series = [{"series": with_target(s.selector, inst), "values": values}
                  for s in case.series for inst, values in (("bad", s.bad), ("good", s.good))]
        series += [{"series": with_target(s.selector, inst), "values": s.bad}
                   for inst, s in case.extra]
        tests.append({
            "name": rule["alert"],
            "interval": "1m",
            "input_series": series,
            "alert_rule_test": [{
                "eval_time": case.at,
                "alertname": rule["alert"],
                "exp_alerts": [{"exp_labels": alert_labels(rule, case, inst),
                                "exp_annotations": rule["annotations"]}
                               for inst in case.firing],
            }],
        })
    return {"rule_files": [str(RULES)], "evaluation_interval": "1m", "tests": tests}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not installed (apt-get install prometheus; ./run tests "
                    "installs it as root)")
    return path


def test_every_alert_has_a_case_a_for_duration_and_a_runbook() -> None:
    assert sorted(CASES) == sorted(rule["alert"] for rule in rules())
    for rule in rules():
        assert "for" in rule, rule["alert"]
        assert rule["labels"]["severity"] in ("page", "warning"), rule["alert"]
        assert set(rule["annotations"]) == {"summary", "runbook"}, rule["alert"]


def test_the_rules_file_is_valid() -> None:
    result = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_each_alert_fires_on_its_fault_and_stays_quiet_when_healthy(tmp_path: Path) -> None:
    test_file = tmp_path / "alerts.test.yml"
    test_file.write_text(yaml.safe_dump(promtool_tests(), sort_keys=False))
    result = subprocess.run([promtool(), "test", "rules", str(test_file)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def metric_names(expr: str) -> set[str]:
    """Metric names of the selectors in a PromQL expression (every one carries a {job=...}
    matcher: checked below)."""
    return set(re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{", expr))


def test_every_selector_is_scoped_to_the_job() -> None:
    for rule in rules():
        names = metric_names(rule["expr"])
        assert names, rule["alert"]
        assert rule["expr"].count(f'job="{JOB}"') == sum(
            rule["expr"].count(name + "{") for name in names), rule["alert"]


async def test_every_metric_a_rule_names_is_exported(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    response = await client.get("/metrics")
    exported: set[str] = set()
    for family in text_string_to_metric_families(response.text):
        exported.add(family.name)
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
        exported.update(family.name + s for s in suffixes.get(family.type, ()))
    named = set().union(*(metric_names(rule["expr"]) for rule in rules())) - PROMETHEUS_OWN
    assert named - exported == set(), "rules name metrics the service does not export"


def test_every_alert_the_cause_catalogue_names_exists() -> None:
    """The report's recommendations point at the alert that watches each cause."""
    defined = set(re.findall(r"- alert: (\w+)", RULES.read_text()))
    named = {alert for cause in CAUSES.values() for alert in cause.alerts}
    assert named and named <= defined, named - defined
