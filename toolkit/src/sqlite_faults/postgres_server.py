"""A throwaway PostgreSQL server: `initdb` and `pg_ctl` on a temporary folder and a free
loopback port, removed afterwards. Debian's `postgresql` package provides the binaries.

PostgreSQL refuses to run as root; when this process is root the server runs as the
`postgres` system user (created by the Debian package) through `runuser`.

    with PostgresServer() as pg:
        url = pg.url(pg.create_database("t1"))   # postgresql+psycopg://...
        pg.stop("immediate"); pg.start()           # an abrupt stop and a restart
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from .ports import free_port


def pg_bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl else None


class PostgresServer:
    def __init__(self, superuser: str = "postgres") -> None:
        bin_dir = pg_bin_dir()
        if bin_dir is None:
            raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
        self.bin_dir = bin_dir
        self.superuser = superuser
        self.base = Path(tempfile.mkdtemp(prefix="pg-"))
        self.data = self.base / "data"
        self.socket_dir = self.base / "sock"
        self.log = self.base / "server.log"
        self.port = free_port()
        self._run_as = self._os_user()

    def _os_user(self) -> list[str]:
        if os.geteuid() != 0:
            return []
        user = pwd.getpwnam("postgres")
        os.chmod(self.base, 0o755)
        os.chown(self.base, user.pw_uid, user.pw_gid)
        return ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self._run_as, *args], capture_output=True, text=True,
                              check=check, timeout=120)

    def __enter__(self) -> PostgresServer:
        self.init()
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)

    def init(self) -> None:
        self._run("mkdir", "-p", str(self.socket_dir))
        self._run(str(self.bin_dir / "initdb"), "-D", str(self.data), "-U", self.superuser,
                  "--auth=trust", "--no-sync", "-E", "UTF8")

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 "
                   "-c max_connections=200")
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
                  "-o", options, "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        """`immediate` is an abrupt stop: no checkpoint, crash recovery at the next start."""
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w",
                  "stop", check=False)

    def psql(self, sql: str, database: str = "postgres") -> str:
        return self._run(str(self.bin_dir / "psql"), "-h", "127.0.0.1", "-p", str(self.port),
                         "-U", self.superuser, "-d", database, "-At", "-c", sql).stdout

    def create_database(self, name: str) -> str:
        self.psql(f'CREATE DATABASE "{name}"')
        return name

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{self.superuser}@127.0.0.1:{self.port}/{database}"

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except (FileNotFoundError, PermissionError):
            return "(no server log)"
