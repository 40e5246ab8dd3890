"""pytest plugin: ``pytest_plugins = ["h2o_fsm.testing.plugin"]``.

Fixture ``h2o_server``: the bundled server on 127.0.0.1 (ephemeral port), started for the test and
stopped after it. Faults and config come from markers::

    @pytest.mark.h2o_faults(Fault("stream", "drop", at_token=2))
    @pytest.mark.h2o_config(token_delay=0.01)
    async def test_x(h2o_server):
        ...
        assert_nothing_leaked(h2o_server)
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..server import FaultPlan, LocalServer, ServerConfig


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "h2o_faults(*faults): faults for the h2o_server fixture")
    config.addinivalue_line("markers", "h2o_config(**kw): ServerConfig fields for the h2o_server fixture")


@pytest.fixture
def h2o_server(request: pytest.FixtureRequest) -> Iterator[LocalServer]:
    faults_marker = request.node.get_closest_marker("h2o_faults")
    config_marker = request.node.get_closest_marker("h2o_config")
    plan = FaultPlan(faults_marker.args if faults_marker else ())
    config = ServerConfig(**(config_marker.kwargs if config_marker else {}))
    with LocalServer(config, plan) as server:
        yield server
