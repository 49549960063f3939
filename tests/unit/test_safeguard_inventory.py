"""The safeguard inventory stays true to the code: every mutant still applies to app/, every
test it names exists, and docs/safeguards.md shows the current rows."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
from check_mutants import END, START, inventory_markdown  # noqa: E402
from safeguards import SAFEGUARDS, Safeguard  # noqa: E402


@pytest.mark.parametrize("row", SAFEGUARDS, ids=lambda row: row.name)
def test_each_mutant_applies_to_the_code_once(row: Safeguard) -> None:
    for edit in row.edits:
        assert (ROOT / edit.path).read_text().count(edit.old) == 1, (edit.path, edit.old)


@pytest.mark.parametrize("row", SAFEGUARDS, ids=lambda row: row.name)
def test_each_named_test_exists(row: Safeguard) -> None:
    assert row.tests, "a safeguard needs at least one test that goes red without it"
    for node in row.tests:
        path, _, name = node.partition("::")
        name = name.split("[", 1)[0]  # a parametrized test's id names one of its cases
        source = (ROOT / path).read_text()
        assert re.search(rf"^(async )?def {re.escape(name)}\(", source, re.M), node


def test_mutant_names_are_unique() -> None:
    names = [row.name for row in SAFEGUARDS]
    assert len(names) == len(set(names))


def test_the_docs_show_the_current_inventory() -> None:
    doc = (ROOT / "docs" / "safeguards.md").read_text()
    section = START + doc.split(START, 1)[1].split(END, 1)[0] + END
    assert section == inventory_markdown(SAFEGUARDS), (
        "docs/safeguards.md is stale: run scripts/check_mutants.py --write-inventory "
        "docs/safeguards.md")
