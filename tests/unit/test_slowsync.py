"""The slow-sync shim delays fsync/fdatasync only while its control file says so, and only
for files whose path matches."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlite_faults.slowsync import SlowSync, compiler

pytestmark = pytest.mark.skipif(compiler() is None, reason="no C compiler to build the shim")

PROBE = """
import os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
started = time.monotonic()
os.fsync(fd)
os.fdatasync(fd)
print(time.monotonic() - started)
"""


def synced_in(env: dict[str, str], target: Path) -> float:
    """Seconds a child process with `env` takes to fsync and fdatasync `target`."""
    out = subprocess.run([sys.executable, "-c", PROBE, str(target)],
                         env={**os.environ, **env}, capture_output=True, text=True,
                         check=True, timeout=30)
    return float(out.stdout)


def test_syncs_are_delayed_only_inside_a_window(tmp_path: Path) -> None:
    shim = SlowSync(tmp_path / "shim")
    env = shim.env(match="users.db")
    target = tmp_path / "users.db-wal"
    assert synced_in(env, target) < 0.1
    with shim.window(150_000, 150_000):
        assert synced_in(env, target) >= 0.29  # two syncs, each 150 ms late
    assert synced_in(env, target) < 0.1


def test_files_that_do_not_match_are_not_delayed(tmp_path: Path) -> None:
    shim = SlowSync(tmp_path / "shim")
    env = shim.env(match="users.db")
    with shim.window(300_000, 300_000):
        assert synced_in(env, tmp_path / "other.bin") < 0.1
