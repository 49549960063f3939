"""The report suite runs `python -m report` briefly, as a user would, in a subprocess."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Short phases and a small closed loop: the suite checks the job end to end, not its figures.
# The battery's checks as experiments cost about 10 s a target; the test that needs them
# passes --experiments.
BRIEF = ("--phases", "0.5,1.5,1", "--load", "closed", "--clients", "4", "--seed", "7",
         "--no-experiments")


@pytest.fixture
def run_report() -> Callable[..., subprocess.CompletedProcess[str]]:
    """`run_report(out, *args)`: the main job, briefly, writing into `out`."""

    def run(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "report", *BRIEF, "--out", str(out), *args],
                              cwd=ROOT, capture_output=True, text=True, timeout=240)

    return run
