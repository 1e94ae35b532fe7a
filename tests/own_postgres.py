"""A PostgreSQL cluster of the test's own (``initdb`` + ``pg_ctl`` in a temporary folder, on a free
loopback port), so a test may stop and restart it without touching the shared instance.

PostgreSQL refuses to run as root: under root the cluster belongs to the ``postgres`` user and its
commands run as that user. Skips when ``initdb`` is not installed.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.gateway_process import free_port


def _bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    if found:
        return Path(found[-1])
    initdb = shutil.which("initdb")
    if initdb is None:
        pytest.skip("initdb is not installed")
    return Path(initdb).parent


class OwnPostgres:
    def __init__(self) -> None:
        self._bin = _bin_dir()
        self.folder = Path(tempfile.mkdtemp(prefix="coe-own-pg-"))
        self.data = self.folder / "data"
        self.port = free_port()
        self._user: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            self._user = pwd.getpwnam("postgres")
            os.chown(self.folder, self._user.pw_uid, self._user.pw_gid)

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        user = self._user

        def demote() -> None:
            if user is not None:
                os.setgid(user.pw_gid)
                os.setuid(user.pw_uid)

        subprocess.run(
            [str(self._bin / args[0]), *args[1:]],
            check=True,
            capture_output=True,
            preexec_fn=demote,
            cwd=self.folder,
            timeout=60,
        )

    def init(self) -> OwnPostgres:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        return self

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c max_connections=50"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.folder / "pg.log"),
            "-w", "start",
        )

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass  # already stopped
        shutil.rmtree(self.folder, ignore_errors=True)
