"""The catalogue of causes (causes.toml beside this module), loaded and checked.

A cause is data, not prose in code: the battery's findings and the report's analysis name a
cause by its id and take its title, fix and the rest from here, so the words for one cause
exist once.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import SqliteFaultsError

CATALOGUE = Path(__file__).with_name("causes.toml")
PRIORITIES = ("P1", "P2", "P3")
COMPLEXITIES = ("low", "medium", "high")


class CatalogueError(SqliteFaultsError, ValueError):
    """The catalogue file is malformed, or a cause id is not in it."""


@dataclass(frozen=True)
class Cause:
    id: str
    title: str
    symptom: str
    experiment: str
    fix: str
    tradeoffs: str
    monitor: str
    priority: str
    complexity: str
    benefit: str
    # The hardened service's alerts (ops/alerts.yml) that watch for the cause.
    alerts: tuple[str, ...] = ()
    # A change the report can apply from outside, and the scenarios to run again with it.
    counterfactual: dict[str, Any] = field(default_factory=dict)


def load(path: Path = CATALOGUE) -> dict[str, Cause]:
    """Every cause of the catalogue at `path`, by id; CatalogueError names what is wrong."""
    with path.open("rb") as f:
        entries = tomllib.load(f).get("cause", {})
    keys = {f.name for f in fields(Cause)} - {"id"}
    optional = {"alerts", "counterfactual"}
    causes = {}
    for cause_id, entry in entries.items():
        missing, unknown = keys - optional - set(entry), set(entry) - keys
        if missing or unknown:
            raise CatalogueError(f"{path}: cause {cause_id!r}: missing {sorted(missing)}, "
                                 f"unknown {sorted(unknown)}")
        if entry["priority"] not in PRIORITIES or entry["complexity"] not in COMPLEXITIES:
            raise CatalogueError(f"{path}: cause {cause_id!r}: priority must be one of "
                                 f"{PRIORITIES} and complexity one of {COMPLEXITIES}")
        change = entry.get("counterfactual", {})
        if change and (set(change) != {"pragmas", "scenarios"} or not change["pragmas"]):
            raise CatalogueError(f"{path}: cause {cause_id!r}: a counterfactual has pragmas "
                                 "and scenarios")
        causes[cause_id] = Cause(id=cause_id, **{**entry,
                                                 "alerts": tuple(entry.get("alerts", ()))})
    return causes


CAUSES = load()


def cause(cause_id: str) -> Cause:
    try:
        return CAUSES[cause_id]
    except KeyError:
        raise CatalogueError(f"no cause {cause_id!r} in the catalogue; known: "
                             f"{', '.join(sorted(CAUSES))}") from None
