"""The safeguard inventory stays true to the code: every mutant still applies to app/ (its
anchor once inside the definition it names, the result still Python), every test it names
exists, and docs/safeguards.md shows the current rows."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
from anchors import AnchorError, locate, replace  # noqa: E402
from check_mutants import END, START, inventory_markdown  # noqa: E402
from safeguards import SAFEGUARDS, Safeguard  # noqa: E402


@pytest.mark.parametrize("row", SAFEGUARDS, ids=lambda row: row.name)
def test_each_mutant_applies_to_the_code_once(row: Safeguard) -> None:
    for edit in row.edits:
        source = (ROOT / edit.path).read_text()
        mutated = replace(source, edit.old, edit.new, edit.within, edit.path)
        assert mutated != source
        ast.parse(mutated)  # a mutant is a mistake in the logic, never a syntax error


def test_an_anchor_follows_its_function_and_ignores_layout() -> None:
    source = ("def first():\n    return 1\n\n\n"
              "class Lane:\n    def take(self):\n        return wait(\n"
              "            1)\n")
    moved = source.replace("def first():\n    return 1\n\n\n", "") + (
        "\n\ndef first():\n    return 1\n")
    for text in (source, moved):
        mutated = replace(text, "return wait(1)", "return 0", "Lane.take")
        assert "return 0" in mutated and "wait" not in mutated
    with pytest.raises(AnchorError, match="first"):
        locate(source, "return wait(1)", "first")


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
