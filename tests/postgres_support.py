"""A real PostgreSQL server for the journal tests: the distribution's ``initdb``/``postgres`` in a
temporary directory, 127.0.0.1 on an ephemeral port, trust authentication, fsync off; stopped after the
session. Run as root, the server runs as the ``postgres`` user (PostgreSQL refuses root).

Missing binaries or asyncpg: skipped, saying how to run them; failed under ``H2O_FSM_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest
from redis_support import unavailable

__all__ = ["PostgresServer", "postgres_server"]

HOW = "apt-get install postgresql (initdb and postgres) and pip install -e '.[test]' (asyncpg), or run .ci/run"


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    def __init__(self, initdb: str, postgres: str) -> None:
        self.dir = tempfile.mkdtemp(prefix="h2o-fsm-pg-")
        prefix: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            prefix = ["runuser", "-u", "postgres", "--"]
        data = os.path.join(self.dir, "data")
        subprocess.run([*prefix, initdb, "-D", data, "-A", "trust", "-U", "h2o", "--no-sync", "-E", "UTF8"],
                       check=True, capture_output=True, timeout=120)
        for _ in range(3):
            self.port = _free_port()
            self.process = subprocess.Popen(
                [*prefix, postgres, "-D", data, "-p", str(self.port), "-h", "127.0.0.1", "-k", self.dir,
                 "-c", "fsync=off", "-c", "full_page_writes=off", "-c", "synchronous_commit=off"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and self.process.poll() is None:
                if os.path.exists(os.path.join(self.dir, f".s.PGSQL.{self.port}")) and self._accepts():
                    self.url = f"postgresql://h2o@127.0.0.1:{self.port}/postgres"
                    return
                time.sleep(0.1)
            self.stop()
        raise RuntimeError("postgres did not start")

    def _accepts(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # runuser passes it on: a "smart" shutdown
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def start_postgres() -> PostgresServer:
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        unavailable("asyncpg is not installed", HOW)
    initdb, postgres = _binary("initdb"), _binary("postgres")
    if initdb is None or postgres is None:
        unavailable("PostgreSQL's initdb/postgres are not installed", HOW)
        raise AssertionError("unreachable")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            unavailable("running as root and there is no `postgres` user to run the server as", HOW)
    return PostgresServer(initdb, postgres)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = start_postgres()
    try:
        yield server
    finally:
        server.close()
