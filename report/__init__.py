"""The main job: the toolkit's resilience report (sqlite_faults.report) on this repository's
services, described by examples/targets/hardened.toml and examples/targets/naive.toml."""

from pathlib import Path

from examples.targets import HARDENED, NAIVE

ROOT = Path(__file__).resolve().parent.parent

__all__ = ["HARDENED", "NAIVE", "ROOT"]
