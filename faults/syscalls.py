"""Syscall faults with strace's `--inject`: kills at precise I/O points, disk errors, slow syncs.

Two ways to apply one, both real kernel-level faults in the service's own process:

- from the start, as a command prefix (`SyscallFault.wrapper()`), for kills at the Nth
  write or sync: `when=N` counts per thread, and `-P` limits it to one file;
- for a window, attached to a running process (`AttachedSyscallFault`), for disk-full, I/O
  errors or slow `fdatasync` that start and stop while the service keeps running.

Facts (strace 6.1, ../shared/notes/sqlite-facts.md): `-P` needs an absolute path, also for a
file not created yet; only syscalls in the trace set are injected; ENOSPC on `pwrite64` gives
"database or disk is full", EIO or ENOSPC on `fdatasync` gives "disk I/O error".

    fault = SyscallFault([wal], ["pwrite64"], "signal=KILL", when=3)
    server.start(wrapper=fault.wrapper())         # dies at its 3rd write to the WAL
    with AttachedSyscallFault(server_pid, SyscallFault([wal], ["pwrite64"], "error=ENOSPC")):
        ...                                       # every WAL write fails while inside
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType


def strace_path() -> str | None:
    return shutil.which("strace")


@dataclass(frozen=True)
class SyscallFault:
    paths: list[Path]
    syscalls: list[str]
    action: str  # "signal=KILL", "error=ENOSPC", "error=EIO", "delay_enter=200000" (µs)
    when: str | None = None  # "3", "2..5", "1+2": strace's when= (counted per thread)

    def strace_args(self) -> list[str]:
        strace = strace_path()
        if strace is None:
            raise RuntimeError("strace is not installed (apt-get install strace)")
        for path in self.paths:
            if not Path(path).is_absolute():
                raise ValueError(f"strace -P needs an absolute path, got {path}")
        names = ",".join(self.syscalls)
        inject = f"inject={names}:{self.action}" + (f":when={self.when}" if self.when else "")
        args = [strace, "-f", "-qq", "-o", "/dev/null"]
        for path in self.paths:
            args += ["-P", str(path)]
        return [*args, "-e", f"trace={names}", "-e", inject]

    def wrapper(self) -> list[str]:
        """A command prefix that runs the program with the fault from its first syscall."""
        return [*self.strace_args(), "--"]


class AttachedSyscallFault:
    """Attach strace to a running process (all its threads) for the duration of the block."""

    def __init__(self, pid: int, fault: SyscallFault, attach_timeout_s: float = 10.0) -> None:
        self.pid = pid
        self.fault = fault
        self.attach_timeout_s = attach_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> AttachedSyscallFault:
        self._proc = subprocess.Popen([*self.fault.strace_args(), "-p", str(self.pid)])
        self._wait_attached()
        return self

    def _wait_attached(self) -> None:
        """Until every thread of the target reports a tracer (from /proc, not a timer)."""
        assert self._proc is not None
        give_up = time.monotonic() + self.attach_timeout_s
        while time.monotonic() < give_up:
            if self._proc.poll() is not None:
                raise RuntimeError(f"strace exited with {self._proc.returncode} on attach")
            if _all_threads_traced(self.pid, self._proc.pid):
                return
            time.sleep(0.01)
        self.__exit__(None, None, None)
        raise RuntimeError(f"strace did not attach to {self.pid} in time")

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)  # strace detaches and leaves the target
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()


def _all_threads_traced(pid: int, tracer: int) -> bool:
    tasks = list(Path(f"/proc/{pid}/task").glob("*"))
    if not tasks:
        return False
    for task in tasks:
        try:
            status = (task / "status").read_text()
        except FileNotFoundError:
            continue  # the thread ended meanwhile
        if f"TracerPid:\t{tracer}\n" not in status:
            return False
    return True
