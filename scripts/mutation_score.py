"""Summarise a mutmut 3 run over app/: counts per file, the mutation score, and every survivor.

mutmut's configuration is `[tool.mutmut]` in pyproject.toml (app/ mutated, tests/unit and
tests/fault run against each mutant); it works in ./mutants/. This script reads the verdicts
with `mutmut results --all true` and the diff of each survivor with `mutmut show NAME`, so it
depends on mutmut's command line only, not on its internals.

    .venv/bin/python scripts/mutation_score.py                  # summarise the last run
    .venv/bin/python scripts/mutation_score.py --run            # mutmut run first (1 child)
    .venv/bin/python scripts/mutation_score.py --markdown build/mutation/summary.md

score = killed / (total - skipped - no tests - not checked), in percent: a mutant no selected
test executes (e.g. in app/postgres_backend.py, which only `--backend postgres` runs) is counted
apart, not as a survivor, and so is one a partial run has not reached ("not checked"). Timeouts
are shown apart too, and not counted as kills. Exits non-zero only when mutmut itself
fails or no mutant was checked; survivors are reported, not enforced.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

COLUMNS = ["killed", "survived", "timeout", "suspicious", "skipped", "no tests", "not checked",
           "other"]
# Left out of the score's denominator: nothing ran against them (yet).
_UNTESTED = ["skipped", "no tests", "not checked"]
_RESULT_LINE = re.compile(r"^\s+(?P<name>\S+): (?P<status>.+?)\s*$")
_HUNK = re.compile(r"^@@ -(?P<start>\d+)")
# module, then "x_function" or "xǁClassǁmethod", then the mutant's number.
_NAME = re.compile(r"^(?P<module>.+?)\.x(?:ǁ(?P<cls>[^ǁ]+)ǁ|_)(?P<func>.+)__mutmut_\d+$")


@dataclass(frozen=True)
class Survivor:
    name: str
    location: str  # file:line of the changed line, or just the file when it cannot be found
    diff: str


def mutmut_command() -> list[str]:
    """The `mutmut` console script of this interpreter's environment (not `python -m
    mutmut`, which mutmut warns against)."""
    beside = Path(sys.executable).with_name("mutmut")
    found = str(beside) if beside.exists() else shutil.which("mutmut")
    if found is None:
        raise SystemExit("mutmut is not installed (pip install 'mutmut>=3,<4')")
    return [found]


def mutmut(root: Path, *args: str) -> str:
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}  # mutant names contain "ǁ"
    done = subprocess.run([*mutmut_command(), *args], cwd=root, env=env, capture_output=True,
                          text=True, encoding="utf-8")
    if done.returncode != 0:
        raise SystemExit(f"mutmut {' '.join(args)} failed ({done.returncode}):\n"
                         f"{done.stdout}{done.stderr}")
    return done.stdout


def read_results(root: Path) -> dict[str, str]:
    """Mutant name -> mutmut's verdict ("killed", "survived", "no tests", ...)."""
    out = mutmut(root, "results", "--all", "true")
    return {m["name"]: m["status"] for line in out.splitlines()
            if (m := _RESULT_LINE.match(line))}


def parse_name(name: str) -> tuple[str, str, str]:
    """app.db.xǁDatabaseǁrun__mutmut_3 -> ("app/db.py", "Database", "run");
    app.api.x__deadline__mutmut_1 -> ("app/api.py", "", "_deadline")."""
    m = _NAME.match(name)
    if m is None:
        return name, "", ""
    return m["module"].replace(".", "/") + ".py", m["cls"] or "", m["func"]


def function_line(root: Path, path: str, cls: str, func: str) -> int | None:
    """Line of the `def` of the mutated function in the source mutmut mutated."""
    try:
        tree = ast.parse((root / path).read_text())
    except (OSError, SyntaxError):
        return None
    scope = tree.body
    if cls:
        scope = next((n.body for n in tree.body
                      if isinstance(n, ast.ClassDef) and n.name == cls), [])
    return next((n.lineno for n in scope
                 if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == func),
                None)


def changed_line(diff: str) -> int | None:
    """Offset (1 = the `def` line) of the first removed line of the diff's function."""
    line = None
    for text in diff.splitlines():
        if (hunk := _HUNK.match(text)) is not None:
            line = int(hunk["start"])
        elif line is not None and not text.startswith("+"):
            if text.startswith("-"):
                return line
            line += 1
    return None


def survivor(root: Path, name: str) -> Survivor:
    shown = mutmut(root, "show", name).splitlines()
    diff = "\n".join(line for line in shown if not line.startswith("# ")).strip()
    path, cls, func = parse_name(name)
    start, offset = function_line(root, path, cls, func), changed_line(diff)
    where = path if start is None or offset is None else f"{path}:{start + offset - 1}"
    return Survivor(name, where, diff)


def tally(verdicts: dict[str, str]) -> dict[str, Counter[str]]:
    """Counts per source file, plus "total" over all of them."""
    per_file: dict[str, Counter[str]] = {}
    for name, status in verdicts.items():
        column = status if status in COLUMNS else "other"  # segfault, type check, interrupted
        for key in (parse_name(name)[0], "total"):
            per_file.setdefault(key, Counter())[column] += 1
    return dict(sorted(per_file.items(), key=lambda kv: (kv[0] == "total", kv[0])))


def score(counts: Counter[str]) -> float | None:
    tested = counts.total() - sum(counts[status] for status in _UNTESTED)
    return 100 * counts["killed"] / tested if tested else None


def table(per_file: dict[str, Counter[str]], markdown: bool) -> list[str]:
    head = ["file", "total", *COLUMNS, "score"]
    rows = [[path, str(c.total()), *(str(c[col]) for col in COLUMNS),
             "n/a" if (s := score(c)) is None else f"{s:.1f} %"] for path, c in per_file.items()]
    if markdown:
        return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
                *("| " + " | ".join(row) + " |" for row in rows)]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True))
            for r in [head, *rows]]


def render(per_file: dict[str, Counter[str]], survivors: list[Survivor], version: str,
           markdown: bool) -> str:
    overall = score(per_file["total"])
    shown = "n/a" if overall is None else f"{overall:.1f} %"
    lines = [
        "## Mutation testing (mutmut)" if markdown else "Mutation testing (mutmut)", "",
        f"{version}; app/ mutated, tests/unit + tests/fault run against each mutant.", "",
        f"**Score: {shown}**" if markdown else f"score: {shown}",
        "(killed / (total - skipped - no tests - not checked))", "",
        *table(per_file, markdown), "",
    ]
    if unchecked := per_file["total"]["not checked"]:
        lines += [f"Partial run: {unchecked} mutants not checked (stopped before reaching them).",
                  ""]
    lines += [f"{'### ' if markdown else ''}Survivors ({len(survivors)})", ""]
    for s in survivors:
        if markdown:
            lines += [f"- `{s.name}` ({s.location})", "", "  ```diff",
                      *(f"  {d}" for d in s.diff.splitlines()), "  ```", ""]
        else:
            lines += [f"{s.name}  {s.location}", s.diff, ""]
    return "\n".join(lines).rstrip() + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="store_true", help="run `mutmut run` first")
    parser.add_argument("--max-children", type=int, default=1,
                        help="mutmut's parallel mutant runs with --run (default 1)")
    parser.add_argument("--markdown", type=Path, metavar="FILE",
                        help="also write the summary as Markdown to FILE")
    parser.add_argument("--root", type=Path, default=Path.cwd(),
                        help="the project (pyproject.toml, mutants/); default: here")
    args = parser.parse_args()
    root: Path = args.root.resolve()
    if args.run:
        done = subprocess.run([*mutmut_command(), "run", "--max-children",
                               str(args.max_children)], cwd=root)
        if done.returncode != 0:
            raise SystemExit(f"mutmut run failed ({done.returncode})")
    verdicts = read_results(root)
    if not any(status != "not checked" for status in verdicts.values()):
        raise SystemExit("no mutant checked under mutants/: run `mutmut run` (or --run)")
    survivors = [survivor(root, name) for name, status in sorted(verdicts.items())
                 if status == "survived"]
    version = mutmut(root, "--version").strip().replace(", version ", " ")
    per_file = tally(verdicts)
    print(render(per_file, survivors, version, markdown=False), end="")
    if args.markdown is not None:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(render(per_file, survivors, version, markdown=True))
        print(f"\nMarkdown summary written to {args.markdown}")


if __name__ == "__main__":
    main()
