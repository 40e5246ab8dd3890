"""Tools for testing code that uses h2o-fsm, in either dialect (needs the ``server`` extra; hypothesis for strategies).

* :func:`assert_nothing_leaked` — every conversation the server created was deleted, once, except
  those a fault plan made undeletable by design (listed precisely in its docstring).
* :mod:`h2o_fsm.testing.strategies` — hypothesis strategies: fault plans over a dialect's phases and
  all fault kinds (or only those a client recovers from), valid and invalid message lists and
  generation parameters.
* :mod:`h2o_fsm.testing.plugin` — a pytest plugin, registered by installing h2o-fsm (a ``pytest11``
  entry point; nothing to add to ``conftest.py``), with the ``h2o_server`` fixture: the bundled
  server on 127.0.0.1, an ephemeral port; dialect, faults and config from markers.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported when used: without the server extra, only using them fails (not pytest)
    from ..server import Accounting, Fault, FaultPlan, LocalServer, ServerConfig

__all__ = ["Fault", "FaultPlan", "LocalServer", "ServerConfig", "assert_nothing_leaked"]


def assert_nothing_leaked(
    server: LocalServer | Accounting, *, reported: Iterable[str] | None = None, allowed: int | None = None
) -> None:
    """Fail unless every conversation the server created was deleted, and none was deleted twice.

    A conversation still live on the server is excused — and only then — when:

    * ``create_then_error``: its create succeeded but was answered with an injected error, so the
      client never learned its id;
    * ``delete_failed``: the last DELETE the server received for it was answered by an injected fault
      (the client tried and the server refused, e.g. more DELETE faults than the client's retries, or
      a status that is not retried). A correct client reports these (``Conversation.cleanup_error``,
      ``H2oError.cleanup_error``). Pass their ids as ``reported`` to check that too: then every
      excused-by-delete-fault conversation must be among them (a silent give-up fails);
    * ``orphaned``: its session was forgotten by ``LocalServer.forget_sessions()`` (nobody can reach it).

    Any other live conversation is a leak: the client never tried to delete it.
    ``allowed`` (an exact number of live conversations) is the older, coarser form; it skips the
    rules above.
    """
    from ..server import LocalServer

    acct = server.accounting if isinstance(server, LocalServer) else server
    snap = acct.snapshot()
    assert snap["deleted_twice"] == 0, f"a conversation was deleted twice: {snap}"
    live = acct.live_ids
    if allowed is not None:
        assert len(live) == allowed, f"expected {allowed} live conversation(s) on the server: {snap}"
        return
    excused = acct.excused_ids()
    unexplained = live - excused["create_then_error"] - excused["delete_failed"] - excused["orphaned"]
    assert not unexplained, f"conversations leaked on the server: {sorted(unexplained)}; {snap}"
    if reported is not None:
        silent = excused["delete_failed"] - set(reported)
        assert not silent, f"DELETE failed for good but the client did not report it: {sorted(silent)}"


def __getattr__(name: str) -> Any:
    if name in ("Fault", "FaultPlan", "LocalServer", "ServerConfig"):
        from .. import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
