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

    def strace_args(self, follow: bool = True) -> list[str]:
        strace = strace_path()
        if strace is None:
            raise RuntimeError("strace is not installed (apt-get install strace)")
        for path in self.paths:
            if not Path(path).is_absolute():
                raise ValueError(f"strace -P needs an absolute path, got {path}")
        names = ",".join(self.syscalls)
        inject = f"inject={names}:{self.action}" + (f":when={self.when}" if self.when else "")
        args = [strace, *(["-f"] if follow else []), "-qq", "-o", "/dev/null"]
        for path in self.paths:
            args += ["-P", str(path)]
        return [*args, "-e", f"trace={names}", "-e", inject]

    def wrapper(self) -> list[str]:
        """A command prefix that runs the program with the fault from its first syscall."""
        return [*self.strace_args(), "--"]


class AttachedSyscallFault:
    """Attach strace to a running process for the duration of the block: to all its threads,
    or only to `threads` (thread ids), e.g. those that do the database I/O.

    While attached, every syscall of a traced thread stops for strace, injected or not (the
    seccomp filter that avoids that works only for processes strace starts), so tracing
    costs each traced thread time on every syscall. Limiting it to the threads that do the
    I/O keeps that cost away from, say, an event loop that only serves HTTP.
    """

    def __init__(self, pid: int, fault: SyscallFault, attach_timeout_s: float = 10.0,
                 threads: list[int] | None = None) -> None:
        self.pid = pid
        self.fault = fault
        self.attach_timeout_s = attach_timeout_s
        self.threads = threads
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> AttachedSyscallFault:
        if self.threads is None:
            targets = ["-p", str(self.pid)]
        else:
            targets = [arg for tid in self.threads for arg in ("-p", str(tid))]
        self._proc = subprocess.Popen(
            [*self.fault.strace_args(follow=self.threads is None), *targets])
        self._wait_attached()
        return self

    def _wait_attached(self) -> None:
        """Until every traced thread reports a tracer (from /proc, not a timer)."""
        assert self._proc is not None
        give_up = time.monotonic() + self.attach_timeout_s
        while time.monotonic() < give_up:
            if self._proc.poll() is not None:
                raise RuntimeError(f"strace exited with {self._proc.returncode} on attach")
            if _all_threads_traced(self.pid, self._proc.pid, self.threads):
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


def threads_of(pid: int) -> list[int]:
    return sorted(int(task.name) for task in Path(f"/proc/{pid}/task").glob("*"))


def _all_threads_traced(pid: int, tracer: int, threads: list[int] | None = None) -> bool:
    tasks = [Path(f"/proc/{pid}/task/{tid}") for tid in (threads or threads_of(pid))]
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
