"""A private PostgreSQL server to stop and start (the shared one on 5432 is never touched).

initdb refuses to run as root, so the cluster belongs to the ``postgres`` system user when the
tests run as root; it lives in a temporary folder on a free port and is removed by its owner.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from tests.fakes.http_sink import free_port


def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL's bin folder (Debian layout), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


class PrivatePostgres:
    """``initdb`` + ``pg_ctl`` in a temporary folder, trust authentication, 127.0.0.1 only."""

    def __init__(self) -> None:
        bindir = postgres_bin()
        if bindir is None:
            raise RuntimeError("PostgreSQL server binaries are not installed (/usr/lib/postgresql/*/bin)")
        self.bin = bindir
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix=f"activity-pg-{uuid.uuid4().hex[:8]}-"))
        self.data = self.root / "data"
        self._as_postgres = os.geteuid() == 0

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 120) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, timeout=timeout, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {result.stdout[-2000:]!r} {result.stderr[-2000:]!r}")

    def init(self) -> PrivatePostgres:
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        return self

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "server.log"), "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
