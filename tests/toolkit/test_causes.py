"""The catalogue of causes (sqlite_faults/causes.toml) loads, and a malformed one or an
unknown id is named, not guessed at."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlite_faults.causes import CAUSES, CatalogueError, cause, load


def test_the_catalogue_holds_the_seed_reports_causes_and_the_batterys() -> None:
    # The seed report guessed at three (lock contention and pool exhaustion, missing retries,
    # missing timeouts); the battery finds the rest.
    assert {"pool-exhaustion", "no-retry", "unbounded-lock-wait", "no-statement-deadline",
            "rollback-journal", "affected-sqlite", "bad-input-500", "lock-not-waited",
            "blocking-event-loop"} <= set(CAUSES)
    assert all(c.title and c.fix and c.experiment for c in CAUSES.values())


def test_an_unknown_cause_is_named_with_the_known_ones() -> None:
    with pytest.raises(CatalogueError, match=r"no cause 'no-such-cause'.*rollback-journal"):
        cause("no-such-cause")


def test_a_cause_missing_a_key_is_refused(tmp_path: Path) -> None:
    broken = tmp_path / "causes.toml"
    broken.write_text('[cause.half]\ntitle = "half a cause"\npriority = "P1"\n')
    with pytest.raises(CatalogueError, match=r"cause 'half': missing \['benefit'"):
        load(broken)


def test_a_priority_outside_the_scale_is_refused(tmp_path: Path) -> None:
    entry = {field: "x" for field in ("title", "symptom", "experiment", "fix", "tradeoffs",
                                      "monitor", "benefit")}
    text = "[cause.odd]\n" + "".join(f'{k} = "{v}"\n' for k, v in entry.items())
    (tmp_path / "causes.toml").write_text(text + 'priority = "urgent"\ncomplexity = "low"\n')
    with pytest.raises(CatalogueError, match="priority must be one of"):
        load(tmp_path / "causes.toml")
