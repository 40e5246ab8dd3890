from __future__ import annotations

from collections.abc import Iterator

import pytest

from h2o_fsm import Retries, Timeouts
from h2o_fsm.server import LocalServer, ServerConfig


# Fast but real: small waits so that fault tests stay quick.
FAST_RETRIES = Retries(attempts=3, backoff=0.01, max_wait=0.05, max_time=2.0)
FAST_TIMEOUTS = Timeouts(connect=2.0, settings=5.0, create=5.0, send=5.0, token=5.0, delete=2.0, cleanup=5.0)


@pytest.fixture
def server() -> Iterator[LocalServer]:
    """The bundled emulator on 127.0.0.1, an ephemeral port; stopped after the test."""
    with LocalServer(ServerConfig(max_tokens=8)) as srv:
        yield srv


def make_server(**config: object) -> LocalServer:
    return LocalServer(ServerConfig(**config))  # type: ignore[arg-type]
