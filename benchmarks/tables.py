"""Markdown tables of wrk runs (benchmarks.load.Cell), shared by every mode of bench.py."""

from __future__ import annotations

from benchmarks.load import Cell


def fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def cells_markdown(cells: list[Cell]) -> str:
    lines = [
        "| service | backend | server CPUs | endpoint | c | req/s | p50 ms | p95 ms | p99 ms "
        "| non-2xx | sock err | late | answered after | req/s / healthz | p50 / healthz "
        "| p95 / healthz | p99 / healthz |",
        "|---|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|---|--:|--:|--:|--:|",
    ]
    for c in cells:
        ratios = c.ratios or {}
        lines.append(
            f"| {c.service} | {c.backend} | {c.server_cpus} | {c.endpoint} "
            f"| {c.concurrency} | {c.rps:.0f} | {fmt(c.p50_ms)} | {fmt(c.p95_ms)} "
            f"| {fmt(c.p99_ms)} | {c.non_2xx} | {c.socket_errors} | {c.late} "
            f"| {'yes' if c.answered_after else '**no**'} "
            f"| {fmt(ratios.get('rps'), 2)} | {fmt(ratios.get('p50'), 1)} "
            f"| {fmt(ratios.get('p95'), 1)} | {fmt(ratios.get('p99'), 1)} |"
        )
    return "\n".join(lines)


def progress_line(cell: Cell) -> str:
    """One line per run on stderr, as the runs go."""
    return (f"  {cell.service:13} {cell.backend:8} cpu {cell.server_cpus:8} {cell.endpoint:11} "
            f"c={cell.concurrency:<3} {cell.rps:9.1f} req/s  p99 {cell.p99_ms} ms  "
            f"non-2xx {cell.non_2xx}  late {cell.late}"
            + ("" if cell.answered_after else "  STALLED: restarting"))
