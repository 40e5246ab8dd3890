"""The bundled chat-ui compatible server (a protocol emulator of both dialects; needs the ``server`` extra).

``LocalServer`` runs it on loopback in a background thread (``dialect="h2o"`` or ``"chat-ui"``);
``create_app`` gives the Starlette app; ``Fault``/``FaultPlan`` inject failures; ``Accounting`` counts
what was created, deleted, stopped and leaked; ``DialectName`` names a built-in dialect.

``Dialect`` is a deprecated alias of ``DialectName`` (kept for code that imports it; the engine's
dialect protocol is ``h2o_fsm._dialects.Dialect``, a different thing): use ``DialectName``.
"""

from __future__ import annotations

try:
    import starlette  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as exc:  # pragma: no cover
    raise ImportError("h2o_fsm.server needs the 'server' extra: pip install 'h2o-fsm[server]'") from exc

from ._app import Accounting, MessageRecord, RequestRecord, ServerConfig, TurnRecord, create_app, generate
from ._faults import DIALECTS, PHASES, DialectName, Fault, FaultKind, FaultPhase, FaultPlan, phases_of
from ._runner import LocalServer, bind_socket, serve_forever

Dialect = DialectName
"""Deprecated alias of :data:`DialectName` (its old name here); use ``DialectName``."""

__all__ = [
    "DIALECTS",
    "PHASES",
    "Accounting",
    "Dialect",
    "DialectName",
    "Fault",
    "FaultKind",
    "FaultPhase",
    "FaultPlan",
    "LocalServer",
    "MessageRecord",
    "RequestRecord",
    "ServerConfig",
    "TurnRecord",
    "bind_socket",
    "create_app",
    "generate",
    "phases_of",
    "serve_forever",
]
