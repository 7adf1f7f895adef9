"""A throwaway PostgreSQL cluster (own data directory, free port) for outage tests."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile

from tests.servers import free_port


def pg_bin(name: str) -> str | None:
    """The newest installed ``/usr/lib/postgresql/*/bin/<name>``, else ``name`` on PATH."""
    candidates = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda path: int(path.split("/")[4]) if path.split("/")[4].isdigit() else 0,
    )
    return candidates[-1] if candidates else shutil.which(name)


class ThrowawayPostgres:
    """``start()`` (initdb on first use), ``stop()`` (fast shutdown), ``remove()``.

    Runs as the ``postgres`` OS user when the test runs as root (PostgreSQL refuses root).
    Trust authentication, socket and data in a temporary directory.
    """

    def __init__(self) -> None:
        initdb, pg_ctl = pg_bin("initdb"), pg_bin("pg_ctl")
        if initdb is None or pg_ctl is None:
            raise FileNotFoundError("PostgreSQL server binaries (initdb, pg_ctl) not found")
        self.initdb, self.pg_ctl = initdb, pg_ctl
        self.port = free_port()
        self.base = tempfile.mkdtemp(prefix="proxy-pg-")
        self.data = os.path.join(self.base, "data")
        self.running = False
        self._as: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.base, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        subprocess.run([*self._as, *args], check=True, capture_output=True, timeout=60)

    def start(self) -> ThrowawayPostgres:
        if not os.path.exists(self.data):
            self._run(self.initdb, "-D", self.data, "-A", "trust", "-U", "postgres")
        options = f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off"
        log_file = os.path.join(self.base, "server.log")
        self._run(self.pg_ctl, "-D", self.data, "-o", options, "-l", log_file, "-w", "start")
        self.running = True
        return self

    def stop(self) -> None:
        if self.running:
            self._run(self.pg_ctl, "-D", self.data, "-m", "fast", "-w", "stop")
            self.running = False

    def remove(self) -> None:
        """Stop (if running) and delete the cluster; safe to call more than once."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.base, ignore_errors=True)
