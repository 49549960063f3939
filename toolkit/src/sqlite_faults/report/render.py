"""The report's outputs: Markdown shaped like the seed report, a JSON file with every figure,
and a PNG chart of p95/p99 and error rate per scenario for each service."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .load import ENDPOINTS
from .runner import ScenarioResult
from .slo import Objectives, Verdict


def _labels(by_target: dict[str, list[ScenarioResult]]) -> dict[str, str]:
    """Role -> the request it stands for, e.g. "write" -> "POST /users/"; when services
    compared side by side differ, both are named."""
    labels: dict[str, list[str]] = {}
    for results in by_target.values():
        for result in results[:1]:
            for role, label in result.labels.items():
                if label not in labels.setdefault(role, []):
                    labels[role].append(label)
    return {role: " / ".join(names) for role, names in labels.items()}


def _endpoint_label(endpoint: str, labels: dict[str, str]) -> str:
    label = labels.get(endpoint, endpoint)
    return " / ".join(f"{m} `{p}`" for m, _, p in (part.partition(" ")
                                                    for part in label.split(" / ")))


def _passed(results: list[ScenarioResult], endpoint: str) -> tuple[int, int]:
    """(scenarios passed, scenarios judged) for one endpoint: passed = every SLO met."""
    judged = [r for r in results if not r.skipped]
    passed = sum(all(v.passed for v in r.verdicts if v.endpoint == endpoint) for r in judged)
    return passed, len(judged)


def markdown(by_target: dict[str, list[ScenarioResult]], objectives: Objectives,
             meta: dict[str, Any]) -> str:
    labels = _labels(by_target)
    lines = ["# Resilience report: database-layer faults", ""]
    lines += [
        f"Seed {meta['seed']}, {meta['clients']} concurrent clients, phases "
        f"{meta['phases']} s (steady, fault, recovery), objectives from "
        f"`{meta['objectives_file']}`: p95 < {objectives.p95_latency_ms:g} ms and error rate "
        f"< {objectives.error_rate:.0%} where success is possible; failures as 503/504 within "
        f"the deadline + {objectives.deadline_grace_ms:g} ms where it is not; recovery "
        f"< {objectives.recovery_s:g} s; {objectives.acknowledged_writes_lost} acknowledged "
        "writes lost.", "",
    ]
    if "database" in meta:
        lines += [f"Database: {meta['database']}.", ""]
    lines += ["## Overall resilience posture", ""]
    for target, results in by_target.items():
        verdicts = [v for r in results for v in r.verdicts]
        failed = [v for v in verdicts if not v.passed]
        scenarios_failed = sorted({v.scenario for v in failed})
        lines.append(
            f"- **{target}**: {len(verdicts) - len(failed)} of {len(verdicts)} SLO checks "
            f"met; scenarios with a breach: {', '.join(scenarios_failed) or 'none'}.")
        # Up front, not only in the scenario sections at the end: a skipped scenario is a
        # fault this run did not judge, which the totals alone would hide.
        lines += [f"  - skipped **{r.scenario.name}**: {r.skipped}"
                  for r in results if r.skipped]
    lines.append("")

    lines += ["## Dashboard summary", ""]
    lines += ["|Service|Scope|Total Scenarios|Passed|Failed|", "|---|---|---|---|---|"]
    for target, results in by_target.items():
        totals = [_passed(results, e) for e in ENDPOINTS]
        passed, total = sum(p for p, _ in totals), sum(t for _, t in totals)
        lines.append(f"|{target}|All endpoints|{total}|{passed}|{total - passed}|")
        for endpoint, (p, t) in zip(ENDPOINTS, totals, strict=True):
            lines.append(f"|{target}|• {_endpoint_label(endpoint, labels)}|{t}|{p}|{t - p}|")
    lines.append("")

    if len(by_target) > 1:
        lines += _side_by_side(by_target, labels)

    lines += ["## SLO failures deep dive", "",
              "|Service|Scenario|Endpoint|SLO Violated|Objective|Observed|Margin|"
              "Failure Pattern|", "|---|---|---|---|---|---|---|---|"]
    for target, results in by_target.items():
        for verdict in (v for r in results for v in r.verdicts if not v.passed):
            lines.append(_failure_row(target, verdict, labels))
    lines.append("")

    lines += ["## Scenarios", ""]
    for target, results in by_target.items():
        for result in results:
            lines += _scenario_section(target, result, labels)
    return "\n".join(lines) + "\n"


def _side_by_side(by_target: dict[str, list[ScenarioResult]],
                  labels: dict[str, str]) -> list[str]:
    targets = list(by_target)
    header = "|Scenario|Endpoint|" + "|".join(
        f"{t} fault p95 ms|{t} fault errors|{t} SLOs" for t in targets) + "|"
    lines = ["## Side by side", "", header, "|---|---|" + "---|---|---|" * len(targets)]
    rows: dict[tuple[str, str], list[str]] = {}
    for target in targets:
        for result in by_target[target]:
            for endpoint in ENDPOINTS:
                cells = rows.setdefault((result.scenario.name, endpoint), [])
                if result.skipped:
                    cells += ["skipped", "", ""]
                    continue
                stats = result.stats(endpoint, "fault")
                ok = all(v.passed for v in result.verdicts if v.endpoint == endpoint)
                cells += [f"{stats.p95_ms:.0f}", f"{stats.error_rate:.1%}",
                          "pass" if ok else "**fail**"]
    for (scenario, endpoint), cells in rows.items():
        lines.append(f"|{scenario}|{_endpoint_label(endpoint, labels)}|" + "|".join(cells) + "|")
    return [*lines, ""]


def _failure_row(target: str, v: Verdict, labels: dict[str, str]) -> str:
    return (f"|{target}|{v.scenario}|{_endpoint_label(v.endpoint, labels)}|{v.slo}|{v.objective}|"
            f"{v.observed}|{v.margin}|{v.pattern}|")


def _scenario_section(target: str, result: ScenarioResult,
                      labels: dict[str, str]) -> list[str]:
    title = f"### {target}: {result.scenario.name} ({result.scenario.title})"
    if result.skipped:
        return [title, "", f"Skipped: {result.skipped}", ""]
    lines = [title, "", "|Endpoint|expect|phase|n|p50 ms|p95 ms|p99 ms|max ms|errors|statuses|",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for endpoint in ENDPOINTS:
        for phase in ("steady", "fault", "recovery"):
            s = result.stats(endpoint, phase)
            statuses = ", ".join(f"{k} x{n}" for k, n in list(s.statuses.items())[:4])
            lines.append(f"|{_endpoint_label(endpoint, labels)}|{result.scenario.expect[endpoint]}|"
                         f"{phase}|{s.count}|{s.p50_ms:.0f}|{s.p95_ms:.0f}|{s.p99_ms:.0f}|"
                         f"{s.max_ms:.0f}|{s.error_rate:.1%}|{statuses}|")
    if result.ledger is not None:
        led = result.ledger
        lines.append("")
        lines.append(f"Write ledger so far: {led.acknowledged} acknowledged, {led.lost} lost, "
                     f"{led.duplicated} duplicated, {led.indeterminate} indeterminate "
                     f"({led.recovered} found committed, {led.resolved} created by a keyed "
                     f"retry, {led.unresolved} unresolved), integrity failures "
                     f"{led.integrity_failures}.")
    lines += [f"Note: {note}" for note in result.notes]
    return [*lines, ""]


def write_json(path: Path, by_target: dict[str, list[ScenarioResult]],
               objectives: Objectives, meta: dict[str, Any]) -> None:
    data = {
        "meta": meta, "objectives": vars(objectives),
        "targets": {t: [r.as_dict() for r in results] for t, results in by_target.items()},
    }
    path.write_text(json.dumps(data, indent=2) + "\n")


def write_chart(path: Path, by_target: dict[str, list[ScenarioResult]]) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display: render straight to the PNG
    import matplotlib.pyplot as plt

    targets = list(by_target)
    labels = _labels(by_target)
    scenarios = [r.scenario.name for r in next(iter(by_target.values()))]
    fig, axes = plt.subplots(len(ENDPOINTS), 2, figsize=(16, 4 * len(ENDPOINTS)),
                             squeeze=False)
    width = 0.8 / max(1, len(targets))
    for row, endpoint in enumerate(ENDPOINTS):
        latency_ax, error_ax = axes[row]
        for i, target in enumerate(targets):
            stats = [r.stats(endpoint, "fault") for r in by_target[target]]
            xs = [x + i * width for x in range(len(scenarios))]
            latency_ax.bar(xs, [s.p99_ms for s in stats], width, alpha=0.35,
                           label=f"{target} p99")
            latency_ax.bar(xs, [s.p95_ms for s in stats], width, label=f"{target} p95")
            error_ax.bar(xs, [s.error_rate * 100 for s in stats], width, label=target)
        for ax, title in ((latency_ax, "fault-window latency (ms, log)"),
                          (error_ax, "fault-window error rate (%)")):
            ax.set_title(f"{labels.get(endpoint, endpoint)}: {title}")
            ax.set_xticks([x + width * (len(targets) - 1) / 2 for x in range(len(scenarios))])
            ax.set_xticklabels(scenarios, rotation=30, ha="right", fontsize=8)
            ax.legend(fontsize=8)
        latency_ax.set_yscale("log")
        latency_ax.axhline(300, color="red", linewidth=0.8, linestyle="--")
        error_ax.axhline(1, color="red", linewidth=0.8, linestyle="--")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def failed_verdicts(by_target: dict[str, list[ScenarioResult]]) -> Iterable[Verdict]:
    return (v for results in by_target.values() for r in results for v in r.verdicts
            if not v.passed)
