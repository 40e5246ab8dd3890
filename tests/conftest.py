"""Fixtures of the suite: servers from the session's pool (see support.py), and the transport an engine
test runs on.

A new test needing the emulator takes ``server`` (h2o, ``max_tokens=8``) or ``chatui_server`` (chat-ui,
same config), or any other (dialect, config, faults) with ``with support.emulator(...) as server:``; each
is reset for it (no sessions, conversations, faults or accounting) and shared with later tests, not
stopped, so a test must not change a pooled server's config or stop it. Tests of a server in another
process (``h2o-fsm serve``) bind port 0 and read the URL it prints: the suite runs under pytest-xdist.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings
from support import POOL, TRANSPORTS, emulator

from h2o_fsm.server import LocalServer, ServerConfig

# CI (``.ci/run`` exports HYPOTHESIS_PROFILE=ci) runs the same examples every time: one red run is a bug
# anyone can replay, never a draw of luck; elsewhere each run draws new examples (and finds new bugs).
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(scope="session", autouse=True)
def _emulator_pool() -> Iterator[None]:
    """Stops the pool's servers when the session (an xdist worker's) ends."""
    yield
    POOL.close()


@pytest.fixture
def server() -> Iterator[LocalServer]:
    """The bundled emulator (h2o dialect, ``max_tokens=8``) on 127.0.0.1, an ephemeral port; reset for the test."""
    with emulator(ServerConfig(max_tokens=8)) as srv:
        yield srv


@pytest.fixture
def chatui_server() -> Iterator[LocalServer]:
    """The same in the chat-ui dialect."""
    with emulator(ServerConfig(max_tokens=8), dialect="chat-ui") as srv:
        yield srv


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    """The client transport: a test taking it runs once per transport ("aiohttp", "httpx")."""
    return str(request.param)
