"""A real PostgreSQL server for the tests, from Debian's packages (``make tools`` installs them).

``initdb`` makes a throwaway cluster in a temporary directory and ``postgres``
serves it on a free loopback port (TCP only, no Unix socket, trust
authentication: nothing but this machine's tests can reach it, and it holds
nothing). PostgreSQL refuses to run as root, so under root the cluster belongs
to the ``postgres`` system user the Debian package creates, and its directory
lives outside pytest's root-only temporary tree. ``fsync=off``: the server's
own durability is not what the tests check, and it makes them much faster.

Starting fails loudly (never skips) when the binaries are missing or the
server does not come up: CI must run the PostgreSQL contract suite.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg

from tests.harness import free_port, wait_for

START_SECONDS = 60


def find_bin_dir() -> Path:
    """The newest installed PostgreSQL's bin directory (Debian keeps them under /usr/lib/postgresql/N)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if not found:
        raise RuntimeError("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): run `make tools`")
    return Path(found[-1]).parent


class PostgresServer:
    def __init__(self) -> None:
        self.bin_dir = find_bin_dir()
        self.dir = Path(tempfile.mkdtemp(prefix="inbound-pg-"))
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.user = pwd.getpwnam("postgres") if os.geteuid() == 0 else None

    def _run_as(self) -> dict[str, object]:
        """Popen arguments that drop root for the ``postgres`` user."""
        if self.user is None:
            return {}
        return {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}

    def start(self) -> None:
        data = self.dir / "data"
        if self.user is not None:
            os.chown(self.dir, self.user.pw_uid, self.user.pw_gid)
        subprocess.run(
            [self.bin_dir / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8",
             "--locale=C.UTF-8"],
            check=True, capture_output=True, cwd=self.dir, **self._run_as(),  # type: ignore[call-overload]
        )  # fmt: skip
        self.port = free_port()
        log = (self.dir / "server.log").open("wb")
        self.process = subprocess.Popen(  # type: ignore[call-overload]
            [self.bin_dir / "postgres", "-D", data, "-p", str(self.port), "-h", "127.0.0.1", "-k", "",
             "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
             "-c", "max_connections=200"],
            stdout=log, stderr=subprocess.STDOUT, cwd=self.dir, **self._run_as(),
        )  # fmt: skip
        log.close()
        process = self.process

        def ready() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"PostgreSQL exited with {process.returncode}: {self.log()}")
            try:
                psycopg.connect(self.dsn("postgres"), connect_timeout=2).close()
            except psycopg.OperationalError:
                return False
            return True

        wait_for(ready, START_SECONDS, "PostgreSQL to accept connections")

    def log(self) -> str:
        path = self.dir / "server.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else "(no log)"

    def dsn(self, dbname: str) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={dbname}"

    def new_database(self) -> str:
        """A fresh, empty database; its DSN."""
        name = f"t{uuid.uuid4().hex[:16]}"
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name}")
        return self.dsn(name)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # "smart" shutdown would wait for clients; SIGTERM is PostgreSQL's "fast"
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
