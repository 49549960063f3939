"""Disk errors with libfiu, switched on and off at run time inside a running process.

The service is started under `fiu-run -x`, which preloads libfiu's POSIX wrappers; while no
failure point is enabled they only check a flag, so the service runs at full speed until a
window opens (strace, by contrast, stops the process at every syscall while attached).
`fiu-ctrl` then enables a failure point such as `posix/io/rw/pwrite` with an errno
(`failinfo`: 28 ENOSPC, 5 EIO) for the window. Unlike strace's `-P`, a failure point is not
limited to one file: every pwrite of the process fails, which for this service means every
write to its database files.

    server = ServerProcess(..., env=fiu_env())
    server.start()
    with FiuFault(server.pid, "posix/io/rw/pwrite", errno.ENOSPC):
        ...   # the disk is full
"""

from __future__ import annotations

import re
import shutil
import subprocess
from types import TracebackType


def fiu_available() -> bool:
    return shutil.which("fiu-run") is not None and shutil.which("fiu-ctrl") is not None


def fiu_env() -> dict[str, str]:
    """The environment `fiu-run -x` would give a program (asked of fiu-run itself, in its dry
    run), so it can be merged with other preloads rather than replace them."""
    if not fiu_available():
        raise RuntimeError("libfiu is not installed (apt-get install fiu-utils)")
    dry_run = subprocess.run(["fiu-run", "-n", "-x", "true"], capture_output=True, text=True,
                             check=True).stdout
    env = dict(re.findall(r'^(\w+)="(.*)"', dry_run, re.M))
    env["LD_PRELOAD"] = " ".join(env.get("LD_PRELOAD", "").split())
    return env


def merge_preloads(*envs: dict[str, str]) -> dict[str, str]:
    """Merge environments, joining their LD_PRELOAD lists instead of overwriting."""
    merged: dict[str, str] = {}
    preloads: list[str] = []
    for env in envs:
        merged.update(env)
        preloads += env.get("LD_PRELOAD", "").split()
    if preloads:
        merged["LD_PRELOAD"] = " ".join(preloads)
    return merged


class FiuFault:
    """Enable one libfiu failure point in process `pid` for the duration of the block."""

    def __init__(self, pid: int, name: str, errno: int) -> None:
        self.pid = pid
        self.name = name
        self.errno = errno

    def _ctrl(self, command: str) -> None:
        subprocess.run(["fiu-ctrl", "-c", command, str(self.pid)], check=True, timeout=10)

    def __enter__(self) -> FiuFault:
        self._ctrl(f"enable name={self.name},failinfo={self.errno}")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._ctrl(f"disable name={self.name}")
