"""Slow fsync/fdatasync windows through an LD_PRELOAD shim (sqlite_faults/native/slowsync.c).

    shim = SlowSync(control_dir)             # builds the shim with cc on first use
    server = ServerProcess(..., env=shim.env(match="users.db"))
    with shim.window(150_000, 250_000):      # every sync of a users.db* file: +150-250 ms
        ...

Why a shim and not strace: see the C file's comment (strace's per-syscall stop costs more than
the delay it would inject). The shim reads its control file only inside sync calls.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

SOURCE = Path(__file__).with_name("native") / "slowsync.c"


def compiler() -> str | None:
    return shutil.which("cc") or shutil.which("gcc")


class SlowSync:
    def __init__(self, work_dir: Path) -> None:
        self.work_dir = Path(work_dir)
        self.control = self.work_dir / "slowsync.control"

    def library(self) -> Path:
        """The shim, built from source into work_dir (cached by the source's hash)."""
        cc = compiler()
        if cc is None:
            raise RuntimeError("no C compiler (apt-get install gcc) to build the slow-sync shim")
        digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]
        lib = self.work_dir / f"slowsync-{digest}.so"
        if not lib.exists():
            self.work_dir.mkdir(parents=True, exist_ok=True)
            subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", str(lib), str(SOURCE), "-ldl"],
                           check=True)
        return lib

    def env(self, match: str = "") -> dict[str, str]:
        """Environment for the process to slow: preload the shim, point it at the control."""
        lib = self.library()  # creates work_dir
        self.control.write_text("")
        return {"LD_PRELOAD": str(lib), "SLOWSYNC_CONTROL": str(self.control),
                "SLOWSYNC_MATCH": match}

    @contextlib.contextmanager
    def window(self, min_us: int, max_us: int) -> Iterator[None]:
        self.control.write_text(f"{min_us} {max_us}\n")
        try:
            yield
        finally:
            self.control.write_text("")
