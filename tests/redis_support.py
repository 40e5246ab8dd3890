"""A real Redis server for the journal tests: the distribution's ``redis-server`` on 127.0.0.1, an
ephemeral port, no persistence, in a temporary directory; stopped after the session.

Where ``redis-server`` (or redis-py) is missing the tests that need it are skipped, saying how to
run them; with ``H2O_FSM_REQUIRE_SERVICES=1`` (``.ci/run`` sets it) they fail instead.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator

import pytest

__all__ = ["RedisServer", "redis_server", "require_services", "unique_namespace"]

HOW = ("install the distribution's redis-server (apt-get install redis-server) and redis-py "
       "(pip install -e '.[test]'), or run .ci/run")


def require_services() -> bool:
    return os.environ.get("H2O_FSM_REQUIRE_SERVICES") == "1"


def unavailable(reason: str, how: str = HOW) -> None:
    """Skip (a user's machine) or fail (CI, which must run these tests) with ``reason``."""
    if require_services():
        pytest.fail(f"{reason}; H2O_FSM_REQUIRE_SERVICES=1 forbids skipping", pytrace=False)
    pytest.skip(f"{reason}: {how}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server process; :attr:`url` is its ``redis://127.0.0.1:PORT/0``."""

    def __init__(self, binary: str) -> None:
        self.dir = tempfile.mkdtemp(prefix="h2o-fsm-redis-")
        for _ in range(3):  # a port taken between the probe and the bind: another one
            self.port = _free_port()
            self.process = subprocess.Popen(
                [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", self.dir, "--protected-mode", "yes"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.process.poll() is None:
                if _ping(self.port):
                    self.url = f"redis://127.0.0.1:{self.port}/0"
                    return
                time.sleep(0.05)
            self.stop()
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def start_redis() -> RedisServer:
    """A new server, or skip/fail saying what is missing."""
    try:
        import redis  # noqa: F401
    except ImportError:
        unavailable("redis-py is not installed")
    binary = shutil.which("redis-server")
    if binary is None:
        unavailable("redis-server is not installed")
        raise AssertionError("unreachable")
    return RedisServer(binary)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """The session's Redis server (tests keep apart by namespace: :func:`unique_namespace`)."""
    server = start_redis()
    try:
        yield server
    finally:
        server.close()


def unique_namespace() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"
