"""pytest plugin, registered by installing h2o-fsm (``pytest11`` entry point): the ``h2o_server`` fixture.

``h2o_server`` is the bundled server on 127.0.0.1 (ephemeral port), started for the test and stopped
after it. Dialect, faults and config come from markers::

    @pytest.mark.h2o_dialect("chat-ui")
    @pytest.mark.h2o_faults(Fault("stream", "drop", at_token=2))
    @pytest.mark.h2o_config(token_delay=0.01)
    def test_x(h2o_server):
        ...
        assert_nothing_leaked(h2o_server)

The fixture is synchronous, so it serves sync tests and async ones alike (mark those for your async
plugin, e.g. ``@pytest.mark.asyncio``, unless it runs in auto mode). Disable with
``-p no:h2o_fsm.testing.plugin`` (the entry point is named after the module, so an older
``pytest_plugins = ["h2o_fsm.testing.plugin"]`` line in a ``conftest.py`` still works).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from .._dialects import names

if TYPE_CHECKING:  # imported by the fixture: installed without the server extra, pytest still runs
    from ..server import LocalServer

__all__ = ["h2o_server"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "h2o_faults(*faults): faults for the h2o_server fixture")
    config.addinivalue_line("markers", "h2o_config(**kw): ServerConfig fields for the h2o_server fixture")
    config.addinivalue_line("markers", f"h2o_dialect(name): the h2o_server fixture's dialect, one of {names()}")


@pytest.fixture
def h2o_server(request: pytest.FixtureRequest) -> Iterator[LocalServer]:
    """The bundled emulator on 127.0.0.1 (an ephemeral port) for one test."""
    from ..server import FaultPlan, LocalServer, ServerConfig  # needs the server extra

    faults_marker = request.node.get_closest_marker("h2o_faults")
    config_marker = request.node.get_closest_marker("h2o_config")
    dialect_marker = request.node.get_closest_marker("h2o_dialect")
    plan = FaultPlan(faults_marker.args if faults_marker else ())
    config = ServerConfig(**(config_marker.kwargs if config_marker else {}))
    dialect = dialect_marker.args[0] if dialect_marker and dialect_marker.args else "h2o"
    if dialect not in names():
        raise pytest.UsageError(f"@pytest.mark.h2o_dialect: unknown dialect {dialect!r}; expected one of {names()}")
    with LocalServer(config, plan, dialect=dialect) as server:
        yield server
