"""The overload benchmark's output: a Markdown table per service, endpoint and load model, and
the hardened service's targets, each MET, MISSED or INCONCLUSIVE with its figures.

A level where the load generator was the bottleneck (`driver_bound`) measured the instrument,
not the service: its figures are marked with a dagger in the tables and it never counts towards
MET; a target with such levels and no miss is INCONCLUSIVE, and the levels are listed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from benchmarks.overload_levels import CLASSES, Level

ENDPOINT_NAMES = {"get_user": "GET /users/{id}", "create_user": "POST /users/",
                  "healthz": "GET /healthz"}
MODEL_NAMES = {"closed": "closed loop (wrk)", "open": "open loop (Poisson arrivals)"}
GOODPUT_SHARE = 0.9  # of the peak, at every overload level
IDLE_WITHIN_S = 1.0
BUSY_FLOOR_S = 0.1  # two sampling periods: "idle at once", a tie between services
HARDENED = "hardened"


@dataclass(frozen=True)
class Peak:
    service: str
    endpoint: str
    goodput_per_s: float
    clients: int  # the closed-loop client count that reached it


@dataclass
class Verdict:
    target: str
    endpoint: str
    verdict: str  # MET, MISSED or INCONCLUSIVE
    figures: list[str] = field(default_factory=list)

    def line(self) -> str:
        name = ENDPOINT_NAMES.get(self.endpoint, self.endpoint)
        return (f"{self.verdict:12} {self.target}, {name}: "
                f"{'; '.join(self.figures) or 'no level measured'}")


# ---------------------------------------------------------------------------- tables


def _n(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _latency(level: Level) -> str:
    parts = []
    for name, values in level.latency_ms.items():
        parts.append(f"{name} {_n(values['p50_ms'], 1)} / {_n(values['p99_ms'], 1)} / "
                     f"{_n(values['max_ms'], 1)}")
    return "; ".join(parts) or "-"


def _load(level: Level) -> str:
    if level.model == "closed":
        return f"c={level.clients}" + (" (peak run)" if level.peak_run else "")
    sent = level.raw.get("achieved_rate")
    return (f"{level.multiple:g}x: {_n(level.rate)}/s"
            + (f" (sent {_n(sent)}/s)" if sent is not None else ""))


def _busy(level: Level, cap_s: float) -> str:
    if not level.answered_after:
        return "stalled"
    return f"> {cap_s:g}" if level.busy_after_stop_s is None else f"{level.busy_after_stop_s:.2f}"


def _driver(level: Level) -> str:
    if level.failure:
        return f"**failed**: {level.failure}"
    if level.driver_bound:
        return f"**driver-bound** ({level.driver_why})"
    return f"ok (client CPU {level.client_cpu_share:.0%})"


def _errors(level: Level) -> str:
    shown = {k: v for k, v in level.errors.items() if v}
    return ", ".join(f"{k} {v}" for k, v in shown.items()) or "0"


def level_rows(levels: list[Level], late_after_s: float, cap_s: float) -> str:
    lines = [
        "| load | goodput/s | / peak | refusals/s | answers 2xx / 503 / 504 / other "
        "| latency ms p50 / p99 / max | late > " + f"{late_after_s:g} s | client timeouts "
        "| conn errors | busy after stop (s) | overload | instrument |",
        "|---|--:|--:|--:|--:|---|--:|--:|--:|--:|---|---|",
    ]
    for lv in levels:
        mark = " †" if lv.driver_bound else ""
        late = f"{'~' if lv.late_estimated else ''}{lv.late}"
        lines.append(
            f"| {_load(lv)} | {_n(lv.goodput_per_s)}{mark} | {_n(lv.goodput_ratio, 2)}{mark} "
            f"| {_n(lv.refusals_per_s)}{mark} "
            f"| {' / '.join(str(lv.answers[c]) for c in CLASSES)} | {_latency(lv)}{mark} "
            f"| {late}{mark} | {_n(lv.client_timeouts)}{mark} | {_errors(lv)} "
            f"| {_busy(lv, cap_s)}{mark} "
            f"| {'yes' if lv.overload else 'no'} | {_driver(lv)} |"
        )
    return "\n".join(lines)


def tables_markdown(levels: list[Level], peaks: dict[tuple[str, str], Peak],
                    late_after_s: float, cap_s: float) -> str:
    out = []
    keys = list(dict.fromkeys((lv.service, lv.endpoint, lv.model) for lv in levels))
    for service, endpoint, model in keys:
        chosen = [lv for lv in levels if (lv.service, lv.endpoint, lv.model)
                  == (service, endpoint, model)]
        peak = peaks.get((service, endpoint))
        peak_text = (f"peak goodput {_n(peak.goodput_per_s)}/s at c={peak.clients}"
                     if peak else "no peak measured")
        out.append(f"### {service}: {ENDPOINT_NAMES.get(endpoint, endpoint)}, "
                   f"{MODEL_NAMES[model]}; {peak_text}\n")
        out.append(level_rows(chosen, late_after_s, cap_s) + "\n")
    out.append("Latency: per answer class for the open loop (from each request's intended send "
               "time); over all answers for wrk (from the send, after wrk's coordinated-omission "
               "correction). `~` before a late count: estimated from wrk's histogram (its "
               "maximum, and so whether any answer was late, is exact); wrk's late count "
               "includes its answers after --timeout, and wrk cannot count client timeouts "
               "(n/a): what is unanswered when it stops is dropped uncounted. Busy after stop: "
               "seconds from the end of the load (wrk: its -d, when it closes its connections; "
               "open loop: when the last request was answered or given up) until the server's "
               "process used < 5 % of a core over 100 ms; `stalled`: idle "
               "but not answering GET /readyz afterwards (restarted). † the load "
               "generator was the bottleneck: the instrument's figure, not the service's.\n")
    return "\n".join(out)


def bottleneck_line(levels: list[Level]) -> str:
    bound = [lv for lv in levels if lv.driver_bound]
    if not bound:
        return "Instrument bottleneck: none (no level was driver-bound)."
    parts = [f"{'open-loop driver' if lv.model == 'open' else 'wrk'} at {lv.service} "
             f"{ENDPOINT_NAMES.get(lv.endpoint, lv.endpoint)} {lv.label} ({lv.driver_why})"
             for lv in bound]
    return "Instrument bottleneck: " + "; ".join(parts) + "."


# ---------------------------------------------------------------------------- targets


def _judge(target: str, endpoint: str, levels: Iterable[Level],
           check: Callable[[Level], tuple[bool | None, str]]) -> Verdict:
    """`check` gives (True met / False missed / None inconclusive, figure) per level."""
    verdict = Verdict(target, endpoint, "MET")
    results = []
    for lv in levels:
        if lv.failure:
            results.append((None, f"{lv.label} inconclusive (instrument failed)"))
        elif lv.driver_bound:
            results.append((None, f"{lv.label} inconclusive (driver-bound)"))
        else:
            results.append(check(lv))
    verdict.figures = [figure for _, figure in results]
    if any(ok is False for ok, _ in results):
        verdict.verdict = "MISSED"
    elif not results or any(ok is None for ok, _ in results):
        verdict.verdict = "INCONCLUSIVE"
    return verdict


def judge_targets(levels: list[Level], peaks: dict[tuple[str, str], Peak],
                  late_after_s: float, peers: list[str]) -> list[Verdict]:
    verdicts = []
    endpoints = list(dict.fromkeys(lv.endpoint for lv in levels if lv.service == HARDENED))
    for endpoint in endpoints:
        mine = [lv for lv in levels if lv.service == HARDENED and lv.endpoint == endpoint]
        over = [lv for lv in mine if lv.overload]
        peak = peaks.get((HARDENED, endpoint))
        peak_text = f" (peak {_n(peak.goodput_per_s)}/s at c={peak.clients})" if peak else ""

        def goodput(lv: Level) -> tuple[bool | None, str]:
            ratio = lv.goodput_ratio
            ok = ratio is not None and ratio >= GOODPUT_SHARE
            return ok, f"{lv.label} {_n(ratio, 2)}{'' if ok else ' (below)'}"

        verdicts.append(_judge(f"goodput >= {GOODPUT_SHARE} x peak at every overload "
                               f"level{peak_text}", endpoint, over, goodput))

        def on_time(lv: Level) -> tuple[bool | None, str]:
            ok = lv.late == 0 and not lv.client_timeouts
            return ok, (f"{lv.label} {'~' if lv.late_estimated else ''}{lv.late} late"
                        + (f" + {lv.client_timeouts} client timeouts"
                           if lv.client_timeouts else ""))

        verdicts.append(_judge(f"0 answers later than {late_after_s:g} s (deadline + 100 ms; "
                               "client timeouts count as late), every level", endpoint, mine,
                               on_time))

        def idle(lv: Level) -> tuple[bool | None, str]:
            busy = lv.busy_after_stop_s
            ok = busy is not None and busy <= IDLE_WITHIN_S
            shown = ("stalled" if not lv.answered_after
                     else ">cap" if busy is None else f"{busy:.2f} s")
            return ok, f"{lv.label} {shown}"

        verdicts.append(_judge(f"idle within {IDLE_WITHIN_S:g} s after the load stops, every "
                               "level", endpoint, mine, idle))
        verdicts.append(_ahead_of_peers(levels, endpoint, over, peers))
    return verdicts


def _ahead_of_peers(levels: list[Level], endpoint: str, over: list[Level],
                    peers: list[str]) -> Verdict:
    target = (f"ahead of {', '.join(peers) or 'the peers'} at every overload level "
              "(higher goodput / peak, fewer late answers, shorter busy after stop)")
    if not peers:
        return Verdict(target, endpoint, "INCONCLUSIVE", ["no peer was measured"])
    index = {(lv.service, lv.endpoint, lv.model, lv.label): lv for lv in levels}

    def ahead(lv: Level) -> tuple[bool | None, str]:
        notes, ok = [], True
        for peer in peers:
            other = index.get((peer, endpoint, lv.model, lv.label))
            if other is None or other.failure or other.driver_bound:
                return None, f"{lv.label} inconclusive ({peer}: not measured or driver-bound)"
            behind = []
            if not (lv.goodput_ratio or 0) > (other.goodput_ratio or 0):
                behind.append(f"goodput/peak {_n(lv.goodput_ratio, 2)} vs "
                              f"{_n(other.goodput_ratio, 2)}")
            late_mine = lv.late + (lv.client_timeouts or 0)
            late_peer = other.late + (other.client_timeouts or 0)
            if not (late_mine < late_peer or late_mine == late_peer == 0):
                behind.append(f"late {late_mine} vs {late_peer}")
            if not _busy_shorter(lv.busy_after_stop_s, other.busy_after_stop_s):
                behind.append(f"busy {lv.busy_after_stop_s} vs {other.busy_after_stop_s} s")
            if behind:
                ok = False
                notes.append(f"{peer}: " + ", ".join(behind))
        return ok, f"{lv.label} " + ("ahead" if ok else "not ahead of " + "; ".join(notes))

    return _judge(target, endpoint, over, ahead)


def _busy_shorter(mine: float | None, peer: float | None) -> bool:
    if mine is None:
        return False
    if peer is None:
        return True
    return mine < peer or (mine <= BUSY_FLOOR_S and peer <= BUSY_FLOOR_S)


def targets_text(verdicts: list[Verdict], late_after_s: float) -> str:
    head = (f"Targets (hardened service; late = answered more than {late_after_s:g} s after "
            "the request was sent, or intended to be sent for the open loop):")
    return "\n".join([head, *(v.line() for v in verdicts)])
