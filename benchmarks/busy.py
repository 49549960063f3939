"""How long a server keeps working after its load stops, read from its CPU time alone.

A service that queued more than it can answer in time goes on burning CPU for requests whose
clients have stopped waiting (or are about to): that is work it accepted and should have
refused. Counting it needs nothing from the service, only the operating system's count of its
process's CPU time (psutil), so it works the same for every service measured.

    watch = CpuWatch(server.pid)          # samples every 50 ms on its own thread
    watch.start()
    ...  load; end_at = time.monotonic() when it stopped
    busy = watch.wait_idle(end_at)        # seconds after end_at until idle, None if capped
    watch.stop()

Idle means: below 5 % of one core over a 100 ms window. The answer is the start of the first
such window at or after `end_at`, in steps of the sampling period (50 ms).
"""

from __future__ import annotations

import threading
import time

import psutil

PERIOD_S = 0.05
WINDOW_S = 0.1
IDLE_SHARE = 0.05  # of one core
CAP_S = 30.0


class CpuWatch:
    """A process's CPU time (user + system, all threads) sampled on a thread of its own."""

    def __init__(self, pid: int, period_s: float = PERIOD_S) -> None:
        self._process = psutil.Process(pid)
        self._period_s = period_s
        self._samples: list[tuple[float, float]] = []  # (time.monotonic(), CPU seconds)
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-watch", daemon=True)

    def start(self) -> CpuWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                times = self._process.cpu_times()
            except psutil.Error:  # the process is gone: nothing more to count
                return
            with self._changed:
                self._samples.append((time.monotonic(), times.user + times.system))
                self._changed.notify_all()
            next_at += self._period_s
            # The sampling period itself, not a synchronisation: there is no event to wait on.
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def cpu_seconds(self, since: float, until: float) -> float | None:
        """CPU seconds used between two moments (nearest samples), None if not sampled."""
        with self._changed:
            inside = [s for s in self._samples if since <= s[0] <= until]
        return inside[-1][1] - inside[0][1] if len(inside) >= 2 else None

    def busy_after(self, end_at: float, window_s: float = WINDOW_S,
                   idle_share: float = IDLE_SHARE) -> float | None:
        """Seconds from `end_at` to the first idle window seen so far, or None."""
        with self._changed:
            samples = list(self._samples)
        first = next((k for k, (t, _) in enumerate(samples) if t >= end_at - self._period_s),
                     None)
        if first is None:
            return None
        j = first
        for i in range(first, len(samples)):
            t_i, cpu_i = samples[i]
            j = max(j, i + 1)
            while j < len(samples) and samples[j][0] - t_i < window_s:
                j += 1
            if j >= len(samples):
                return None
            t_j, cpu_j = samples[j]
            if (cpu_j - cpu_i) / (t_j - t_i) < idle_share:
                return round(max(0.0, t_i - end_at), 3)
        return None

    def wait_idle(self, end_at: float, cap_s: float = CAP_S) -> float | None:
        """Block until the process has been idle for a window after `end_at`; the seconds it
        stayed busy, or None if it was still busy `cap_s` after `end_at` (or is gone)."""
        while True:
            busy = self.busy_after(end_at)
            if busy is not None:
                return busy if busy <= cap_s else None
            if time.monotonic() > end_at + cap_s + WINDOW_S or not self._thread.is_alive():
                return None
            with self._changed:  # woken by the next sample
                self._changed.wait(timeout=1.0)
