"""Tools for testing code that uses h2o-fsm (needs the ``server`` extra, and hypothesis for strategies).

* :func:`assert_nothing_leaked` — every conversation the server created was deleted, once.
* :mod:`h2o_fsm.testing.strategies` — hypothesis strategies: fault plans over the five phases and all
  fault kinds, valid and invalid message lists and generation parameters.
* :mod:`h2o_fsm.testing.plugin` — a pytest plugin with the ``h2o_server`` fixture (the bundled server on
  127.0.0.1, an ephemeral port, faults from ``@pytest.mark.h2o_faults(...)``). Enable it with
  ``pytest_plugins = ["h2o_fsm.testing.plugin"]`` in your ``conftest.py``.
"""

from __future__ import annotations

from ..server import Accounting, Fault, FaultPlan, LocalServer, ServerConfig

__all__ = ["Fault", "FaultPlan", "LocalServer", "ServerConfig", "assert_nothing_leaked", "expected_leaks"]


def expected_leaks(plan: FaultPlan) -> int:
    """Conversations a client *cannot* delete under ``plan``: creates that succeeded on the server but
    answered an error (the client never learned their id)."""
    return sum(1 for f in plan.fired if f.kind == "create_then_error")


def assert_nothing_leaked(server: LocalServer | Accounting, *, allowed: int | None = None) -> None:
    """Fail unless every created conversation was deleted exactly once.

    ``allowed`` defaults to the conversations the fault plan made undeletable by design
    (:func:`expected_leaks`)."""
    if isinstance(server, LocalServer):
        acct = server.accounting
        if allowed is None:
            allowed = server.earlier_leaks_by_design + expected_leaks(server.faults)
    else:
        acct = server
    snap = acct.snapshot()
    live = snap["live"]
    assert live == (allowed or 0), f"conversations leaked on the server: {snap}"
    assert snap["deleted_twice"] == 0, f"a conversation was deleted twice: {snap}"
