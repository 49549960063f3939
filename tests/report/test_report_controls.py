"""Controls for the report's verdicts: a check that passes a broken service is worse than no
check, so each kind of verdict is shown breached by a service built to breach it and met by
the hardened service, on the same faults in the same run.

The services built to breach are the naive Flask service (examples/wsgi_service/naive.py)
with real mistakes switched on by NAIVE_FLAWS; the table in docs/safeguards.md lists each
verdict with its controls, including those judged on hand-made samples instead.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from examples.targets import FOLDER

# The report runs its services on its own --backend (SQLite here): judged once, in the
# SQLite run, not again in the PostgreSQL one.
pytestmark = pytest.mark.sqlite_only("the report's own --backend is SQLite in these runs")

NAIVE_FLASK = FOLDER / "wsgi_api_naive.toml"
ROOT = FOLDER.parent.parent


@dataclass(frozen=True)
class Control:
    flaws: str
    scenarios: str
    breached: frozenset[str]  # the kinds of verdict the flawed service must breach
    # The causes the analysis must confirm in the flawed service (beside the configuration
    # every naive Flask app has: a rollback journal, the standard library's affected SQLite).
    confirms: frozenset[str] = frozenset()
    claims_keys: bool = False  # its target says it takes Idempotency-Key (it ignores it)


CONTROLS = {
    # Statements slowed, and no deadline to bound them: slow answers where the service is
    # expected to answer well, and late 500s where it is expected to refuse fast.
    "no-deadline": Control("", "slow-statements",
                           frozenset({"p95 latency", "error rate", "fail fast"}),
                           confirms=frozenset({"no-statement-deadline"})),
    # Transient errors turned into 500s, some of them for creates that committed (the
    # read-back after COMMIT failed), which the ledger's keyed retry then writes a second
    # time (the key is ignored and names are not unique). The scenario runs alone, so the
    # duplicates must be found by its own check, not by a later one's count of the table.
    "committed-500s": Control(
        "no-unique,read-after-commit", "transient-errors-high",
        frozenset({"error rate", "errors that committed", "duplicate writes",
                   "indeterminate writes unresolved"}),
        confirms=frozenset({"error-after-commit", "no-retry"}), claims_keys=True),
    # Answered before the COMMIT, which a SIGKILL then never lets happen.
    "write-behind": Control("ack-before-commit", "sigkill-restart",
                            frozenset({"acknowledged writes lost"}),
                            confirms=frozenset({"acknowledged-before-commit"})),
    # A busy timeout of 0: every write that meets a lock pulse fails at once. The analysis
    # runs the scenario again with PRAGMA busy_timeout applied from outside, which must
    # remove breaches (the counterfactual that verifies the recommendation).
    "no-wait": Control("no-wait", "write-lock-pulses", frozenset({"error rate"}),
                       confirms=frozenset({"lock-not-waited"})),
    # A circuit breaker that never closes keeps failing creates after the fault has ended.
    "no-recovery": Control("breaker-never-closes", "transient-errors-high",
                           frozenset({"recovery"})),
}


def flawed_target(control: Control, folder: Path) -> Path:
    text = (NAIVE_FLASK.read_text()
            .replace('root = "../.."', f'root = "{ROOT}"')
            .replace("[env]\n", f'[env]\nNAIVE_FLAWS = "{control.flaws}"\n'))
    if control.claims_keys:
        text = text.replace('id_field = "id"\n',
                            'id_field = "id"\nidempotency_header = "Idempotency-Key"\n')
    target = folder / "flawed.toml"
    target.write_text(text)
    return target


def statuses_by_kind(results: list[dict]) -> dict[str, set[str]]:  # type: ignore[type-arg]
    """Each kind of verdict ("p95 latency (fault)" is of kind "p95 latency") and the statuses
    it was given."""
    kinds: dict[str, set[str]] = {}
    for result in results:
        for verdict in result["verdicts"]:
            kind = verdict["slo"].split(" (")[0]
            kinds.setdefault(kind, set()).add(verdict["status"])
    return kinds


@pytest.mark.parametrize("name", sorted(CONTROLS))
def test_each_verdict_is_breached_by_a_service_built_to_breach_it_and_met_by_the_hardened(
        name: str, tmp_path: Path,
        run_report: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    control = CONTROLS[name]
    out = tmp_path / "report"
    proc = run_report(out, "--baseline", str(flawed_target(control, tmp_path)),
                      "--scenarios", control.scenarios)
    assert proc.returncode == 0, proc.stderr[-2000:]
    targets = json.loads((out / "report.json").read_text())["targets"]
    flawed = statuses_by_kind(targets["wsgi-api-naive"])
    hardened = statuses_by_kind(targets["hardened"])
    missed = sorted(kind for kind in control.breached if "breached" not in flawed.get(kind, ()))
    assert not missed, f"the flawed service was not judged breaching {missed}: {flawed}"
    # The positive control: the same checks, on the same faults, met by the hardened service.
    assert {kind: statuses for kind, statuses in hardened.items()
            if statuses != {"met"}} == {}
    assert control.breached <= set(hardened)

    # The analysis, both ways: the flawed service's causes confirmed with their evidence,
    # none of the hardened service's (it met every check, and its configuration is right).
    analysis = json.loads((out / "report.json").read_text())["analysis"]
    flawed_causes = {h["cause"]: h for h in analysis["wsgi-api-naive"]}
    expected = control.confirms | {"rollback-journal", "affected-sqlite"}
    assert {c for c in expected if flawed_causes[c]["verdict"] != "confirmed"} == set(), [
        flawed_causes[c] for c in expected]
    assert [h for h in analysis["hardened"] if h["verdict"] == "confirmed"] == []
    assert {h["cause"] for h in analysis["hardened"] if h["verdict"] == "refuted"} >= expected
    if "lock-not-waited" in control.confirms:
        verified = flawed_causes["lock-not-waited"]["verified"]
        removed = re.search(r"PRAGMA busy_timeout=1000 applied from outside "
                            r"\(write-lock-pulses\): (\d+) of the (\d+) breaches there met",
                            verified)
        assert removed and int(removed[1]) >= 1, verified
    summary = (out / "report.md").read_text().split("## Executive summary", 1)[1]
    assert re.search(r"\*\*hardened\*\*: \d+ of \d+ checks met[^;]*; 0 causes confirmed", summary)
    assert re.search(r"\*\*wsgi-api-naive\*\*: \d+ of \d+ checks met[^;]*; [1-9]\d* causes "
                     r"confirmed", summary)
