"""Do runs of the same code agree? The verdicts of several report.json files, check by check.

    python -m sqlite_faults.report.agreement build/a/report.json build/b/report.json ...

A report is worth quoting only if the same code gives the same verdicts: a different seed
should change figures, not conclusions. This compares the first service of each report
(`--service NAME` for another) check by check (scenario, endpoint, client, SLO) and prints
every check whose status (met, breached, inconclusive) differs between the runs, with its
observed figure and margin in each, in three groups:

- outside the network scenarios: the service's own behaviour under faults it can handle;
- recovery, in every scenario: whether the service is back after the fault;
- the network scenarios' other checks (shown, not held against the agreement: a network
  fault's random draws are the seed's, and some checks sit at their threshold by design).

Exit status 1 when the first two groups disagree anywhere, else 0; 2 for bad usage. Checks that
agreed but came within `--near` of their threshold in some run are listed too, with their
margins: they are the ones a noisier machine could flip.

`./run report-agreement` runs the report several times with different seeds and then this.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Key = tuple[str, str, str, str]  # scenario, endpoint, profile, slo


@dataclass(frozen=True)
class Judged:
    status: str
    observed: str
    margin: str
    network: bool

    @property
    def relative_margin(self) -> float | None:
        """The margin as a share of the objective's figure, when both are numbers."""
        margin = _number(self.margin)
        observed = _number(self.observed)
        if margin is None or observed is None:
            return None
        threshold = observed - margin
        return abs(margin) / abs(threshold) if threshold else None


def _number(text: str) -> float | None:
    found = re.search(r"[-+]?\d+(?:\.\d+)?", text)
    return float(found.group()) if found else None


def verdicts_of(report: dict[str, Any], service: str | None = None) -> dict[Key, Judged]:
    targets = report["targets"]
    name = service or next(iter(targets))
    if name not in targets:
        raise KeyError(f"no service {name!r} in the report (it has {', '.join(targets)})")
    judged: dict[Key, Judged] = {}
    for scenario in targets[name]:
        for v in scenario["verdicts"]:
            status = v.get("status") or ("met" if v["passed"] else "breached")
            judged[(v["scenario"], v["endpoint"], v["profile"], v["slo"])] = Judged(
                status, v["observed"], v["margin"], bool(scenario.get("network")))
    return judged


@dataclass
class Agreement:
    runs: int
    disagree: dict[str, list[tuple[Key, list[Judged | None]]]]
    near: list[tuple[Key, list[Judged | None]]]

    @property
    def holds(self) -> bool:
        return not (self.disagree["outside the network scenarios"]
                    or self.disagree["recovery"])


def compare(reports: Sequence[dict[str, Any]], service: str | None = None,
            near: float = 0.1) -> Agreement:
    runs = [verdicts_of(report, service) for report in reports]
    keys = sorted({key for run in runs for key in run})
    groups: dict[str, list[tuple[Key, list[Judged | None]]]] = {
        "outside the network scenarios": [], "recovery": [], "network (not held against it)": []}
    close: list[tuple[Key, list[Judged | None]]] = []
    for key in keys:
        row = [run.get(key) for run in runs]
        statuses = {j.status if j else "absent" for j in row}
        network = any(j.network for j in row if j)
        if len(statuses) > 1:
            group = ("recovery" if key[3] == "recovery" else
                     "network (not held against it)" if network
                     else "outside the network scenarios")
            groups[group].append((key, row))
        elif any(j is not None and (m := j.relative_margin) is not None and m < near
                 for j in row):
            close.append((key, row))
    return Agreement(len(runs), groups, close)


def render(agreement: Agreement, names: Sequence[str]) -> str:
    lines = [f"# Agreement of {agreement.runs} runs: "
             + ("the verdicts agree" if agreement.holds else "**the verdicts disagree**"), ""]
    header = "|Scenario|Endpoint|Client|Check|" + "|".join(names) + "|"
    rule = "|---|---|---|---|" + "---|" * len(names)

    def table(rows: list[tuple[Key, list[Judged | None]]]) -> list[str]:
        out = [header, rule]
        for (scenario, endpoint, profile, slo), row in rows:
            cells = [f"{j.status}: {j.observed} ({j.margin})" if j else "absent" for j in row]
            out.append(f"|{scenario}|{endpoint}|{profile}|{slo}|" + "|".join(cells) + "|")
        return [*out, ""]

    for group, rows in agreement.disagree.items():
        lines.append(f"## Checks that differ: {group} ({len(rows)})")
        lines.append("")
        lines += table(rows) if rows else ["none", ""]
    lines.append(f"## Checks that agree within 10 % of their threshold in some run "
                 f"({len(agreement.near)})")
    lines.append("")
    lines += table(agreement.near) if agreement.near else ["none", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sqlite_faults.report.agreement",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reports", nargs="+", type=Path, help="report.json files")
    parser.add_argument("--service", default=None, help="default: each report's first")
    parser.add_argument("--near", type=float, default=0.1,
                        help="list agreeing checks within this share of their threshold")
    args = parser.parse_args(argv)
    if len(args.reports) < 2:
        parser.error("compare at least two reports")
    try:
        reports = [json.loads(path.read_text()) for path in args.reports]
        agreement = compare(reports, args.service, args.near)
    except (OSError, ValueError, KeyError) as exc:
        print(f"cannot compare: {exc}", file=sys.stderr)
        return 2
    print(render(agreement, [f"seed {r['meta']['seed']}" for r in reports]))
    return 0 if agreement.holds else 1


if __name__ == "__main__":
    sys.exit(main())
