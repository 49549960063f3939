"""What each setting costs: commits per second with the service's driver on a real disk.

Same connection set-up, schema and create transaction as the simulated workload, but through
the service's own driver (pysqlite3) on the real filesystem, where every sync is a real
fsync. The service's checkpoint runs on its own connection every checkpoint interval of wall
time, as its maintenance lane would (here between commits, not beside them). A tmpfs would
make every sync free and every setting look alike, so the filesystem is reported with the
figure.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from .service import CrashService, pragmas_for, set_up
from .workload import DB_NAME, user_key, user_name


def commits_per_second(service: CrashService, journal_mode: str, synchronous: str,
                       folder: Path, duration_s: float) -> float:
    folder.mkdir(parents=True, exist_ok=True)
    for leftover in folder.iterdir():
        leftover.unlink()
    path = folder / DB_NAME
    driver = service.driver()
    pragmas = pragmas_for(service, journal_mode, synchronous)
    writer = driver.connect(str(path), isolation_level=None)
    maintenance = driver.connect(str(path), isolation_level=None)
    try:
        writer.execute(f"PRAGMA page_size = {service.page_size}")
        for conn in (writer, maintenance):
            set_up(conn, pragmas)
        for ddl in service.schema:
            writer.execute(ddl)
        interval = service.checkpoint_interval_s
        started = time.perf_counter()
        next_checkpoint = started + interval
        commits = 0
        while (now := time.perf_counter()) - started < duration_s:
            commits += 1
            service.create(writer, user_name(commits), user_key(commits))
            if interval > 0 and now >= next_checkpoint:
                service.checkpoint(maintenance, path)
                next_checkpoint = now + interval
        return commits / (time.perf_counter() - started)
    finally:
        maintenance.close()
        writer.close()


def filesystem_of(path: Path) -> str:
    """The mount's filesystem type and device, e.g. "ext4 on /dev/vda" (from /proc/mounts)."""
    best, found = "", "an unknown filesystem"
    target = os.path.realpath(path)
    try:
        with open("/proc/mounts") as mounts:
            for line in mounts:
                device, mount, fstype = line.split()[:3]
                inside = target == mount or target.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) >= len(best):
                    best, found = mount, f"{fstype} on {device}"
    except OSError:
        pass
    return found
