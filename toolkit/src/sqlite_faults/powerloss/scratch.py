"""Scratch folders: simulated files on a tmpfs, throughput on the real disk."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Crash states are written and opened thousands of times, and the checker's recovery syncs:
# on a tmpfs that costs nothing, and what is durable there does not matter (the model says).
_TMPFS = Path("/dev/shm")


@contextmanager
def simulation_scratch() -> Iterator[Path]:
    root = str(_TMPFS) if _TMPFS.is_dir() and _writable(_TMPFS) else None
    folder = Path(tempfile.mkdtemp(prefix="powerloss-", dir=root))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def disk_scratch(parent: Path | None = None) -> Iterator[Path]:
    """A folder on the real disk (never /dev/shm): syncs must cost what they cost."""
    folder = Path(tempfile.mkdtemp(prefix="powerloss-disk-", dir=parent))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _writable(folder: Path) -> bool:
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False
