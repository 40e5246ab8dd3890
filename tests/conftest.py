"""Fixtures of the suite: the bundled server per test, and the transport an engine test runs on."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support import TRANSPORTS

from h2o_fsm.server import LocalServer, ServerConfig


@pytest.fixture
def server() -> Iterator[LocalServer]:
    """The bundled emulator on 127.0.0.1, an ephemeral port; stopped after the test."""
    with LocalServer(ServerConfig(max_tokens=8)) as srv:
        yield srv


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    """The client transport: a test taking it runs once per transport ("aiohttp", "httpx")."""
    return str(request.param)
