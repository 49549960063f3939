"""Remove each safeguard of the inventory (scripts/safeguards.py) in turn and show the tests
that catch it.

Each mutant is a few edits in app/ (or in the fault toolkit, toolkit/src), each anchored
inside a named function or class (scripts/anchors.py); the script applies them to a scratch
copy of the tree (never to your work tree), runs tests there and lists those that went red,
then puts the copy back for the next mutant.
A mutant no test kills is a hole in the suite: the script then exits non-zero.

    .venv/bin/python scripts/check_mutants.py                 # quick: each row's own tests
    .venv/bin/python scripts/check_mutants.py -x -j 2         # the same, two at a time, each
                                                              # stopping at its first red test (CI)
    .venv/bin/python scripts/check_mutants.py --full          # unit + fault suites (nightly)
    .venv/bin/python scripts/check_mutants.py --full -x       # the same, each run stopping at its
                                                              # first red test
    .venv/bin/python scripts/check_mutants.py no-retry        # named mutants only
    .venv/bin/python scripts/check_mutants.py --backend sqlite  # skip the PostgreSQL rows
    .venv/bin/python scripts/check_mutants.py --write-inventory docs/safeguards.md

Quick mode runs the tests a row names (the inventory says they go red); full mode runs the
unit and fault suites plus the row's own tests from other folders, and lists every red test.
PostgreSQL rows run with --backend postgres (a throwaway server the tests start).
"""

from __future__ import annotations

import argparse
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from anchors import AnchorError, replace
from safeguards import SAFEGUARDS, Safeguard

ROOT = Path(__file__).resolve().parent.parent
FULL_SUITES = ("tests/unit", "tests/fault")
INVENTORY_TEST = "tests/unit/test_safeguard_inventory.py"
RUN_TIMEOUT_S = 1200


def tree_files() -> list[str]:
    """The work tree's tracked and new files (ignored ones such as .venv excluded)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True).stdout.decode().split("\0")
    return [rel for rel in listed if rel and (ROOT / rel).is_file()]


class Slot:
    """A scratch copy of the work tree that runs one mutant after another.

    Reused rather than copied afresh per mutant so that its bytecode caches (Python's and
    pytest's rewritten test modules, in __pycache__) survive from one run to the next: that
    compiling was over a third of a quick row's time. Between runs the mutated files are put
    back (with their cached bytecode dropped) and whatever a run left behind is removed.
    """

    def __init__(self, files: list[str]) -> None:
        self.files = files
        self.tree = Path(tempfile.mkdtemp(prefix="mutant-slot-"))
        for rel in files:
            (self.tree / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, self.tree / rel)

    def restore(self, paths: Iterable[str]) -> None:
        """The named files as in the work tree; anything a run added, removed."""
        for rel in paths:
            shutil.copy2(ROOT / rel, self.tree / rel)
            forget_bytecode(self.tree / rel)
        known = {self.tree / rel for rel in self.files}
        for folder, dirs, names in os.walk(self.tree, topdown=False):
            here = Path(folder)
            if "__pycache__" in here.parts:
                continue
            for name in names:
                if here / name not in known:
                    (here / name).unlink()
            for name in dirs:
                child = here / name
                if name != "__pycache__" and not any(child.iterdir()):
                    child.rmdir()

    def remove(self) -> None:
        shutil.rmtree(self.tree, ignore_errors=True)


def forget_bytecode(source: Path) -> None:
    """Drop the cached bytecode of `source` (Python's and pytest's): a cache is trusted on
    the source's mtime and size, which a mutant of the same length written in the same
    second as an earlier one would share."""
    for cached in (source.parent / "__pycache__").glob(f"{source.stem}.*.pyc"):
        cached.unlink()


def apply(row: Safeguard, tree: Path) -> None:
    for edit in row.edits:
        target = tree / edit.path
        try:
            target.write_text(replace(target.read_text(), edit.old, edit.new, edit.within,
                                      edit.path))
        except AnchorError as exc:
            raise SystemExit(f"{row.name}: {exc}") from None
        forget_bytecode(target)
    for path, code in row.append.items():
        target = tree / path
        target.write_text(target.read_text() + code)
        forget_bytecode(target)


def tests_for(row: Safeguard, full: bool) -> list[str]:
    if not full:
        return list(row.tests)
    outside = [t for t in row.tests if not t.startswith(FULL_SUITES)]
    return [*FULL_SUITES, *outside]


def run_mutant(row: Safeguard, slots: queue.Queue[Slot], full: bool,
               exitfirst: bool = False) -> tuple[list[str], float]:
    """The red tests (FAILED or ERROR), and the run's duration."""
    started = time.monotonic()
    slot = slots.get()
    tree = slot.tree
    try:
        apply(row, tree)
        backend = ["--backend", "postgres"] if row.backend == "postgres" else []
        # Bytecode is written (whatever the caller's PYTHONDONTWRITEBYTECODE) so that the
        # slot's next run finds it.
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        try:
            result = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE",
                 "--timeout=60", *(["-x"] if exitfirst else []), *backend,
                 # The inventory's own check goes red on every mutant (its edit no longer
                 # applies to the mutated code): it is no kill.
                 f"--ignore={INVENTORY_TEST}",
                 *tests_for(row, full)],
                cwd=tree, capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
                # The scratch copy must shadow the editable installs of the real app/ and
                # of the fault toolkit (toolkit/src).
                env={**env,
                     "PYTHONPATH": os.pathsep.join([str(tree), str(tree / "toolkit" / "src")])},
            )
        except subprocess.TimeoutExpired:
            return ["(the whole run hung past its time limit)"], time.monotonic() - started
    finally:
        slot.restore([e.path for e in row.edits] + list(row.append))
        slots.put(slot)
    red = sorted(set(re.findall(r"^(?:FAILED|ERROR) (\S+)", result.stdout, re.M)))
    if result.returncode not in (0, 1):
        # Interrupted, a usage error or nothing collected: the mutant broke the tree (a
        # syntax error, say), which says nothing about the tests. Fix the row.
        raise SystemExit(f"{row.name}: pytest exited {result.returncode}; the mutant "
                         f"does not leave a runnable tree:\n{result.stdout[-2000:]}"
                         f"{result.stderr[-2000:]}")
    return red, time.monotonic() - started


START = "<!-- inventory: generated by scripts/check_mutants.py --write-inventory -->"
END = "<!-- end of inventory -->"


def inventory_markdown(rows: Iterable[Safeguard]) -> str:
    """The inventory table, one section per family."""
    lines = [START]
    family = None
    for row in rows:
        if row.family != family:
            family = row.family
            lines += ["", f"### {family}", "", "| mutant | safeguard | backend | red tests |",
                      "|---|---|---|---|"]
        files = ", ".join(sorted({e.path.removeprefix("app/") + (f": {e.within}" if e.within
                                                                 else "")
                                  for e in row.edits}))
        tests = "<br>".join(f"`{t.split('/')[-1]}`" for t in row.tests)
        lines.append(f"| `{row.name}` ({files}) | {row.what} | {row.backend} | {tests} |")
    lines += ["", END]
    return "\n".join(lines)


def write_inventory(path: Path) -> None:
    """Replace the generated section of `path` (between START and END), keeping the prose."""
    text = path.read_text() if path.exists() else f"# Safeguards\n\n{START}\n{END}\n"
    if START not in text or END not in text:
        raise SystemExit(f"{path} has no generated section ({START} ... {END})")
    before, rest = text.split(START, 1)
    after = rest.split(END, 1)[1]
    path.write_text(before + inventory_markdown(SAFEGUARDS) + after)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="mutants to run (default: all)")
    parser.add_argument("--full", action="store_true",
                        help="run the unit and fault suites for every mutant (nightly)")
    parser.add_argument("-x", "--exitfirst", action="store_true",
                        help="stop each mutant's run at its first red test (faster; lists one)")
    parser.add_argument("-j", "--jobs", type=int, default=1,
                        help="mutants run side by side (default 1), each side in a scratch "
                             "tree of its own, each run a pytest process; a second one on a "
                             "2-core machine loads "
                             "it as the suites' busy runs do (scripts/busy_runs.sh), which can "
                             "only make a mutant's tests slower, never pass a broken one")
    parser.add_argument("--backend", choices=["sqlite", "postgres", "all"], default="all",
                        help="which rows to run (default: all)")
    parser.add_argument("--write-inventory", type=Path, metavar="FILE",
                        help="write the inventory as Markdown and exit")
    args = parser.parse_args()
    if args.write_inventory:
        write_inventory(args.write_inventory)
        print(f"wrote {len(SAFEGUARDS)} rows to {args.write_inventory}")
        return
    unknown = set(args.names) - {row.name for row in SAFEGUARDS}
    if unknown:
        raise SystemExit(f"unknown mutants: {', '.join(sorted(unknown))}")
    chosen = [row for row in SAFEGUARDS
              if (not args.names or row.name in args.names)
              and args.backend in ("all", row.backend)]
    mode = "full" if args.full else "quick"
    print(f"{len(chosen)} mutants, {mode} mode", flush=True)
    survivors: list[str] = []
    missing: list[str] = []  # killed, but not by a test the inventory names
    jobs = max(1, min(args.jobs, len(chosen)))
    files = tree_files()
    slots: queue.Queue[Slot] = queue.Queue()
    made = [Slot(files) for _ in range(jobs)]
    for slot in made:
        slots.put(slot)
    try:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            runs = [pool.submit(run_mutant, row, slots, args.full, args.exitfirst)
                    for row in chosen]
            for row, run in zip(chosen, runs, strict=True):
                red, seconds = run.result()  # in the inventory's order, each once it is done
                named = [t for t in red if any(t.startswith(n) for n in row.tests)]
                print(f"\n## {row.name} [{row.backend}, {seconds:.0f} s]: {row.what}",
                      flush=True)
                print(f"killed by {len(red)} test(s)" if red else "SURVIVED")
                for test in red:
                    print(f"  - {test}", flush=True)
                if not red:
                    survivors.append(row.name)
                elif not named and not args.exitfirst:
                    missing.append(row.name)
    finally:
        for slot in made:
            slot.remove()
    killed = len(chosen) - len(survivors)
    percent = 100.0 * killed / len(chosen) if chosen else 100.0
    print(f"\nkilled {killed} of {len(chosen)} mutants ({percent:.1f} %), {mode} mode")
    if missing:
        print(f"killed, but by none of the tests the inventory names: {', '.join(missing)}")
    if survivors:
        print(f"SURVIVED: {', '.join(survivors)}")
    if survivors or missing:
        sys.exit(1)


if __name__ == "__main__":
    main()
