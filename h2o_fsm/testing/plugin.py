"""pytest plugin, registered by installing h2o-fsm (``pytest11`` entry point): the ``h2o_server`` fixture.

``h2o_server`` is the bundled server on 127.0.0.1 (ephemeral port), started for the test and stopped
after it. Dialect, faults and config come from markers::

    @pytest.mark.h2o_dialect("chat-ui")
    @pytest.mark.h2o_faults(Fault("stream", "drop", at_token=2))
    @pytest.mark.h2o_config(token_delay=0.01)
    def test_x(h2o_server):
        ...
        assert_nothing_leaked(h2o_server)

Under hypothesis the fixture is one server for all examples: start each example with
``h2o_server.reset(plan)`` (forgets conversations, sessions and accounting, installs the plan), so
one example's leaks are not counted in the next. transitions' own ERROR record of each exception a
callback raised ("Exception was raised while processing the trigger") is kept out of the log (h2o-fsm
reports those itself, as the ``H2oError`` raised and its ``transition_failed`` log line).

The fixture is synchronous, so it serves sync tests and async ones alike (mark those for your async
plugin, e.g. ``@pytest.mark.asyncio``, unless it runs in auto mode). Disable with
``-p no:h2o_fsm.testing.plugin`` (the entry point is named after the module, so an older
``pytest_plugins = ["h2o_fsm.testing.plugin"]`` line in a ``conftest.py`` still works).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from .._dialects import names

if TYPE_CHECKING:  # imported by the fixture: installed without the server extra, pytest still runs
    from ..server import LocalServer

__all__ = ["h2o_server"]


class _QuietMachine(logging.Filter):
    """transitions logs, at ERROR, every exception one of h2o-fsm's callbacks raised ("Exception was
    raised while processing the trigger"); h2o-fsm turns each into the H2oError the test expects and
    logs the transition itself, so under pytest these records only bury the test's own log."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        ours = bool(args) and str(args[0]).startswith("h2o-fsm")
        return not (ours and "Exception was raised while processing the trigger" in str(record.msg))


_QUIET = _QuietMachine()
_TRANSITIONS_LOGGER = "transitions.extensions.asyncio"


def pytest_unconfigure(config: pytest.Config) -> None:
    logging.getLogger(_TRANSITIONS_LOGGER).removeFilter(_QUIET)


def pytest_configure(config: pytest.Config) -> None:
    logging.getLogger(_TRANSITIONS_LOGGER).addFilter(_QUIET)
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
