"""The report's outputs: Markdown shaped like the seed report, a JSON file with every figure,
and a PNG chart of p95/p99 and error rate per scenario for each service."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sqlite_faults.retry import PLAIN, RETRYING
from sqlite_faults.traffic import CREATE, ENDPOINTS

from .analysis import CONFIRMED, REFUTED, UNTESTED, Hypothesis, counterfactual
from .runner import ScenarioResult
from .slo import BREACHED, INCONCLUSIVE, LANES, MET, Objectives, Verdict


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
    if endpoint == LANES:
        return "DB lanes"
    label = labels.get(endpoint, endpoint)
    return " / ".join(f"{m} `{p}`" for m, _, p in (part.partition(" ")
                                                    for part in label.split(" / ")))


def _scenario_status(verdicts: Iterable[Verdict]) -> str:
    """One status for several verdicts: breached if any is, else inconclusive if any is."""
    statuses = {v.status for v in verdicts}
    return next((s for s in (BREACHED, INCONCLUSIVE) if s in statuses), MET)


def _tally(results: list[ScenarioResult], endpoint: str) -> dict[str, int]:
    """Scenarios judged for one endpoint (plain client), by status: met = every SLO met."""
    judged = [r for r in results if not r.skipped]
    tally = dict.fromkeys((MET, BREACHED, INCONCLUSIVE), 0)
    for r in judged:
        tally[_scenario_status(v for v in r.verdicts
                               if v.endpoint == endpoint and v.profile == PLAIN)] += 1
    return tally


def markdown(by_target: dict[str, list[ScenarioResult]], objectives: Objectives,
             meta: dict[str, Any], analyses: dict[str, list[Hypothesis]] | None = None) -> str:
    labels = _labels(by_target)
    lines = ["# Resilience report: database, process and network faults", ""]
    lines += [f"Load model: {_load_line(meta)}.", ""]
    lines += [
        f"Seed {meta['seed']}, phases "
        f"{meta['phases']} s (steady, fault, recovery), objectives from "
        f"`{meta['objectives_file']}`: p95 < {objectives.p95_latency_ms:g} ms and error rate "
        f"< {objectives.error_rate:.0%} where success is possible; failures as 503/504 within "
        f"the deadline + {objectives.deadline_grace_ms:g} ms where it is not; recovery "
        f"< {objectives.recovery_s:g} s; {objectives.acknowledged_writes_lost} acknowledged "
        "writes lost, duplicated or committed after an error answer. Network scenarios "
        "(marked *network*) put a fault proxy between the clients and the service; they and "
        "the process faults run two client profiles side by side, half the requests each: "
        "*plain* (one attempt) and *retrying* (backoff with full jitter, the same "
        "idempotency key, Retry-After honoured).", "",
    ]
    if "database" in meta:
        lines += [f"Database: {meta['database']}.", ""]
    if analyses:
        lines += _executive_summary(analyses, by_target)
    lines += ["## Overall resilience posture", ""]
    for target, results in by_target.items():
        verdicts = [v for r in results for v in r.verdicts]
        met = sum(v.passed for v in verdicts)
        unsure = [v for v in verdicts if v.status == INCONCLUSIVE]
        scenarios_failed = sorted({v.scenario for v in verdicts if v.breached})
        lines.append(
            f"- **{target}**: {met} of {len(verdicts)} SLO checks met, {len(unsure)} "
            f"inconclusive (the instrument's own delays could explain them); scenarios with "
            f"a breach: {', '.join(scenarios_failed) or 'none'}.")
        # Up front, not only in the scenario sections at the end: a skipped scenario is a
        # fault this run did not judge, which the totals alone would hide.
        lines += [f"  - skipped **{r.scenario.name}**: {r.skipped}"
                  for r in results if r.skipped]
    lines.append("")

    lines += ["## Dashboard summary", ""]
    lines += ["|Service|Scope|Total Scenarios|Passed|Failed|Inconclusive|",
              "|---|---|---|---|---|---|"]
    for target, results in by_target.items():
        tallies = [_tally(results, e) for e in ENDPOINTS]
        scopes = [("All endpoints", {k: sum(t[k] for t in tallies) for k in tallies[0]})]
        scopes += [(f"• {_endpoint_label(e, labels)}", t)
                   for e, t in zip(ENDPOINTS, tallies, strict=True)]
        for scope, t in scopes:
            lines.append(f"|{target}|{scope}|{sum(t.values())}|{t[MET]}|{t[BREACHED]}|"
                         f"{t[INCONCLUSIVE]}|")
    lines.append("")

    lines += _seed_rows(by_target)
    if len(by_target) > 1:
        lines += _side_by_side(by_target, labels)
    lines += _client_profiles(by_target, labels)

    lines += ["## SLO failures deep dive", "",
              "Each breach with the figure that makes it the service's: the instrument's own "
              "delay (p95, the endpoint's requests in the breached phase) against the "
              "service's own time, from the "
              "fault proxy forwarding a request to the service's answer (p95 / max).", "",
              "|Service|Scenario|Endpoint|Client|SLO Violated|Objective|Observed|Margin|"
              "Failure Pattern|Instrument delay p95 ms|Service's own time ms|"
              "Machine CPU saturated / service CPUs / instrument CPUs|",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for target, results in by_target.items():
        for result in results:
            for verdict in (v for v in result.verdicts if v.breached):
                lines.append(_failure_row(target, verdict, labels, result))
    lines.append("")
    lines += _inconclusive(by_target, labels)
    if analyses:
        lines += _hypotheses(analyses)
        lines += _recommendations(analyses, by_target)

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
                status = _scenario_status(v for v in result.verdicts if v.endpoint == endpoint)
                cells += [f"{stats.p95_ms:.0f}", f"{stats.error_rate:.1%}", _SHOWN[status]]
    network = {r.scenario.name for results in by_target.values() for r in results
               if r.scenario.network}
    for (scenario, endpoint), cells in rows.items():
        name = f"{scenario} *network*" if scenario in network else scenario
        lines.append(f"|{name}|{_endpoint_label(endpoint, labels)}|" + "|".join(cells) + "|")
    return [*lines, ""]


def _seed_rows(by_target: dict[str, list[ScenarioResult]]) -> list[str]:
    """The seed report's scenarios and the rows that reproduce them, with each service's
    result for the plain client (the seed's load generator did not retry)."""
    targets = list(by_target)
    first = by_target[targets[0]]
    seeded = [r for r in first if r.scenario.seed_row]
    if not seeded:
        return []
    lines = ["## The seed report's scenarios", "",
             "|Seed scenario|Scenario here|" + "|".join(f"{t} (plain)|{t} (retrying)"
                                                         for t in targets) + "|",
             "|---|---|" + "---|---|" * len(targets)]
    for result in seeded:
        cells = []
        for target in targets:
            match = [r for r in by_target[target] if r.scenario.name == result.scenario.name]
            for profile in (PLAIN, RETRYING):
                cells.append(_profile_verdict(match[0], profile) if match else "")
        lines.append(f"|{result.scenario.seed_row}|{result.scenario.name}|"
                     + "|".join(cells) + "|")
    return [*lines, ""]


def _profile_verdict(result: ScenarioResult, profile: str) -> str:
    if result.skipped:
        return "skipped"
    if profile not in result.profiles:
        return "n/a"
    verdicts = [v for v in result.verdicts if v.profile == profile]
    failed = sum(v.breached for v in verdicts)
    if failed:
        return f"**fail** ({failed} of {len(verdicts)})"
    return _SHOWN[_scenario_status(verdicts)]


_SHOWN = {MET: "pass", BREACHED: "**fail**", INCONCLUSIVE: "inconclusive"}


def _inconclusive(by_target: dict[str, list[ScenarioResult]],
                  labels: dict[str, str]) -> list[str]:
    """The checks breached as measured that the instrument's own delays could explain, with
    the figures that say so: neither a pass nor the service's failure."""
    rows = [(target, r, v) for target, results in by_target.items() for r in results
            for v in r.verdicts if v.status == INCONCLUSIVE]
    if not rows:
        return []
    lines = ["## Inconclusive checks", "",
             "Breached as measured, met once the load generator's own delays (late sends, "
             "waits for a free connection, answers read late by a busy loop) are taken out: "
             "the instrument could have decided these, so they are not charged to the "
             "service.", "",
             "|Service|Scenario|Endpoint|Client|SLO|Observed|Instrument delay p95 ms (phase)|"
             "Generator loop lag p95 ms|", "|---|---|---|---|---|---|---|---|"]
    for target, result, v in rows:
        phase = _phase_of(v)
        figures = result.instrument(v.endpoint)[phase]
        lines.append(f"|{target}|{v.scenario}|{_endpoint_label(v.endpoint, labels)}|"
                     f"{v.profile}|{v.slo}|{v.observed}|{figures['delay_p95_ms']:.0f} "
                     f"({phase})|{figures['loop_lag_p95_ms']:.0f}|")
    return [*lines, ""]


def _client_profiles(by_target: dict[str, list[ScenarioResult]],
                     labels: dict[str, str]) -> list[str]:
    """The plain and the retrying client through the same faults: errors, duplicates (each
    profile's own ledger) and the latency the retries added."""
    lines = ["## Client profiles", "",
             "Fault window, plain client against retrying client (the same requests, half "
             "each). *retried*: requests that took more than one attempt; *dup*: duplicate "
             "writes found by that client's ledger.", "",
             "|Service|Scenario|Endpoint|plain errors|retrying errors|plain p95 ms|"
             "retrying p95 ms|added p95 ms|retried|dup plain|dup retrying|",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    rows = 0
    for target, results in by_target.items():
        for result in results:
            if result.skipped or RETRYING not in result.profiles:
                continue
            for endpoint in ENDPOINTS:
                plain = result.stats(endpoint, "fault", PLAIN)
                retrying = result.stats(endpoint, "fault", RETRYING)
                dups = ["", ""]
                if endpoint == CREATE:
                    dups = [str(led.duplicated) if (led := result.ledgers.get(p)) else "?"
                            for p in (PLAIN, RETRYING)]
                lines.append(
                    f"|{target}|{result.scenario.name}|{_endpoint_label(endpoint, labels)}|"
                    f"{plain.error_rate:.1%}|{retrying.error_rate:.1%}|{plain.p95_ms:.0f}|"
                    f"{retrying.p95_ms:.0f}|{retrying.p95_ms - plain.p95_ms:+.0f}|"
                    f"{result.retried(endpoint, RETRYING)}|{dups[0]}|{dups[1]}|")
                rows += 1
    return [*lines, ""] if rows else []


def _load_line(meta: dict[str, Any]) -> str:
    loads = meta.get("loads") or {}
    if not loads:
        return str(meta.get("load", "?"))
    parts = []
    for target, load in loads.items():
        # Not "the service's capacity": the closed loop runs through the generator and the
        # proxy, which share the machine; the calibration says which of them bounds it.
        throughput = (f"throughput of the mix through the proxy, closed loop, 8 clients: "
                      f"{load['capacity_rps']:.0f} requests/s")
        calibration = load.get("calibration")
        if calibration:
            ceiling = calibration["ceiling_rps"]
            bound = ("the instrument was the bottleneck: the service's capacity is at least "
                     "that" if load["capacity_rps"] >= 0.8 * ceiling
                     else "the service was the bottleneck")
            throughput += (f"; the instrument's own ceiling, the same way on a trivial echo "
                           f"service: {ceiling:.0f} requests/s, so {bound}")
        if load["model"] == "open":
            line = (f"**{target}**: {load['described']} ({throughput}; rate "
                    f"{load['rate'] / max(load['capacity_rps'], 1e-9):.0%} of it)")
            if calibration:
                lowered = (f", lowered from {calibration['asked_rate']:.0f} requests/s to the "
                           "rate it carries" if calibration["rate"] < calibration["asked_rate"]
                           else "")
                line += (f". The instrument alone at this rate (echo service, no fault) "
                         f"added p50 {calibration['p50_ms']:.1f} ms, p95 "
                         f"{calibration['p95_ms']:.1f} ms (budget {calibration['budget_ms']:g} "
                         f"ms), generator loop lag p95 {calibration['loop_lag_p95_ms']:.1f} "
                         f"ms{lowered}"
                         + ("" if calibration["carries"] else
                            ": **over its budget even so: latency figures include the "
                            "instrument's own**"))
            parts.append(line)
        else:
            parts.append(f"**{target}**: {load['described']} ({throughput})")
    return "; ".join(parts)


def _cpu_sentence(figures: dict[str, Any]) -> str:
    if not figures.get("cpu_samples"):
        return ""
    return (f" The machine's CPUs were {figures['machine_busy_mean']:.0%} busy on average and "
            f"saturated in {figures['machine_saturated_share']:.0%} of the 100 ms samples; the "
            f"service used {figures['service_cpus_mean']:.2f} CPUs, the instrument (generator "
            f"and proxy) {figures['instrument_cpus_mean']:.2f}.")


def _phase_of(v: Verdict) -> str:
    """The phase a verdict judged ("fault" for the ledger's and the lanes' checks)."""
    if v.slo.startswith("recovery"):
        return "recovery"
    return next((p for p in ("steady", "fault", "recovery") if f"({p})" in v.slo), "fault")


def _failure_row(target: str, v: Verdict, labels: dict[str, str],
                 result: ScenarioResult) -> str:
    figures = result.instrument(v.endpoint)[_phase_of(v)]
    return (f"|{target}|{v.scenario}|{_endpoint_label(v.endpoint, labels)}|{v.profile}|"
            f"{v.slo}|{v.objective}|{v.observed}|{v.margin}|{v.pattern}|"
            f"{figures['delay_p95_ms']:.0f}|{figures['service_p95_ms']:.0f} / "
            f"{figures['service_max_ms']:.0f}|"
            + (f"{figures['machine_saturated_share']:.0%} / {figures['service_cpus_mean']:.2f}"
               f" / {figures['instrument_cpus_mean']:.2f}|" if figures.get("cpu_samples")
               else "|"))


def _scenario_section(target: str, result: ScenarioResult,
                      labels: dict[str, str]) -> list[str]:
    title = f"### {target}: {result.scenario.name} ({result.scenario.title})"
    if result.skipped:
        return [title, "", f"Skipped: {result.skipped}", ""]
    kind = "network fault, through the fault proxy" if result.scenario.network else ""
    lines = [title, ""] + ([f"*{kind}*", ""] if kind else [])
    lines += ["|Endpoint|client|expect|phase|n|p50 ms|p95 ms|p99 ms|max ms|errors|statuses|",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for endpoint in ENDPOINTS:
        for profile in result.profiles:
            for phase in ("steady", "fault", "recovery"):
                s = result.stats(endpoint, phase, profile)
                statuses = ", ".join(f"{k} x{n}" for k, n in list(s.statuses.items())[:4])
                lines.append(
                    f"|{_endpoint_label(endpoint, labels)}|{profile}|"
                    f"{result.scenario.expect[endpoint]}|{phase}|{s.count}|{s.p50_ms:.0f}|"
                    f"{s.p95_ms:.0f}|{s.p99_ms:.0f}|{s.max_ms:.0f}|{s.error_rate:.1%}|"
                    f"{statuses}|")
    for profile, led in result.ledgers.items():
        lines.append("")
        lines.append(f"Write ledger of the {profile} client so far: {led.acknowledged} "
                     f"acknowledged, {led.indeterminate} indeterminate. Found by this "
                     f"scenario's check: {led.lost} acknowledged and lost, {led.duplicated} "
                     f"duplicated, {led.phantoms + led.committed_after_error} told failed but "
                     f"committed, of its indeterminate writes {led.recovered} found "
                     f"committed, {led.resolved} created by a keyed retry, {led.unresolved} "
                     f"unresolved; integrity failures {led.integrity_failures}"
                     + (f"; {led.unchecked} not checked (the service stopped answering the "
                        "check)." if led.unchecked else "."))
    if result.lanes is not None:
        lanes = result.lanes
        lines.append("")
        lines.append(f"DB lanes ({lanes.capacity:g} workers), calls in flight: steady mean "
                     f"{lanes.mean('steady'):.2f} (peak {lanes.peak('steady'):g}), fault "
                     f"window mean {lanes.mean('fault'):.2f} (peak {lanes.peak('fault'):g}).")
    fault = result.instrument()["fault"]
    lines.append("")
    lines.append(f"The instrument in the fault window: its own delay p95 "
                 f"{fault['delay_p95_ms']:.0f} ms (max {fault['delay_max_ms']:.0f}), "
                 f"{fault['waited_for_connection']} requests waited for a free connection, "
                 f"generator loop lag p95 {fault['loop_lag_p95_ms']:.0f} ms (max "
                 f"{fault['loop_lag_max_ms']:.0f}); the service's own time, from the proxy "
                 f"forwarding a request to its answer, p95 {fault['service_p95_ms']:.0f} ms "
                 f"(max {fault['service_max_ms']:.0f})." + _cpu_sentence(fault))
    lines += [f"Note: {note}" for note in result.notes]
    return [*lines, ""]


def _executive_summary(analyses: dict[str, list[Hypothesis]],
                       by_target: dict[str, list[ScenarioResult]]) -> list[str]:
    """A minute's reading, in the seed report's shape, every sentence from a figure below:
    findings, recommendations, key trade-offs, next steps and validation."""
    lines = ["## Executive summary", ""]
    for target, hypotheses in analyses.items():
        verdicts = [v for r in by_target[target] for v in r.verdicts]
        breached = [v for v in verdicts if v.breached]
        confirmed = sorted((h for h in hypotheses if h.verdict == CONFIRMED),
                           key=lambda h: h.cause.priority)
        refuted = [h for h in hypotheses if h.verdict == REFUTED]
        untested = [h for h in hypotheses if h.verdict == UNTESTED]
        met = sum(v.passed for v in verdicts)
        unsure = len(verdicts) - met - len(breached)
        lines.append(f"**{target}**: {met} of {len(verdicts)} checks met"
                     + (f", {unsure} inconclusive" if unsure else "")
                     + f"; {len(confirmed)} causes confirmed, {len(refuted)} refuted, "
                     f"{len(untested)} untested.")
        if not confirmed:
            lines += ["", "- Findings: no cause of the catalogue is confirmed"
                      + (f"; {len(breached)} breaches remain, each in the deep dive below."
                         if breached else "."), ""]
            continue
        explained = {id(v) for h in confirmed for v in h.breaches}
        lines += ["", "- Findings: " + "; ".join(
            f"{h.cause.title} ({h.cause.priority}"
            + (f", {_count(len(h.breaches), 'breach')}" if h.breaches else "") + ")"
            for h in confirmed) + f". They explain {len(explained)} of the "
            f"{len(breached)} breaches."]
        first = confirmed[0].cause
        lines.append(f"- First recommendation ({first.priority}, {first.complexity} "
                     f"complexity): {first.fix}.")
        lines.append("- Key trade-offs: " + "; ".join(
            f"{h.cause.id}: {h.cause.tradeoffs}" for h in confirmed[:3]) + ".")
        lines.append("- Next steps and validation: apply the recommendations in priority "
                     "order; watch " + "; ".join(h.cause.monitor for h in confirmed[:3])
                     + "; run this report again with the same seed: each confirmed cause "
                     "must turn refuted and the breaches it explains met.")
        lines.append("")
    return lines


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "es" if noun.endswith("ch") else "s")


def _hypotheses(analyses: dict[str, list[Hypothesis]]) -> list[str]:
    lines = ["## Cause hypotheses", "",
             "Each cause of the catalogue (`sqlite_faults/causes.toml`) with its verdict and "
             "the evidence: the engine's configuration as the service ran it (read through "
             "the engine plugin) or the checks of the scenarios that stage the cause. "
             "*Untested* says what would test it.", "",
             "|Service|Cause|Verdict|Evidence|Breaches it explains|",
             "|---|---|---|---|---|"]
    for target, hypotheses in analyses.items():
        for h in hypotheses:
            explains = len(h.breaches) or ""
            lines.append(f"|{target}|{h.cause.title} [`{h.cause.id}`]|**{h.verdict}**|"
                         f"{_cell(h.evidence)}|{explains}|")
    return [*lines, ""]


def _recommendations(analyses: dict[str, list[Hypothesis]],
                     by_target: dict[str, list[ScenarioResult]]) -> list[str]:
    """The catalogue's fix for each confirmed cause, in the seed report's prioritisation
    table, with the counterfactual another target of the run offers."""
    lines = ["## Recommendations", "",
             "For each confirmed cause, the change, its priority, complexity, benefit, "
             "trade-offs and what to monitor (from the catalogue); *Verified* names another "
             "service of this run without the cause that met the checks it breached, where "
             "there is one.", "",
             "|Service|Priority|Cause|Change|Complexity|Benefit|Trade-offs|Monitor|Verified|",
             "|---|---|---|---|---|---|---|---|---|"]
    confirmed = 0
    for target, hypotheses in analyses.items():
        others = {t: h for t, h in analyses.items() if t != target}
        for h in sorted((h for h in hypotheses if h.verdict == CONFIRMED),
                        key=lambda h: h.cause.priority):
            confirmed += 1
            c = h.cause
            verified = "; ".join(filter(None, (h.verified, counterfactual(
                h, others, by_target)))) or "not from outside"
            monitor = c.monitor + (f"; alerts {', '.join(c.alerts)} (ops/alerts.yml)"
                                   if c.alerts else "")
            lines.append(f"|{target}|{c.priority}|`{c.id}`|{_cell(c.fix)}|{c.complexity}|"
                         f"{_cell(c.benefit)}|{_cell(c.tradeoffs)}|{_cell(monitor)}|"
                         f"{_cell(verified)}|")
    if not confirmed:
        lines += ["", "No cause was confirmed."]
    return [*lines, ""]


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def write_json(path: Path, by_target: dict[str, list[ScenarioResult]],
               objectives: Objectives, meta: dict[str, Any],
               analyses: dict[str, list[Hypothesis]] | None = None) -> None:
    data = {
        "meta": meta, "objectives": vars(objectives),
        "targets": {t: [r.as_dict() for r in results] for t, results in by_target.items()},
        "analysis": {t: [h.as_dict() for h in hypotheses]
                     for t, hypotheses in (analyses or {}).items()},
    }
    path.write_text(json.dumps(data, indent=2) + "\n")


def write_chart(path: Path, by_target: dict[str, list[ScenarioResult]],
                objectives: Objectives) -> None:
    """Per endpoint, fault-window p95/p99 latency and error rate of the plain client, one
    colour per service in every panel (p99 the lighter bar behind p95), the objectives drawn
    and labelled, network scenarios on a shaded background."""
    import matplotlib

    matplotlib.use("Agg")  # no display: render straight to the PNG
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    targets = list(by_target)
    colours = {t: f"C{i}" for i, t in enumerate(targets)}
    labels = _labels(by_target)
    first = next(iter(by_target.values()))
    scenarios = [r.scenario.name for r in first]
    network = [i for i, r in enumerate(first) if r.scenario.network]
    fig = plt.figure(figsize=(18, 4.2 * len(ENDPOINTS) + 1.2 + 0.45 * len(targets) * 3))
    grid = fig.add_gridspec(len(ENDPOINTS) + 1, 2,
                            height_ratios=[0.35 * len(targets) * 3 + 1, *[4.2] * len(ENDPOINTS)])
    _verdict_map(fig.add_subplot(grid[0, :]), by_target, scenarios, labels)
    axes = [[fig.add_subplot(grid[row + 1, 0]), fig.add_subplot(grid[row + 1, 1])]
            for row in range(len(ENDPOINTS))]
    width = 0.8 / max(1, len(targets))
    for row, endpoint in enumerate(ENDPOINTS):
        latency_ax, error_ax = axes[row]
        for i, target in enumerate(targets):
            stats = [r.stats(endpoint, "fault") for r in by_target[target]]
            xs = [x + i * width for x in range(len(scenarios))]
            colour = colours[target]
            latency_ax.bar(xs, [s.p99_ms for s in stats], width, color=colour, alpha=0.35)
            latency_ax.bar(xs, [s.p95_ms for s in stats], width, color=colour)
            error_ax.bar(xs, [s.error_rate * 100 for s in stats], width, color=colour)
        latency_ax.axhline(objectives.p95_latency_ms, color="red", linewidth=1, linestyle="--")
        error_ax.axhline(objectives.error_rate * 100, color="red", linewidth=1, linestyle="--")
        for ax, title in ((latency_ax, "fault-window latency, ms (log scale)"),
                          (error_ax, "fault-window error rate, %")):
            ax.set_title(f"{labels.get(endpoint, endpoint)}: {title}", fontsize=10)
            ax.set_xticks([x + width * (len(targets) - 1) / 2 for x in range(len(scenarios))])
            ax.set_xticklabels(scenarios, rotation=35, ha="right", fontsize=8)
            for x in network:
                ax.axvspan(x - 0.5 + width / 2, x + 0.5 + width / 2, color="0.92", zorder=0)
        latency_ax.set_yscale("log")
        service_keys = [Patch(color=colours[t], label=f"{t} p95") for t in targets] + [
            Patch(color=colours[t], alpha=0.35, label=f"{t} p99") for t in targets]
        latency_ax.legend(handles=[
            *service_keys,
            Line2D([], [], color="red", linestyle="--",
                       label=f"objective: p95 < {objectives.p95_latency_ms:g} ms"),
            Patch(color="0.92", label="network scenario")], fontsize=7, ncol=2)
        error_ax.legend(handles=[
            *(Patch(color=colours[t], label=t) for t in targets),
            Line2D([], [], color="red", linestyle="--",
                       label=f"objective: errors < {objectives.error_rate:.0%}"),
            Patch(color="0.92", label="network scenario")], fontsize=7)
    fig.suptitle("Verdicts of every check, then the plain client's fault window (the retrying "
                 "client is in report.md's Client profiles table)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


EXPECTED_REFUSAL = "met, by refusing as expected"
# The verdict map's colours: what a reader should take from each cell at a glance.
MAP_COLOURS = {MET: "#4caf50", EXPECTED_REFUSAL: "#a5d6a7", BREACHED: "#e53935",
               INCONCLUSIVE: "#bdbdbd", "skipped": "#ffffff"}


def map_cell(result: ScenarioResult, endpoint: str) -> str:
    """One cell of the verdict map: a scenario's checks of one endpoint, both clients. A met
    fail-fast endpoint whose fault window had 503/504 answers is an expected refusal, so the
    error rate beside it is not read as a failure."""
    if result.skipped:
        return "skipped"
    status = _scenario_status(v for v in result.verdicts if v.endpoint == endpoint)
    refused = any(k.startswith(("503", "504"))
                  for k in result.stats(endpoint, "fault", None).statuses)
    if status == MET and result.scenario.expect.get(endpoint) != "available" and refused:
        return EXPECTED_REFUSAL
    return status


def _verdict_map(ax: Any, by_target: dict[str, list[ScenarioResult]], scenarios: list[str],
                 labels: dict[str, str]) -> None:
    """Scenario x (service, endpoint): met, met by an expected refusal, breached,
    inconclusive or skipped."""
    from matplotlib.colors import to_rgb
    from matplotlib.patches import Patch

    rows = [(target, endpoint) for target in by_target for endpoint in ENDPOINTS]
    grid = [[to_rgb(MAP_COLOURS[map_cell(result, endpoint)])
             for result in by_target[target]] for target, endpoint in rows]
    ax.imshow(grid, aspect="auto")
    ax.set_xticks(range(len(scenarios)))
    ax.set_xticklabels(scenarios, rotation=35, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"{target}: {labels.get(endpoint, endpoint)}"
                        for target, endpoint in rows], fontsize=8)
    ax.set_xticks([x - 0.5 for x in range(1, len(scenarios))], minor=True)
    ax.set_yticks([y - 0.5 for y in range(1, len(rows))], minor=True)
    ax.grid(which="minor", color="white", linewidth=2)
    ax.tick_params(which="minor", length=0)
    ax.set_title("Verdict map: every check of each scenario and endpoint, both clients",
                 fontsize=10)
    ax.legend(handles=[Patch(facecolor=c, edgecolor="0.6", label=k)
                       for k, c in MAP_COLOURS.items()],
              fontsize=7, ncol=len(MAP_COLOURS), loc="upper center",
              bbox_to_anchor=(0.5, -0.35 if len(rows) > 3 else -0.6))
